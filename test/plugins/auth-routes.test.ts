import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { login, PASSWORDS } from '../helpers/gateway.js'
import {
  callApi, clearsCookie, decodeJwt, eachStore, refreshWithBody, setCookies, startLifecycle, startLifecycleInstances, storeConfig
} from '../helpers/lifecycle.js'
import { waitFor } from '../helpers/wait-for.js'

// POST /auth/login, /auth/refresh (transport and CSRF), /auth/logout, over
// HTTP, against the in-process store and Redis with the same test bodies.

// light-my-request sends `Host: localhost:80`: the gateway's own origin as it sees it.
const OWN_ORIGIN = 'http://localhost:80'
const COOKIE = 'tg_refresh'

function cookieLine (lines: string[], name: string): string | undefined {
  return lines.find((l) => l.startsWith(`${name}=`))
}

eachStore(t, 'login: 200 with a Bearer access token; refresh token as an HttpOnly SameSite=Strict cookie on /auth', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice } })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.same(Object.keys(body).sort(), ['access_token', 'expires_in', 'token_type'], 'no refresh_token in the body')
  t.equal(body.token_type, 'Bearer')
  t.equal(body.expires_in, 900)
  t.equal(res.headers['cache-control'], 'no-store')
  const line = cookieLine(setCookies(res), COOKIE)
  t.ok(line, 'the refresh cookie is set')
  t.match(line, /; HttpOnly/i)
  t.match(line, /; SameSite=Strict/i)
  t.match(line, /; Path=\/auth(;|$)/)
  t.notMatch(line, /; Domain=/i, 'host-only')
  t.notMatch(line, /; Secure/i, 'auth.cookie.secure: false in the test config')
  t.match(line, /^tg_refresh=[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43};/, 'its session id and an opaque 256-bit secret, not a JWT')
  const apiRes = await callApi(app, body.access_token)
  t.equal(apiRes.statusCode, 200, 'the access token opens a protected route')
})

t.test('login with auth.cookie.secure: the __Secure- cookie, marked Secure', async (t) => {
  const { app } = await startLifecycle(t, { auth: { cookie: { secure: true } } })
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice } })
  t.equal(res.statusCode, 200)
  const line = cookieLine(setCookies(res), `__Secure-${COOKIE}`)
  t.ok(line, '__Secure- prefix')
  t.match(line, /; Secure/i)
  t.match(line, /; HttpOnly/i)
  t.match(line, /; SameSite=Strict/i)
  t.match(line, /; Path=\/auth(;|$)/)
  t.equal(cookieLine(setCookies(res), COOKIE), undefined, 'no unprefixed cookie')

  // and that cookie is what refresh reads
  const value = /^[^=]+=([^;]+)/.exec(line ?? '')?.[1] ?? ''
  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: OWN_ORIGIN }, cookies: { [`__Secure-${COOKIE}`]: value } })
  t.equal(refreshed.statusCode, 200)
  t.ok(cookieLine(setCookies(refreshed), `__Secure-${COOKIE}`), 'rotated cookie, same name')
})

eachStore(t, 'login with transport body: refresh_token in the body and no Set-Cookie', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob, transport: 'body' } })
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.match(body, { token_type: 'Bearer', expires_in: 900, access_token: String, refresh_token: /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/ })
  t.same(setCookies(res), [], 'no cookie')
})

t.test('access token claims (RFC 9068)', async (t) => {
  const { app } = await startLifecycle(t)
  const { access_token: token } = await login(app, 'alice')
  const { header, payload } = decodeJwt(token)
  t.equal(header.typ, 'at+jwt')
  t.equal(header.alg, 'ES256')
  t.equal(header.kid, 'test-1')
  t.match(payload, {
    iss: 'tokengate',
    aud: 'api',
    sub: 'u-1',
    sid: String,
    jti: String,
    scope: 'orders:read orders:write',
    roles: ['admin'],
    username: 'alice',
    email: 'alice@example.com',
    iat: Number,
    exp: Number
  })
  t.equal((payload.exp as number) - (payload.iat as number), 900, 'accessTtl 15m')

  const sessions = await app.inject({ url: '/auth/sessions', headers: { authorization: `Bearer ${token}` } })
  t.match(sessions.json().sessions, [{ id: payload.sid, current: true }], 'sid names the session just created')
  const again = decodeJwt((await login(app, 'alice')).access_token).payload
  t.not(again.jti, payload.jti, 'a fresh jti per token')
  t.not(again.sid, payload.sid, 'a fresh session per login')
})

