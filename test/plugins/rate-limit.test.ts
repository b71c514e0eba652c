import t, { type Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { login, PASSWORDS, startGateways, testConfig, type ConfigOverrides } from '../helpers/gateway.js'
import { eachStore, mergeConfig, startNetworkLink } from '../helpers/lifecycle.js'
import { SHARED_REDIS_URL, scanKeys, sharedPrefix, withRedis } from '../helpers/redis-server.js'
import { startUpstream, type TestUpstream } from '../helpers/upstream.js'
import { waitFor } from '../helpers/wait-for.js'

// Rate limits of proxied routes, on both stores: the key (user, else client
// address, IPv6 by /64, never X-Forwarded-For from an untrusted hop), the
// headers, 429s that never reach the upstream, counters shared by instances
// through Redis, and what a Redis outage does.

interface Limited {
  apps: FastifyInstance[]
  up: TestUpstream
}

function defaultRoutes (upstream: string): ConfigOverrides[] {
  return [
    { prefix: '/api', upstream },
    { prefix: '/open', upstream, auth: 'none', rateLimit: { max: 2, timeWindow: '1m' } },
    { prefix: '/free', upstream, auth: 'none', rateLimit: false }
  ]
}

/** `count` gateways on one config with routes /api (auth required), /open (auth none) and /free (rateLimit false). */
async function startLimited (t: Test, store: ConfigOverrides, overrides: ConfigOverrides = {}, count = 1, routes = defaultRoutes): Promise<Limited> {
  const up = await startUpstream(t)
  const loaded = await testConfig(mergeConfig(mergeConfig({
    rateLimit: { max: 3, timeWindow: '1m' },
    routes: routes(up.url)
  }, store), overrides))
  return { apps: await startGateways(t, loaded, count), up }
}

function get (app: FastifyInstance, url: string, headers: Record<string, string> = {}, remoteAddress?: string): Promise<LightMyRequestResponse> {
  return app.inject({ url, headers, ...(remoteAddress === undefined ? {} : { remoteAddress }) })
}

function assertLimited (t: Test, res: LightMyRequestResponse, what: string): void {
  t.equal(res.statusCode, 429, what)
  t.match(res.headers['content-type'], /^application\/json/, what)
  t.same(res.json(), { statusCode: 429, code: 'TG_RATE_LIMITED', error: 'Too Many Requests', message: res.json().message }, what)
  t.match(res.json().message, /^Too many requests, retry in \d+s$/, what)
  t.match(String(res.headers['retry-after']), /^[1-9]\d*$/, `${what}: Retry-After`)
  t.equal(res.headers['x-ratelimit-remaining'], '0', `${what}: nothing remaining`)
}

eachStore(t, 'per-user budget: headers on every answer, the 429 never reaches the upstream', async (t, store) => {
  const { apps: [app], up } = await startLimited(t, store)
  const alice = (await login(app, 'alice')).access_token
  for (let i = 1; i <= 3; i++) {
    const res = await get(app, '/api/x', { authorization: `Bearer ${alice}` })
    t.equal(res.statusCode, 200)
    t.equal(res.headers['x-ratelimit-limit'], '3')
    t.equal(res.headers['x-ratelimit-remaining'], String(3 - i))
    t.match(String(res.headers['x-ratelimit-reset']), /^\d+$/)
  }
  const seen = up.seen.length
  assertLimited(t, await get(app, '/api/x', { authorization: `Bearer ${alice}` }), 'alice over her budget')
  t.equal(up.seen.length, seen, 'the refused request never reached the upstream')

  // Another user from the same address has a budget of their own, and so
  // does alice's next login: the key is the user, not the token.
  const bob = (await login(app, 'bob')).access_token
  t.equal((await get(app, '/api/x', { authorization: `Bearer ${bob}` })).statusCode, 200)
  const aliceAgain = (await login(app, 'alice')).access_token
  assertLimited(t, await get(app, '/api/x', { authorization: `Bearer ${aliceAgain}` }), 'alice with a new token')
})

eachStore(t, 'per-address budget on an auth: none route; IPv6 grouped by /64', async (t, store) => {
  const { apps: [app], up } = await startLimited(t, store)
  t.equal((await get(app, '/open/a', {}, '10.0.0.1')).statusCode, 200)
  t.equal((await get(app, '/open/a', {}, '10.0.0.1')).statusCode, 200)
  assertLimited(t, await get(app, '/open/a', {}, '10.0.0.1'), 'third from 10.0.0.1')
  t.equal((await get(app, '/open/a', {}, '10.0.0.2')).statusCode, 200, 'another address is not affected')

  t.equal((await get(app, '/open/a', {}, '2001:db8:1:2::1')).statusCode, 200)
  t.equal((await get(app, '/open/a', {}, '2001:db8:1:2:aaaa:bbbb:cccc:dddd')).statusCode, 200)
  assertLimited(t, await get(app, '/open/a', {}, '2001:db8:1:2::ffff'), 'a third address in the same /64')
  t.equal((await get(app, '/open/a', {}, '2001:db8:1:3::1')).statusCode, 200, 'the next /64 is another budget')
  t.equal(up.seen.length, 6, 'only what was allowed reached the upstream')
})

eachStore(t, 'rateLimit: false turns a route off; the top-level default applies where a route says nothing', async (t, store) => {
  const { apps: [app], up } = await startLimited(t, store)
  for (let i = 0; i < 10; i++) {
    const res = await get(app, '/free/x')
    t.equal(res.statusCode, 200)
    t.equal(res.headers['x-ratelimit-limit'], undefined, 'no rate-limit headers on an unlimited route')
  }
  t.equal(up.seen.length, 10)
  const { access_token: token } = await login(app, 'carol')
  t.equal((await get(app, '/api/x', { authorization: `Bearer ${token}` })).headers['x-ratelimit-limit'], '3', 'the default max')
})

eachStore(t, 'requests without a token are counted by address before verification; a refused token is charged too', async (t, store) => {
  const { apps: [app], up } = await startLimited(t, store)
  const missing = await get(app, '/api/x')
  t.equal(missing.statusCode, 401)
  t.equal(missing.headers['x-ratelimit-remaining'], '2', 'a 401 carries the headers too')
  t.equal((await get(app, '/api/x', { authorization: 'Bearer not.a.jwt' })).statusCode, 401)
  t.equal((await get(app, '/api/x', { authorization: 'Bearer not.a.jwt' })).statusCode, 401)
  assertLimited(t, await get(app, '/api/x', { authorization: 'Bearer not.a.jwt' }), 'a flood of forged tokens')
  t.equal(up.seen.length, 0)
  // The address budget is not a user's: a verified user still gets through.
  const { access_token: token } = await login(app, 'bob')
  t.equal((await get(app, '/api/x', { authorization: `Bearer ${token}` })).statusCode, 200)
})

eachStore(t, 'a spoofed X-Forwarded-For does not choose the key unless the hop is trusted', async (t, store) => {
  const untrusted = await startLimited(t, store)
  const app = untrusted.apps[0]
  t.equal((await get(app, '/open/x', { 'x-forwarded-for': '203.0.113.1' })).statusCode, 200)
  t.equal((await get(app, '/open/x', { 'x-forwarded-for': '203.0.113.2' })).statusCode, 200)
  assertLimited(t, await get(app, '/open/x', { 'x-forwarded-for': '203.0.113.3' }), 'a third forwarded-for from one socket')

  const trusted = await startLimited(t, store, { server: { trustProxy: '127.0.0.1' } })
  const behindProxy = trusted.apps[0]
  for (const client of ['203.0.113.1', '203.0.113.2', '203.0.113.3']) {
    t.equal((await get(behindProxy, '/open/x', { 'x-forwarded-for': client })).statusCode, 200, `${client} via a trusted proxy`)
  }
})

t.test('two instances on one Redis share each budget', async (t) => {
  const store = { redis: { url: SHARED_REDIS_URL, keyPrefix: sharedPrefix(t, 'rl-shared') } }
  const { apps: [a, b], up } = await startLimited(t, store, {}, 2)
  t.equal((await get(a, '/open/x')).statusCode, 200)
  t.equal((await get(b, '/open/x')).statusCode, 200)
  assertLimited(t, await get(a, '/open/x'), 'third on the first instance')
  assertLimited(t, await get(b, '/open/x'), 'fourth on the second instance')

  const token = (await login(a, 'alice')).access_token
  for (const app of [a, b, a]) t.equal((await get(app, '/api/x', { authorization: `Bearer ${token}` })).statusCode, 200)
  assertLimited(t, await get(b, '/api/x', { authorization: `Bearer ${token}` }), 'alice over her budget on the other instance')
  t.equal(up.seen.length, 5)
})

t.test('a burst on two instances: exactly max requests pass, counted under one Redis key that expires', async (t) => {
  const prefix = sharedPrefix(t, 'rl-burst')
  const { apps: [a, b], up } = await startLimited(t, { redis: { url: SHARED_REDIS_URL, keyPrefix: prefix } }, {}, 2, (upstream) => [
    { prefix: '/open', upstream, auth: 'none', rateLimit: { max: 25, timeWindow: '1m' } }
  ])
  // Sent in one go, so each instance counts many of them in one Redis call.
  const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => get(i % 2 === 0 ? a : b, '/open/x')))
  const passed = answers.filter((res) => res.statusCode === 200)
  t.equal(passed.length, 25, 'max requests pass')
  t.equal(answers.filter((res) => res.statusCode === 429).length, 15, 'the rest are refused')
  t.equal(up.seen.length, 25, 'only those reach the upstream')
  t.same(passed.map((res) => Number(res.headers['x-ratelimit-remaining'])).sort((x, y) => x - y),
    Array.from({ length: 25 }, (_, i) => i), 'each passed request saw its own count: remaining 24 … 0, once each')

  await withRedis(SHARED_REDIS_URL, async (redis) => {
    const keys = await scanKeys(redis, prefix)
    t.equal(keys.length, 1, 'one counter')
    const [key = ''] = keys
    // under one of the hash tags that keep a turn's counts to a call per slot on Cluster
    t.match(key.slice(prefix.length), /^rl:\{\d+\}\/open\|a:127\.0\.0\.1$/, 'the route and the client address')
    t.equal(await redis.get(key), '40', 'every request counted')
    const ttl = await redis.pttl(key)
    t.ok(ttl > 0 && ttl <= 60_000, 'the counter expires with its window')
  })
})

