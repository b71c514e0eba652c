import { Writable } from 'node:stream'
import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { buildGateway } from '../../src/build-gateway.js'
import { loggerOptions, redactUrl } from '../../src/ops/logger.js'
import { PASSWORDS, testConfig } from '../helpers/gateway.js'
import { closedPort, startUpstream } from '../helpers/upstream.js'
import { setCookies } from '../helpers/lifecycle.js'

// What the gateway logs, read from the stream pino writes to: one access line
// per request with the request id, quiet health checks, and not one
// credential anywhere across a whole login / refresh / proxy / logout run,
// error objects included.

type Line = Record<string, unknown>

async function loggedGateway (t: Test, overrides: Record<string, unknown>): Promise<{ app: FastifyInstance, lines: () => Line[], raw: () => string }> {
  let raw = ''
  const stream = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      raw += chunk.toString('utf8')
      callback()
    }
  })
  const loaded = await testConfig(overrides)
  const app = await buildGateway(loaded, { logger: loggerOptions('trace', false, stream) })
  t.teardown(() => app.close())
  await app.ready()
  return {
    app,
    raw: () => raw,
    lines: () => raw.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Line)
  }
}

function cookieValue (res: LightMyRequestResponse, name: string): string {
  for (const line of setCookies(res)) {
    const [pair] = line.split(';')
    const eq = pair.indexOf('=')
    if (pair.slice(0, eq).trim() === name && pair.length > eq + 1) return pair.slice(eq + 1)
  }
  throw new Error(`no ${name} cookie`)
}

t.test('no password, token or cookie value in any log line of a whole session, errors included', async (t) => {
  const up = await startUpstream(t)
  const down = await closedPort()
  const { app, raw, lines } = await loggedGateway(t, {
    routes: [
      { prefix: '/api', upstream: up.url },
      { prefix: '/down', upstream: `http://127.0.0.1:${down}` }
    ]
  })
  const secrets: string[] = [PASSWORDS.alice, PASSWORDS.bob]

  // A browser login (cookie) and an API client login (body).
  const browser = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice } })
  t.equal(browser.statusCode, 200)
  const cookie = cookieValue(browser, 'tg_refresh')
  const api = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob, transport: 'body' } })
  t.equal(api.statusCode, 200)
  const apiTokens = api.json<{ access_token: string, refresh_token: string }>()
  secrets.push(cookie, browser.json<{ access_token: string }>().access_token, apiTokens.access_token, apiTokens.refresh_token)

  // Failures that log: a wrong password, credentials in a query string, a body that fails validation.
  t.equal((await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: `${PASSWORDS.alice}!` } })).statusCode, 401)
  secrets.push(`${PASSWORDS.alice}!`)
  t.equal((await app.inject({ method: 'POST', url: `/auth/login?password=${PASSWORDS.bob}`, payload: { username: 'bob', password: PASSWORDS.bob } })).statusCode, 400)
  t.equal((await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob, extra: PASSWORDS.bob } })).statusCode, 400)

  // Refresh by cookie and by body; the old refresh token presented again is reuse.
  const origin = 'http://localhost:80'
  const byCookie = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { cookie: `tg_refresh=${cookie}`, origin, host: 'localhost:80' } })
  t.equal(byCookie.statusCode, 200)
  const cookie2 = cookieValue(byCookie, 'tg_refresh')
  const byBody = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: apiTokens.refresh_token } })
  t.equal(byBody.statusCode, 200)
  const bodyTokens = byBody.json<{ access_token: string, refresh_token: string }>()
  secrets.push(cookie2, byCookie.json<{ access_token: string }>().access_token, bodyTokens.access_token, bodyTokens.refresh_token)

  // Proxied requests: a good one, a token in the query string, an upstream that refuses, a forged token.
  const bearer = { authorization: `Bearer ${bodyTokens.access_token}`, cookie: `tg_refresh=${cookie2}` }
  t.equal((await app.inject({ url: '/api/orders?x=1', headers: { ...bearer, 'x-request-id': 'trace-log-1' } })).statusCode, 200)
  t.equal((await app.inject({ url: `/api/orders?access_token=${bodyTokens.access_token}`, headers: bearer })).statusCode, 200)
  t.equal((await app.inject({ url: '/down/x', headers: bearer })).statusCode, 503)
  const forged = `${bodyTokens.access_token.slice(0, -4)}AAAA`
  secrets.push(forged)
  t.equal((await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${forged}` } })).statusCode, 401)

  // Log out both sessions; the logged-out token is then refused.
  t.equal((await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${bodyTokens.access_token}` } })).statusCode, 204)
  t.equal((await app.inject({ method: 'POST', url: '/auth/logout', headers: { cookie: `tg_refresh=${cookie2}`, origin, host: 'localhost:80' } })).statusCode, 204)
  t.equal((await app.inject({ url: '/api/x', headers: bearer })).statusCode, 401)

  const text = raw()
  t.ok(lines().length > 20, 'the run was logged')
  for (const secret of secrets) {
    t.notOk(text.includes(secret), `a secret of ${secret.length} characters is not logged`)
    // A JWT's signature alone is enough to spot a logged token.
    const signature = secret.split('.')[2]
    if (signature !== undefined) t.notOk(text.includes(signature), 'nor is its signature')
  }
  t.ok(lines().some((l) => l.level === 50 && l.err !== undefined), 'an error object was logged (the refused upstream)')
})

