import t from 'tap'
import { checkConfig } from '../../src/config/load-config.js'
import { UNMATCHED_ROUTE } from '../../src/ops/gateway-metrics.js'
import { login, PASSWORDS, startGateway, writeTestConfig } from '../helpers/gateway.js'
import { closedPort, startUpstream } from '../helpers/upstream.js'
import type { FastifyInstance } from 'fastify'

// GET /metrics in Prometheus text: the counters move when traffic flows,
// labelled by route (never the raw URL), and scraping can be restricted.

type Labels = Record<string, string>

/** Every sample of `name` in a Prometheus text exposition, with its labels. */
function samples (text: string, name: string): Array<{ labels: Labels, value: number }> {
  const out: Array<{ labels: Labels, value: number }> = []
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null || match[1] !== name) continue
    const labels: Labels = {}
    for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2]
    out.push({ labels, value: Number(match[3]) })
  }
  return out
}

/** The value of the one sample of `name` whose labels include `want`; 0 when there is none. */
function value (text: string, name: string, want: Labels = {}): number {
  const found = samples(text, name).filter((s) => Object.entries(want).every(([k, v]) => s.labels[k] === v))
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(want)} matches ${found.length} samples`)
  return found[0]?.value ?? 0
}

async function scrape (app: FastifyInstance, headers: Record<string, string> = {}): Promise<string> {
  const res = await app.inject({ url: '/metrics', headers })
  if (res.statusCode !== 200) throw new Error(`/metrics answered ${res.statusCode}`)
  return res.body
}

t.test('requests, upstream latency and errors, auth outcomes and the denylist move with traffic', async (t) => {
  const up = await startUpstream(t)
  const down = await closedPort()
  const { app } = await startGateway(t, {
    auth: { loginRateLimit: { max: 1, timeWindow: '1m' } },
    routes: [
      { prefix: '/api', upstream: up.url },
      { prefix: '/down', upstream: `http://127.0.0.1:${down}`, auth: 'none' },
      { prefix: '/limited', upstream: up.url, auth: 'none', rateLimit: { max: 1, timeWindow: '1m' } }
    ]
  })
  const res = await app.inject({ url: '/metrics' })
  t.equal(res.statusCode, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  t.equal(value(res.body, 'tokengate_auth_events_total', { outcome: 'login' }), 0, 'outcomes are exported before they happen')

  const alice = await login(app, 'alice')
  t.equal((await app.inject({ url: '/api/orders/42?secret=x', headers: { authorization: `Bearer ${alice.access_token}` } })).statusCode, 200)
  t.equal((await app.inject({ url: '/api/x' })).statusCode, 401)
  t.equal((await app.inject({ url: '/api/x', headers: { authorization: 'Bearer not.a.token' } })).statusCode, 401)
  const expired = app.accessTokens.issue({ sub: 'u-1', sid: 's', username: 'alice', email: 'a@example.com', name: 'A', roles: [], scopes: [] }, Date.now() - 24 * 3600_000)
  t.equal((await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${expired.token}` } })).statusCode, 401)
  t.equal((await app.inject({ url: '/down/x' })).statusCode, 503)
  t.equal((await app.inject({ url: '/limited/x' })).statusCode, 200)
  t.equal((await app.inject({ url: '/limited/x' })).statusCode, 429)
  t.equal((await app.inject({ url: '/no/such/route/u-12345' })).statusCode, 404)

  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: alice.refresh_token } })
  t.equal(refreshed.statusCode, 200)
  const logout = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${refreshed.json<{ access_token: string }>().access_token}` } })
  t.equal(logout.statusCode, 204)
  t.equal((await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${alice.access_token}` } })).statusCode, 401, 'revoked')
  const wrong = { method: 'POST' as const, url: '/auth/login', payload: { username: 'bob', password: `${PASSWORDS.bob}-wrong` } }
  t.equal((await app.inject(wrong)).statusCode, 401)
  t.equal((await app.inject(wrong)).statusCode, 429)

  const text = await scrape(app)
  const requests = 'tokengate_http_requests_total'
  t.equal(value(text, requests, { route: '/api', method: 'GET', status: '2xx' }), 1)
  t.equal(value(text, requests, { route: '/api', method: 'GET', status: '4xx' }), 4)
  t.equal(value(text, requests, { route: '/down', method: 'GET', status: '5xx' }), 1)
  t.equal(value(text, requests, { route: '/limited', method: 'GET', status: '4xx' }), 1)
  t.equal(value(text, requests, { route: '/auth/login', method: 'POST', status: '2xx' }), 1)
  t.equal(value(text, requests, { route: '/auth/refresh', method: 'POST', status: '2xx' }), 1)
  t.equal(value(text, requests, { route: UNMATCHED_ROUTE, method: 'GET', status: '4xx' }), 1)
  t.equal(value(text, requests, { route: '/metrics', method: 'GET', status: '2xx' }), 1, 'the first scrape is counted by the second')
  t.equal(value(text, 'tokengate_http_request_duration_seconds_count', { route: '/api', method: 'GET', status: '2xx' }), 1)
  t.notMatch(text, /u-12345|secret=|orders\/42/, 'no label carries a raw URL')

  t.equal(value(text, 'tokengate_upstream_duration_seconds_count', { route: '/api' }), 1)
  t.ok(value(text, 'tokengate_upstream_duration_seconds_sum', { route: '/api' }) > 0)
  t.equal(value(text, 'tokengate_upstream_errors_total', { route: '/down', kind: 'unavailable' }), 1)
  t.equal(value(text, 'tokengate_rate_limited_total', { route: '/limited' }), 1)

  const auth = 'tokengate_auth_events_total'
  t.equal(value(text, auth, { outcome: 'login' }), 1)
  t.equal(value(text, auth, { outcome: 'login_failed' }), 1)
  t.equal(value(text, auth, { outcome: 'rate_limited' }), 1)
  t.equal(value(text, auth, { outcome: 'refresh' }), 1)
  t.equal(value(text, auth, { outcome: 'logout' }), 1)
  t.equal(value(text, auth, { outcome: 'missing_token' }), 1)
  t.equal(value(text, auth, { outcome: 'invalid_token' }), 1)
  t.equal(value(text, auth, { outcome: 'expired_token' }), 1)
  t.equal(value(text, auth, { outcome: 'revoked' }), 1)
  t.ok(value(text, 'tokengate_denylist_entries') >= 1, 'the ended session is in the denylist mirror')
  t.equal(value(text, 'tokengate_redis_errors_total', { client: 'store' }), 0)
})

t.test('refresh-token reuse and a failed refresh are counted', async (t) => {
  const { app } = await startGateway(t, { tokens: { reuseGrace: '0s' } })
  const { refresh_token: first } = await login(app, 'bob')
  const refresh = (token: string | undefined): Promise<{ statusCode: number }> => app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: token } })
  t.equal((await refresh(first)).statusCode, 200)
  t.equal((await refresh(first)).statusCode, 401, 'reuse')
  t.equal((await refresh('x'.repeat(43))).statusCode, 401, 'unknown')
  const text = await scrape(app)
  t.equal(value(text, 'tokengate_auth_events_total', { outcome: 'reuse_detected' }), 1)
  t.equal(value(text, 'tokengate_auth_events_total', { outcome: 'refresh_failed' }), 1)
})

t.test('POST /auth/logout-all is counted as logout_all', async (t) => {
  const { app } = await startGateway(t)
  t.equal(value(await scrape(app), 'tokengate_auth_events_total', { outcome: 'logout_all' }), 0, 'exported before it happens')
  const { access_token: access } = await login(app, 'bob')
  const res = await app.inject({ method: 'POST', url: '/auth/logout-all', headers: { authorization: `Bearer ${access}` } })
  t.equal(res.statusCode, 204)
  const text = await scrape(app)
  t.equal(value(text, 'tokengate_auth_events_total', { outcome: 'logout_all' }), 1)
  t.equal(value(text, 'tokengate_auth_events_total', { outcome: 'logout' }), 0, 'not counted as a single logout')
})

t.test('each gateway counts in a registry of its own', async (t) => {
  const { app: a } = await startGateway(t)
  const { app: b } = await startGateway(t)
  await a.inject({ url: '/healthz' })
  await a.inject({ url: '/healthz' })
  t.equal(value(await scrape(a), 'tokengate_http_requests_total', { route: '/healthz', method: 'GET', status: '2xx' }), 2)
  t.equal(value(await scrape(b), 'tokengate_http_requests_total', { route: '/healthz', method: 'GET', status: '2xx' }), 0)
})

t.test('a Redis that does not answer is counted as Redis errors', async (t) => {
  const port = await closedPort()
  const { app } = await startGateway(t, { redis: { url: `redis://127.0.0.1:${port}`, connectTimeout: '200ms', commandTimeout: '200ms' } })
  t.equal((await app.inject({ url: '/readyz' })).statusCode, 503)
  t.equal((await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob } })).statusCode, 503)
  const text = await scrape(app)
  t.ok(value(text, 'tokengate_redis_errors_total', { client: 'store' }) >= 1)
  t.ok(value(text, 'tokengate_redis_errors_total', { client: 'login_throttle' }) >= 1)
})

