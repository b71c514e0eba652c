import t from 'tap'
import { startUpstream } from '../helpers/upstream.js'
import { startGateway } from '../helpers/gateway.js'

// CORS as a browser sees it: preflights answered by the gateway for trusted
// origins only, actual answers (including errors) readable by those origins,
// per-route overrides, and the upstream's own CORS headers never in charge.

const APP = 'https://app.example.com'
const cors = { origins: [APP], credentials: true }

function preflight (url: string, origin: string, method = 'GET', headers = 'authorization'): { method: 'OPTIONS', url: string, headers: Record<string, string> } {
  return { method: 'OPTIONS', url, headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': headers } }
}

t.test('preflight from a trusted origin: 204 from the gateway, before authentication and the upstream', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { cors, routes: [{ prefix: '/api', upstream: up.url, methods: ['GET', 'POST'] }] })
  const res = await app.inject(preflight('/api/things', APP, 'POST', 'authorization, content-type'))
  t.equal(res.statusCode, 204)
  t.equal(res.headers['access-control-allow-origin'], APP)
  t.equal(res.headers['access-control-allow-credentials'], 'true')
  t.equal(res.headers['access-control-allow-methods'], 'GET, POST')
  t.equal(res.headers['access-control-allow-headers'], 'Authorization, Content-Type')
  t.equal(res.headers['access-control-max-age'], '600')
  t.match(res.headers.vary, /Origin/)
  t.equal(up.seen.length, 0, 'the upstream never sees a preflight')
})

t.test('preflights are not counted against the login budget or a rate limit', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, {
    cors,
    auth: { loginRateLimit: { max: 1, addressMax: 1 } },
    routes: [{ prefix: '/api', upstream: up.url, rateLimit: { max: 1, timeWindow: '1m' } }]
  })
  for (let i = 0; i < 5; i++) {
    t.equal((await app.inject(preflight('/auth/login', APP, 'POST', 'content-type'))).statusCode, 204)
    t.equal((await app.inject(preflight('/api/x', APP))).statusCode, 204)
  }
  const ok = await app.inject({ method: 'POST', url: '/auth/login', headers: { origin: APP }, payload: { username: 'alice', password: 'alice-test-password', transport: 'body' } })
  t.equal(ok.statusCode, 200, 'a real login still has its budget')
  t.equal(ok.headers['access-control-allow-origin'], APP)
  const first = await app.inject({ url: '/api/x', headers: { origin: APP, authorization: `Bearer ${(ok.json() as { access_token: string }).access_token}` } })
  t.equal(first.statusCode, 200, 'the route budget was not spent by preflights')
})

t.test('unlisted, null, other-scheme and other-port origins get no CORS headers and no preflight answer', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { cors, routes: [{ prefix: '/api', upstream: up.url, auth: 'none' }] })
  for (const origin of ['https://evil.test', 'null', 'http://app.example.com', 'https://app.example.com:8443', 'https://app.example.com.evil.test']) {
    const pre = await app.inject(preflight('/api/x', origin))
    t.equal(pre.headers['access-control-allow-origin'], undefined, origin)
    t.equal(pre.headers['access-control-allow-credentials'], undefined, origin)
    t.equal(pre.headers['access-control-allow-methods'], undefined, origin)
    t.not(pre.statusCode, 204, `${origin}: the preflight is not approved`)
    const res = await app.inject({ url: '/api/x', headers: { origin } })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['access-control-allow-origin'], undefined, origin)
    t.equal(res.headers['access-control-expose-headers'], undefined, origin)
  }
})

t.test('actual answers carry the headers, also 401, 404 and 429, and expose the challenge, request id and rate-limit headers', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { cors, routes: [{ prefix: '/api', upstream: up.url, rateLimit: { max: 1, timeWindow: '1m' } }] })
  const unauthorized = await app.inject({ url: '/api/x', headers: { origin: APP } })
  t.equal(unauthorized.statusCode, 401)
  t.equal(unauthorized.headers['access-control-allow-origin'], APP)
  t.equal(unauthorized.headers['access-control-allow-credentials'], 'true')
  t.match(unauthorized.headers.vary, /Origin/)
  const exposed = String(unauthorized.headers['access-control-expose-headers']).toLowerCase()
  for (const name of ['www-authenticate', 'x-request-id', 'x-ratelimit-limit', 'x-ratelimit-remaining', 'retry-after']) t.match(exposed, name)
  t.match(unauthorized.json(), { statusCode: 401, code: 'TG_TOKEN_MISSING' })
  const limited = await app.inject({ url: '/api/x', headers: { origin: APP } })
  t.equal(limited.statusCode, 429)
  t.equal(limited.headers['access-control-allow-origin'], APP)
  const missing = await app.inject({ url: '/nowhere', headers: { origin: APP } })
  t.equal(missing.statusCode, 404)
  t.equal(missing.headers['access-control-allow-origin'], APP)
  t.equal(up.seen.length, 0)
})

t.test('403 for a missing scope is readable by a trusted page: our JSON body and the CORS headers', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { cors, routes: [{ prefix: '/api/orders', upstream: up.url, scopes: ['orders:write'] }] })
  // bob holds orders:read only.
  const bob = await app.inject({ method: 'POST', url: '/auth/login', headers: { origin: APP }, payload: { username: 'bob', password: 'bob-test-password', transport: 'body' } })
  t.equal(bob.statusCode, 200)
  const res = await app.inject({ method: 'POST', url: '/api/orders', headers: { origin: APP, authorization: `Bearer ${(bob.json() as { access_token: string }).access_token}` } })
  t.equal(res.statusCode, 403)
  t.match(res.headers['content-type'], /^application\/json/)
  t.match(res.json(), { statusCode: 403, code: 'TG_INSUFFICIENT_SCOPE', error: 'insufficient_scope', message: String })
  t.match(res.headers['www-authenticate'], /insufficient_scope/)
  t.equal(res.headers['access-control-allow-origin'], APP)
  t.equal(res.headers['access-control-allow-credentials'], 'true')
  t.match(res.headers.vary, /Origin/)
  t.match(String(res.headers['access-control-expose-headers']).toLowerCase(), 'www-authenticate', 'the page can read why')
  t.equal(up.seen.length, 0, 'the upstream never saw it')
})