t.test('one access line per request, with the request id, route, status, latency, upstream and user', async (t) => {
  const up = await startUpstream(t)
  const { app, lines } = await loggedGateway(t, { routes: [{ prefix: '/api', upstream: up.url }] })
  const login = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob, transport: 'body' }, headers: { 'x-request-id': 'login-1' } })
  const token = login.json<{ access_token: string }>().access_token
  await app.inject({ url: '/api/things/7?q=1', headers: { authorization: `Bearer ${token}`, 'x-request-id': 'proxy-1' } })
  await app.inject({ url: '/nowhere', headers: { 'x-request-id': 'lost-1' } })

  const access = lines().filter((l) => l.msg === 'request completed')
  t.equal(access.length, 3, 'one access line per request')
  t.match(access[0], { reqId: 'login-1', route: '/auth/login', method: 'POST', status: 200, url: '/auth/login' })
  t.notOk('user' in access[0], 'no user before a token is presented')
  t.match(access[1], { reqId: 'proxy-1', route: '/api', method: 'GET', status: 200, url: '/api/things/7?q=1', upstream: up.url, user: 'u-2' })
  t.type(access[1].ms, 'number')
  t.match(access[2], { reqId: 'lost-1', route: '(unmatched)', status: 404 })
  t.ok(lines().filter((l) => l.reqId === 'login-1').some((l) => l.msg === 'login'), 'the login event carries the request id')
  t.notOk(lines().some((l) => l.msg === 'incoming request' || l.msg === 'response received'), 'no other per-request lines')
  t.ok(lines().filter((l) => l.reqId !== undefined).every((l) => ['login-1', 'proxy-1', 'lost-1'].includes(String(l.reqId))))
})

t.test('every route has its line, whichever plugin added it; a gateway above info writes none', async (t) => {
  const up = await startUpstream(t)
  const origin = 'https://app.example'
  const overrides = { cors: { origins: [origin] }, routes: [{ prefix: '/api', upstream: up.url, auth: 'none' }] }
  const { app, lines } = await loggedGateway(t, overrides)
  const preflight = { 'x-request-id': 'pre-1', origin, 'access-control-request-method': 'GET' }
  t.equal((await app.inject({ method: 'OPTIONS', url: '/api/x', headers: preflight })).statusCode, 204, 'a preflight')
  t.equal((await app.inject({ url: '/.well-known/jwks.json', headers: { 'x-request-id': 'jwks-1' } })).statusCode, 200, 'the JWKS')
  t.equal((await app.inject({ method: 'HEAD', url: '/.well-known/jwks.json', headers: { 'x-request-id': 'head-1' } })).statusCode, 200, 'a HEAD')
  const access = lines().filter((l) => l.msg === 'request completed')
  t.same(access.map((l) => [l.reqId, l.method, l.status]), [['pre-1', 'OPTIONS', 204], ['jwks-1', 'GET', 200], ['head-1', 'HEAD', 200]], 'one line each')

  let raw = ''
  const stream = new Writable({ write (chunk: Buffer, _encoding, callback) { raw += chunk.toString('utf8'); callback() } })
  const quiet = await buildGateway(await testConfig(overrides), { logger: loggerOptions('warn', false, stream) })
  t.teardown(() => quiet.close())
  for (const url of ['/api/x', '/.well-known/jwks.json', '/nowhere']) await quiet.inject({ url })
  t.equal((await quiet.inject({ method: 'OPTIONS', url: '/api/x', headers: preflight })).statusCode, 204)
  t.notOk(raw.includes('request completed'), 'at warn, no access line')
})

t.test('a route with accessLog: false writes no access line; its errors and the other routes\' lines stay', async (t) => {
  const up = await startUpstream(t)
  const { app, lines } = await loggedGateway(t, {
    routes: [
      { prefix: '/poll', upstream: up.url, auth: 'none', accessLog: false },
      { prefix: '/gone', upstream: `http://127.0.0.1:${await closedPort()}`, auth: 'none', accessLog: false },
      { prefix: '/api', upstream: up.url, auth: 'none' }
    ]
  })
  t.equal((await app.inject({ url: '/poll/x', headers: { 'x-request-id': 'poll-1' } })).statusCode, 200)
  t.equal((await app.inject({ url: '/gone/x', headers: { 'x-request-id': 'gone-1' } })).statusCode, 503)
  t.equal((await app.inject({ url: '/api/x', headers: { 'x-request-id': 'api-1' } })).statusCode, 200)
  const access = lines().filter((l) => l.msg === 'request completed')
  t.same(access.map((l) => l.reqId), ['api-1'], 'only the logged route has a line')
  t.ok(lines().some((l) => l.reqId === 'gone-1' && l.level === 50), 'the unlogged route\'s upstream error is still logged')
})

t.test('health checks and metrics scrapes are not logged', async (t) => {
  const { app, lines } = await loggedGateway(t, {})
  const before = lines().length
  for (const url of ['/healthz', '/readyz', '/metrics']) t.equal((await app.inject({ url })).statusCode, 200, url)
  t.equal(lines().length, before)
})

t.test('redactUrl hides credentials in a query string and leaves the rest', async (t) => {
  t.equal(redactUrl('/a?x=1&access_token=abc&refresh_token=def#f'), '/a?x=1&access_token=[REDACTED]&refresh_token=[REDACTED]#f')
  t.equal(redactUrl('/a?PASSWORD=p'), '/a?PASSWORD=[REDACTED]')
  t.equal(redactUrl('/plain/path'), '/plain/path')
})