eachStore(t, 'wrong password and unknown user: the same 401 and body', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const wrong = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'not-her-password' } })
  const unknown = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'mallory', password: 'not-her-password' } })
  t.equal(wrong.statusCode, 401)
  t.equal(unknown.statusCode, 401)
  t.equal(wrong.body, unknown.body)
  t.equal(wrong.headers['www-authenticate'], unknown.headers['www-authenticate'])
  t.match(wrong.json(), { statusCode: 401, code: 'TG_LOGIN_FAILED' })
  t.same(setCookies(wrong), [])
})

t.test('malformed login bodies: 400 JSON, nothing issued', async (t) => {
  const { app } = await startLifecycle(t)
  const bodies: Array<[string, string]> = [
    ['extra property', JSON.stringify({ username: 'alice', password: PASSWORDS.alice, admin: true })],
    ['__proto__', `{"username":"alice","password":"${PASSWORDS.alice}","__proto__":{"admin":true}}`],
    ['constructor.prototype', `{"username":"alice","password":"${PASSWORDS.alice}","constructor":{"prototype":{"admin":true}}}`],
    ['array', JSON.stringify([{ username: 'alice', password: PASSWORDS.alice }])],
    ['array username', JSON.stringify({ username: ['alice'], password: PASSWORDS.alice })],
    ['unknown transport', JSON.stringify({ username: 'alice', password: PASSWORDS.alice, transport: 'query' })],
    ['not JSON', '{"username":'],
    ['empty object', '{}']
  ]
  for (const [what, payload] of bodies) {
    const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/json' }, payload })
    t.equal(res.statusCode, 400, what)
    t.match(res.headers['content-type'], /^application\/json/, what)
    t.match(res.json(), { statusCode: 400, code: /^TG_(BAD_REQUEST|VALIDATION)$/ }, what)
    t.notMatch(res.body, /access_token/, what)
    t.same(setCookies(res), [], what)
  }
})

t.test('credentials in the query string: 400, nothing issued', async (t) => {
  const { app } = await startLifecycle(t)
  const login = await app.inject({ method: 'POST', url: `/auth/login?username=alice&password=${PASSWORDS.alice}`, payload: { username: 'alice', password: PASSWORDS.alice } })
  t.equal(login.statusCode, 400)
  t.match(login.json(), { statusCode: 400 })
  t.same(setCookies(login), [])

  const { refresh_token: refreshToken } = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice, transport: 'body' } }).then((r) => r.json())
  const viaQuery = await app.inject({ method: 'POST', url: `/auth/refresh?refresh_token=${refreshToken}` })
  t.equal(viaQuery.statusCode, 400)
  t.equal((await refreshWithBody(app, refreshToken)).statusCode, 200, 'the refused request burned nothing')
})

t.test('a refresh token as a bearer header is not a refresh', async (t) => {
  const { app } = await startLifecycle(t)
  const { refresh_token: refreshToken } = await login(app, 'alice')
  const res = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { authorization: `Bearer ${refreshToken}` } })
  t.equal(res.statusCode, 401)
  t.match(res.json(), { code: 'TG_INVALID_GRANT', error: 'invalid_grant' })
  t.equal((await refreshWithBody(app, refreshToken ?? '')).statusCode, 200, 'and it burned nothing')
})

// ---- cookie-borne refresh and logout: CSRF ----

async function cookieLogin (app: Awaited<ReturnType<typeof startLifecycle>>['app']): Promise<{ access: string, refresh: string }> {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice } })
  const cookie = res.cookies.find((c) => c.name === COOKIE)
  if (res.statusCode !== 200 || cookie === undefined) throw new Error(`cookie login failed: ${res.statusCode}`)
  return { access: res.json().access_token, refresh: cookie.value }
}