t.test('Redis down: open routes count per instance, closed routes answer 503, login 503; all recover', async (t) => {
  const shared = new URL(SHARED_REDIS_URL)
  const link = await startNetworkLink(t, { host: shared.hostname, port: Number(shared.port === '' ? 6379 : shared.port) })
  const store = { redis: { url: link.url, keyPrefix: sharedPrefix(t, 'rl-down'), connectTimeout: '500ms', commandTimeout: '300ms' } }
  const { apps: [app], up } = await startLimited(t, store, {}, 1, (upstream) => [
    { prefix: '/open', upstream, auth: 'none', rateLimit: { max: 2, timeWindow: '1m' } },
    { prefix: '/strict', upstream, auth: 'none', rateLimit: { max: 2, timeWindow: '1m', onStoreError: 'closed' } }
  ])
  t.equal((await get(app, '/open/x')).statusCode, 200, 'one counted in Redis before the outage')
  t.equal((await get(app, '/strict/x')).statusCode, 200)

  await link.cut()

  // The local fallback starts from zero, so it allows max again: the limit
  // still holds per instance, it just is not shared while Redis is away.
  t.equal((await get(app, '/open/x')).statusCode, 200, 'open: served from the local counter')
  t.equal((await get(app, '/open/x')).statusCode, 200)
  assertLimited(t, await get(app, '/open/x'), 'open: the local counter still limits')
  const seen = up.seen.length
  const strict = await get(app, '/strict/x')
  t.equal(strict.statusCode, 503)
  t.match(strict.json(), { statusCode: 503, code: 'TG_STORE_UNAVAILABLE' })
  t.match(String(strict.headers['retry-after']), /^\d+$/)
  t.notMatch(strict.body, /redis|ECONNREFUSED|127\.0\.0\.1/i, 'no internals')
  t.equal(up.seen.length, seen, 'a closed route lets nothing through')
  const loginDown = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob } })
  t.equal(loginDown.statusCode, 503, 'login fails closed')
  t.match(loginDown.json(), { code: 'TG_STORE_UNAVAILABLE' })

  await link.restore()
  await waitFor('the closed route answers again', async () => (await get(app, '/strict/x')).statusCode === 200, 250, 20)
  await waitFor('login works again', async () => (await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob } })).statusCode === 200, 250, 20)
  // Back on the shared counter, which still holds the one request from before the outage.
  const back = await get(app, '/open/x')
  t.equal(back.statusCode, 200)
  t.equal(back.headers['x-ratelimit-remaining'], '0', 'counted on top of the pre-outage request')
  assertLimited(t, await get(app, '/open/x'), 'open: the shared budget is spent')
})