t.test('/metrics is not rate limited', async (t) => {
  const { app } = await startGateway(t, { rateLimit: { max: 1, timeWindow: '1m' } })
  for (let i = 0; i < 5; i++) t.equal((await app.inject({ url: '/metrics' })).statusCode, 200)
})

t.test('a bearer token restricts scraping', async (t) => {
  const secret = 'scrape-secret-0123456789'
  const { app } = await startGateway(t, { metrics: { bearerToken: secret } })
  const none = await app.inject({ url: '/metrics' })
  t.equal(none.statusCode, 401)
  t.equal(none.json<{ code: string }>().code, 'TG_TOKEN_MISSING')
  t.equal((await app.inject({ url: '/metrics', headers: { authorization: 'Bearer wrong-secret-0123456789' } })).statusCode, 401)
  t.equal((await app.inject({ url: '/metrics', headers: { authorization: 'Basic abc' } })).statusCode, 401)
  t.equal((await app.inject({ url: '/metrics', headers: { authorization: `Bearer ${secret}` } })).statusCode, 200)
})

t.test('an address list restricts scraping', async (t) => {
  const { app } = await startGateway(t, { metrics: { allow: ['10.0.0.0/8', '::1'] } })
  t.equal((await app.inject({ url: '/metrics', remoteAddress: '10.1.2.3' })).statusCode, 200)
  t.equal((await app.inject({ url: '/metrics', remoteAddress: '::ffff:10.1.2.3' })).statusCode, 200, 'IPv4-mapped')
  t.equal((await app.inject({ url: '/metrics', remoteAddress: '::1' })).statusCode, 200)
  const refused = await app.inject({ url: '/metrics', remoteAddress: '192.168.1.1' })
  t.equal(refused.statusCode, 403)
  t.equal(refused.json<{ code: string }>().code, 'TG_FORBIDDEN')
})

t.test('metrics.enabled false: no /metrics', async (t) => {
  const { app } = await startGateway(t, { metrics: { enabled: false } })
  t.equal((await app.inject({ url: '/metrics' })).statusCode, 404)
})

t.test('metrics.allow entries that are not addresses or CIDRs are config errors with their line', async (t) => {
  const { file } = await writeTestConfig({ metrics: { allow: ['10.0.0.0/8', '10.0.0.0/33', 'localhost'] } })
  const { issues } = checkConfig(file, {})
  t.same(issues.map((i) => i.path), ['metrics.allow[1]', 'metrics.allow[2]'])
  t.ok(issues.every((i) => i.line > 0))
})
