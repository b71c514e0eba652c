import t, { type Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { login, PASSWORDS } from '../helpers/gateway.js'
import {
  callApi, clearsCookie, refreshWithBody, setCookies, startLifecycle, startNetworkLink
} from '../helpers/lifecycle.js'
import { sharedPrefix, startPrivateRedis, uniquePrefix } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'

// Redis going away mid-flow: the auth endpoints answer 503 with Retry-After
// (never 500, never a false "logged out"), a failed refresh consumes nothing,
// protected routes fail closed once the denylist mirror is stale, and all of
// it recovers when Redis is back.

const FAST_FAILURE = {
  connectTimeout: '500ms',
  commandTimeout: '300ms'
}
const SMALL_STALENESS = { maxStaleness: '200ms' }

function assertUnavailable (t: Test, res: LightMyRequestResponse, what: string): void {
  t.equal(res.statusCode, 503, what)
  t.match(res.headers['content-type'], /^application\/json/, what)
  t.match(res.json(), { statusCode: 503, code: 'TG_STORE_UNAVAILABLE', error: 'Service Unavailable' }, what)
  t.match(res.headers['retry-after'], /^\d+$/, `${what}: Retry-After`)
  t.notMatch(res.body, /redis|ECONNREFUSED|127\.0\.0\.1|\bat\b.*\.ts/i, `${what}: no internals`)
}

/** Polls until the gateway answers something other than 503 (the store reconnecting), then returns that answer. */
async function onceReachable (what: string, request: () => Promise<LightMyRequestResponse>): Promise<LightMyRequestResponse> {
  let last: LightMyRequestResponse | undefined
  await waitFor(what, async () => {
    last = await request()
    return last.statusCode !== 503
  }, 250, 20)
  return last as LightMyRequestResponse
}

const cookieLogin = (app: FastifyInstance): Promise<LightMyRequestResponse> =>
  app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice } })

t.test('redis-server stopped mid-flow: 503 + Retry-After everywhere, fail closed, recover after start', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const { app, up } = await startLifecycle(t, {
    redis: { url: redis.url, keyPrefix: uniquePrefix('down'), ...FAST_FAILURE },
    denylist: SMALL_STALENESS
  })
  const before = await login(app, 'alice')
  const cookie = (await cookieLogin(app)).cookies.find((c) => c.name === 'tg_refresh')?.value ?? ''
  t.equal((await callApi(app, before.access_token)).statusCode, 200)

  await redis.stop()

  assertUnavailable(t, await refreshWithBody(app, before.refresh_token ?? ''), 'refresh')
  assertUnavailable(t, await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob, transport: 'body' } }), 'login')
  assertUnavailable(t, await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${before.access_token}` } }), 'bearer logout')

  const cookieLogout = await app.inject({ method: 'POST', url: '/auth/logout', headers: { origin: 'http://localhost:80' }, cookies: { tg_refresh: cookie } })
  assertUnavailable(t, cookieLogout, 'cookie logout')
  t.notOk(setCookies(cookieLogout).some(clearsCookie), 'a logout that did not happen does not clear the cookie')

  // inside maxStaleness the mirror is still served; past it, nothing gets through
  await waitFor('protected route fails closed once the mirror is stale', async () => (await callApi(app, before.access_token)).statusCode === 503)
  const seen = up.seen.length
  assertUnavailable(t, await callApi(app, before.access_token), 'proxied route')
  t.equal(up.seen.length, seen, 'nothing unverified reached the upstream')

  t.equal((await app.inject({ url: '/healthz' })).statusCode, 200, 'the process is alive')

  await redis.start()
  // This redis-server keeps nothing across a restart: the old session is gone
  // (401), but the gateway itself is whole again.
  const relogin = await onceReachable('login after Redis is back', () => app.inject({
    method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob, transport: 'body' }
  }))
  t.equal(relogin.statusCode, 200)
  await waitFor('protected route open again', async () => (await callApi(app, relogin.json().access_token)).statusCode === 200, 250, 20)
  t.equal((await callApi(app, relogin.json().access_token)).statusCode, 200)
  const lost = await refreshWithBody(app, before.refresh_token ?? '')
  t.equal(lost.statusCode, 401, 'a session Redis no longer holds is invalid_grant, not 500')
})

t.test('network cut to Redis: a failed refresh or logout consumed nothing; the same token rotates after the link returns', async (t) => {
  const link = await startNetworkLink(t, { host: '127.0.0.1', port: 6379 })
  const { app, up } = await startLifecycle(t, {
    redis: { url: link.url, keyPrefix: sharedPrefix(t, 'cut'), ...FAST_FAILURE },
    denylist: SMALL_STALENESS,
    // no grace: had the failed attempt rotated the token, presenting it again would be reuse
    tokens: { reuseGrace: '0s' }
  })
  const session = await login(app, 'alice')
  t.equal((await callApi(app, session.access_token)).statusCode, 200)

  await link.cut()

  for (let i = 0; i < 3; i++) assertUnavailable(t, await refreshWithBody(app, session.refresh_token ?? ''), `refresh ${i}`)
  assertUnavailable(t, await app.inject({ method: 'POST', url: '/auth/logout', payload: { refresh_token: session.refresh_token } }), 'logout')
  await waitFor('protected route fails closed', async () => (await callApi(app, session.access_token)).statusCode === 503)
  const seen = up.seen.length

  await link.restore()

  const rotated = await onceReachable('refresh after the link returns', () => refreshWithBody(app, session.refresh_token ?? ''))
  t.equal(rotated.statusCode, 200, 'the refresh token survived the outage unconsumed')
  t.not(rotated.json().refresh_token, session.refresh_token)
  t.equal((await refreshWithBody(app, rotated.json().refresh_token)).statusCode, 200, 'no reuse was detected: the session is whole')
  await waitFor('protected route open again', async () => (await callApi(app, session.access_token)).statusCode === 200, 250, 20)
  t.ok(up.seen.length > seen, 'requests reach the upstream again')
})