eachStore(t, 'cookie refresh: foreign Origin, cross-site fetch or no Origin → 403 TG_CSRF, and nothing is burned', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const { refresh } = await cookieLogin(app)
  const refused: Array<[string, Record<string, string>]> = [
    ['foreign origin', { origin: 'https://evil.example' }],
    ['look-alike origin', { origin: 'http://localhost:80.evil.example' }],
    ['null origin', { origin: 'null' }],
    ['cross-site fetch with our origin', { origin: OWN_ORIGIN, 'sec-fetch-site': 'cross-site' }],
    ['no origin', {}]
  ]
  for (const [what, headers] of refused) {
    for (const url of ['/auth/refresh', '/auth/logout']) {
      const res = await app.inject({ method: 'POST', url, headers, cookies: { [COOKIE]: refresh } })
      t.equal(res.statusCode, 403, `${url}: ${what}`)
      t.match(res.json(), { statusCode: 403, code: 'TG_CSRF' }, `${url}: ${what}`)
      t.equal(res.headers['access-control-allow-origin'], undefined, 'no CORS grant')
      t.equal(res.headers['access-control-allow-credentials'], undefined, 'no credentialed CORS')
      t.same(setCookies(res), [], `${url}: ${what}: the cookie is left alone`)
    }
  }
  const ok = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: OWN_ORIGIN, 'sec-fetch-site': 'same-origin' }, cookies: { [COOKIE]: refresh } })
  t.equal(ok.statusCode, 200, 'the same token still rotates from our own origin')
  const next = ok.cookies.find((c) => c.name === COOKIE)
  t.ok(next, 'a new cookie')
  t.not(next?.value, refresh, 'rotated')
  t.notOk('refresh_token' in ok.json(), 'cookie transport stays cookie transport')
})

eachStore(t, 'cookie refresh from an origin in auth.allowedOrigins works', async (t, store) => {
  const { app } = await startLifecycle(t, { ...store, auth: { allowedOrigins: ['https://app.example.com'] } })
  const { refresh } = await cookieLogin(app)
  const res = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: 'https://app.example.com', 'sec-fetch-site': 'same-site' }, cookies: { [COOKIE]: refresh } })
  t.equal(res.statusCode, 200)
  const other = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: 'https://other.example.com' }, cookies: { [COOKIE]: res.cookies.find((c) => c.name === COOKIE)?.value ?? '' } })
  t.equal(other.statusCode, 403, 'only the listed origin')
})

eachStore(t, 'body-transport refresh needs no Origin', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const { refresh_token: refreshToken } = await login(app, 'bob')
  const res = await refreshWithBody(app, refreshToken ?? '')
  t.equal(res.statusCode, 200)
  t.match(res.json(), { token_type: 'Bearer', refresh_token: /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/ })
  t.same(setCookies(res), [], 'body transport sets no cookie')
})

eachStore(t, 'garbage or unknown refresh cookie: 401 invalid_grant and the cookie is cleared', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  for (const value of ['garbage', 'x'.repeat(43), 'A'.repeat(200)]) {
    const res = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: OWN_ORIGIN }, cookies: { [COOKIE]: value } })
    t.equal(res.statusCode, 401, value.slice(0, 10))
    t.match(res.json(), { statusCode: 401, code: 'TG_INVALID_GRANT', error: 'invalid_grant' })
    const line = cookieLine(setCookies(res), COOKIE)
    t.ok(line !== undefined && clearsCookie(line), `cleared: ${String(line)}`)
    t.match(line, /; Path=\/auth(;|$)/, 'cleared on the path it was set on')
  }
  const none = await app.inject({ method: 'POST', url: '/auth/refresh' })
  t.equal(none.statusCode, 401)
  t.match(none.json(), { code: 'TG_INVALID_GRANT' })
})

// ---- logout ----

eachStore(t, 'cookie logout ends the session at once: refresh dead, access token rejected, cookie cleared', async (t, store) => {
  const { app, up } = await startLifecycle(t, store)
  const { access, refresh } = await cookieLogin(app)
  t.equal((await callApi(app, access)).statusCode, 200)
  const seenBefore = up.seen.length

  const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: { origin: OWN_ORIGIN, authorization: `Bearer ${access}` }, cookies: { [COOKIE]: refresh } })
  t.equal(res.statusCode, 204)
  const line = cookieLine(setCookies(res), COOKIE)
  t.ok(line !== undefined && clearsCookie(line), `cookie cleared: ${String(line)}`)

  const api = await callApi(app, access)
  t.equal(api.statusCode, 401)
  t.match(api.headers['www-authenticate'], /error="invalid_token"/)
  t.match(api.json(), { code: 'TG_TOKEN_REVOKED' })
  t.equal(up.seen.length, seenBefore, 'the upstream never saw the revoked request')

  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: OWN_ORIGIN }, cookies: { [COOKIE]: refresh } })
  t.equal(refreshed.statusCode, 401)
  t.match(refreshed.json(), { code: 'TG_INVALID_GRANT' })
})