t.test('credentials off: no Allow-Credentials header', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { cors: { origins: [APP] }, routes: [{ prefix: '/api', upstream: up.url, auth: 'none' }] })
  const res = await app.inject({ url: '/api/x', headers: { origin: APP } })
  t.equal(res.headers['access-control-allow-origin'], APP)
  t.equal(res.headers['access-control-allow-credentials'], undefined)
})

t.test('per route: cors: false turns it off there, an override changes origins and credentials', async (t) => {
  const up = await startUpstream(t)
  const other = 'https://admin.example.com'
  const { app } = await startGateway(t, {
    cors,
    routes: [
      { prefix: '/open', upstream: up.url, auth: 'none' },
      { prefix: '/closed', upstream: up.url, auth: 'none', cors: false },
      { prefix: '/admin-ui', upstream: up.url, auth: 'none', cors: { origins: [other], credentials: false } }
    ]
  })
  t.equal((await app.inject({ url: '/open/x', headers: { origin: APP } })).headers['access-control-allow-origin'], APP)
  const closed = await app.inject({ url: '/closed/x', headers: { origin: APP } })
  t.equal(closed.headers['access-control-allow-origin'], undefined)
  t.not((await app.inject(preflight('/closed/x', APP))).statusCode, 204)
  const admin = await app.inject({ url: '/admin-ui/x', headers: { origin: other } })
  t.equal(admin.headers['access-control-allow-origin'], other)
  t.equal(admin.headers['access-control-allow-credentials'], undefined)
  t.equal((await app.inject({ url: '/admin-ui/x', headers: { origin: APP } })).headers['access-control-allow-origin'], undefined, 'the override replaces the origins')
})

t.test('wildcard patterns match whole labels only', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { cors: { origins: ['https://*.example.com'] }, routes: [{ prefix: '/api', upstream: up.url, auth: 'none' }] })
  const allowed = async (origin: string): Promise<boolean> => (await app.inject({ url: '/api/x', headers: { origin } })).headers['access-control-allow-origin'] === origin
  t.ok(await allowed('https://app.example.com'))
  t.ok(await allowed('https://a.b.example.com'))
  t.notOk(await allowed('https://example.com'))
  t.notOk(await allowed('https://evilexample.com'))
  t.notOk(await allowed('https://app.example.com.evil.test'))
  t.notOk(await allowed('http://app.example.com'))
  t.notOk(await allowed('https://app.example.com:444'))
})

t.test('the upstream\'s own CORS headers never override the gateway\'s', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'access-control-allow-origin': '*', 'access-control-allow-credentials': 'true', 'access-control-expose-headers': 'x-secret', vary: 'Accept-Encoding' })
    res.end('ok')
  })
  const { app } = await startGateway(t, { cors: { origins: [APP] }, routes: [{ prefix: '/api', upstream: up.url, auth: 'none' }] })
  const res = await app.inject({ url: '/api/x', headers: { origin: APP } })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['access-control-allow-origin'], APP)
  t.equal(res.headers['access-control-allow-credentials'], undefined)
  t.notMatch(String(res.headers['access-control-expose-headers']), 'x-secret')
  t.match(res.headers.vary, /Origin/)
  t.match(res.headers.vary, /Accept-Encoding/)
  const stranger = await app.inject({ url: '/api/x', headers: { origin: 'https://evil.test' } })
  t.equal(stranger.headers['access-control-allow-origin'], undefined, 'not even the upstream\'s *')
})

t.test('cors unset: no CORS headers anywhere, the upstream\'s pass through', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'access-control-allow-origin': 'https://up.example' })
    res.end('ok')
  })
  const { app } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url, auth: 'none' }] })
  const res = await app.inject({ url: '/api/x', headers: { origin: APP } })
  t.equal(res.headers['access-control-allow-origin'], 'https://up.example')
  const unauthorized = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: APP } })
  t.equal(unauthorized.headers['access-control-allow-origin'], undefined)
})

t.test('cors.origins count as trusted for the refresh cookie\'s CSRF check; others stay refused', async (t) => {
  const up = await startUpstream(t)
  const routeOnly = 'https://admin.example.com'
  const { app } = await startGateway(t, { cors, routes: [{ prefix: '/admin-ui', upstream: up.url, auth: 'none', cors: { origins: [routeOnly] } }] })
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { origin: APP }, payload: { username: 'alice', password: 'alice-test-password' } })
  t.equal(res.statusCode, 200)
  const cookie = String(res.headers['set-cookie']).split(';')[0]
  t.match(cookie, /^tg_refresh=/)
  const stranger = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: 'https://evil.test', cookie } })
  t.equal(stranger.statusCode, 403)
  t.equal(stranger.headers['access-control-allow-origin'], undefined)
  const fromRoute = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: routeOnly, cookie } })
  t.equal(fromRoute.statusCode, 403, 'an origin listed only in a route\'s cors is not trusted with the cookie')
  t.match(fromRoute.json(), { code: 'TG_CSRF' })
  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: APP, cookie } })
  t.equal(refreshed.statusCode, 200, 'the trusted app refreshes, and the foreign attempt did not end the session')
  t.equal(refreshed.headers['access-control-allow-origin'], APP)
})
