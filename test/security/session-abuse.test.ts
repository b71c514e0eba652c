import t from 'tap'
import { PASSWORDS, startGateway } from '../helpers/gateway.js'

// Abuse of the session endpoints by a client or a foreign page.

function refreshCookie (setCookie: string | string[] | undefined): string {
  const line = (Array.isArray(setCookie) ? setCookie : [String(setCookie)]).find((c) => c.startsWith('tg_refresh='))
  return line?.split(';')[0] ?? ''
}

t.test('session fixation: a refresh cookie sent to /auth/login is ignored, login makes a new session', async (t) => {
  const { app } = await startGateway(t, { auth: { loginRateLimit: { max: 1000, timeWindow: '1m' } } })
  const first = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob } })
  const planted = refreshCookie(first.headers['set-cookie'])
  const second = await app.inject({ method: 'POST', url: '/auth/login', headers: { cookie: planted }, payload: { username: 'alice', password: PASSWORDS.alice } })
  const issued = refreshCookie(second.headers['set-cookie'])
  t.not(issued, planted, 'a fresh refresh token')
  const sid = (tok: string): string => JSON.parse(Buffer.from(tok.split('.')[1], 'base64url').toString()).sid as string
  t.not(sid(second.json().access_token), sid(first.json().access_token), 'a fresh session')
})

t.test('duplicate refresh cookies cannot make the gateway pick the attacker\'s', async (t) => {
  const { app } = await startGateway(t, { auth: { loginRateLimit: { max: 1000, timeWindow: '1m' } } })
  const victim = refreshCookie((await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob } })).headers['set-cookie'])
  const res = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: `tg_refresh=${'A'.repeat(43)}; ${victim}`, origin: 'http://localhost' } })
  t.equal(res.statusCode, 401, 'the first cookie wins and it is not a valid token')
  const still = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: victim, origin: 'http://localhost' } })
  t.equal(still.statusCode, 200, 'the victim\'s token was not burned')
})

t.test('a refresh token as a bearer token or in the query string is not a refresh', async (t) => {
  const { app } = await startGateway(t, { auth: { loginRateLimit: { max: 1000, timeWindow: '1m' } } })
  const { refresh_token: rt } = (await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob, transport: 'body' } })).json() as { refresh_token: string }
  t.equal((await app.inject({ method: 'POST', url: '/auth/refresh', headers: { authorization: `Bearer ${rt}` } })).statusCode, 401)
  t.equal((await app.inject({ method: 'POST', url: `/auth/refresh?refresh_token=${rt}` })).statusCode, 400)
  t.equal((await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: rt } })).statusCode, 200, 'still usable the right way')
})

t.test('credentialed CORS is never granted to a foreign origin', async (t) => {
  const { app } = await startGateway(t)
  const preflight = await app.inject({ method: 'OPTIONS', url: '/auth/refresh', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } })
  t.equal(preflight.headers['access-control-allow-origin'], undefined)
  t.equal(preflight.headers['access-control-allow-credentials'], undefined)
})

t.test('hashing cost under concurrent logins does not block the event loop', async (t) => {
  const { app } = await startGateway(t, { auth: { loginRateLimit: { max: 1000, timeWindow: '1m' } } })
  const order: string[] = []
  const logins = Array.from({ length: 8 }, () => app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'wrong-password-xyz' } }).then(() => { order.push('login') }))
  const health = app.inject({ url: '/healthz' }).then((res) => { order.push('health'); return res.statusCode })
  t.equal(await health, 200)
  await Promise.all(logins)
  t.equal(order[0], 'health', 'a cheap request is answered while argon2 runs off the event loop')
})