eachStore(t, 'logout with only the bearer token ends that session (refresh token included)', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const mine = await login(app, 'alice')
  const other = await login(app, 'alice')
  const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${mine.access_token}` } })
  t.equal(res.statusCode, 204)
  t.same(setCookies(res), [], 'no cookie to clear')
  t.equal((await callApi(app, mine.access_token)).statusCode, 401)
  t.equal((await refreshWithBody(app, mine.refresh_token ?? '')).statusCode, 401)
  t.equal((await callApi(app, other.access_token)).statusCode, 200, 'the other session lives on')
  t.equal((await refreshWithBody(app, other.refresh_token ?? '')).statusCode, 200)
})

eachStore(t, 'logout with only the refresh token in the body ends its session (access tokens included)', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const mine = await login(app, 'bob')
  const res = await app.inject({ method: 'POST', url: '/auth/logout', payload: { refresh_token: mine.refresh_token } })
  t.equal(res.statusCode, 204)
  t.equal((await callApi(app, mine.access_token)).statusCode, 401)
  t.equal((await refreshWithBody(app, mine.refresh_token ?? '')).statusCode, 401)
})

t.test('logout with only an unusable bearer token: 401, not a false "logged out"', async (t) => {
  const { app } = await startLifecycle(t)
  for (const authorization of ['Bearer not.a.jwt', 'Basic YWxpY2U6eA==']) {
    const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization } })
    t.equal(res.statusCode, 401, authorization)
    t.match(res.json(), { statusCode: 401, code: 'TG_TOKEN_INVALID', error: 'invalid_token' })
    t.match(res.headers['www-authenticate'], /error="invalid_token"/)
  }
})

eachStore(t, 'logout with only an expired access token: 401 TG_TOKEN_EXPIRED, and the session is still there to end', async (t, store) => {
  const { app } = await startLifecycle(t, { ...store, tokens: { accessTtl: '1s', clockSkew: '0s' } })
  const session = await login(app, 'alice')
  await sleep(1100)
  const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${session.access_token}` } })
  t.equal(res.statusCode, 401)
  t.match(res.json(), { code: 'TG_TOKEN_EXPIRED', error: 'invalid_token' })
  const withRefresh = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${session.access_token}` }, payload: { refresh_token: session.refresh_token } })
  t.equal(withRefresh.statusCode, 204, 'the refresh token names the session')
  t.equal((await refreshWithBody(app, session.refresh_token ?? '')).statusCode, 401, 'ended')
})

eachStore(t, 'logout is idempotent: a second logout with the same token is 204', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const session = await login(app, 'bob')
  for (let i = 0; i < 2; i++) {
    const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${session.access_token}` } })
    t.equal(res.statusCode, 204)
  }
})

t.test('across instances: logout on A, the access token is rejected on B [redis]', async (t) => {
  const [a, b] = await startLifecycleInstances(t, 2, storeConfig(t, 'redis', 'logout-ab'))
  const session = await login(a.app, 'alice')
  t.equal((await callApi(b.app, session.access_token)).statusCode, 200, 'B accepts it before')
  t.equal((await a.app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${session.access_token}` } })).statusCode, 204)
  await waitFor('B rejects the logged-out token', async () => (await callApi(b.app, session.access_token)).statusCode === 401)
  const res = await callApi(b.app, session.access_token)
  t.match(res.headers['www-authenticate'], /error="invalid_token"/)
  t.equal((await refreshWithBody(b.app, session.refresh_token ?? '')).statusCode, 401, 'and the refresh token is dead on B')
})

t.test('logout without any token: 401', async (t) => {
  const { app } = await startLifecycle(t)
  const res = await app.inject({ method: 'POST', url: '/auth/logout' })
  t.equal(res.statusCode, 401)
  t.match(res.json(), { statusCode: 401, code: 'TG_TOKEN_MISSING' })
})

t.test('own origin is compared as browsers write it: a default port in Host still matches', async (t) => {
  const { app } = await startLifecycle(t)
  const res0 = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob } })
  const cookie = String(res0.headers['set-cookie']).split(';')[0]
  const res = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie, host: 'gw.example:80', origin: 'http://gw.example' } })
  t.equal(res.statusCode, 200)
})
