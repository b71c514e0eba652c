import t, { type Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { PASSWORDS, startGateways as startInstances, testConfig, type ConfigOverrides } from '../helpers/gateway.js'
import { eachStore, mergeConfig, startNetworkLink } from '../helpers/lifecycle.js'
import { SHARED_REDIS_URL, sharedPrefix } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'

// POST /auth/login under auth.loginRateLimit, on both stores: failed attempts
// lock the account (and, past its own budget, the address) for the rest of
// the window, the right password included; successes do not count; the lock
// ends with the window; a parallel burst gets no more guesses than the
// budget; instances share the counts through Redis; Redis down is a 503.

async function startGateways (t: Test, store: ConfigOverrides, loginRateLimit: ConfigOverrides, overrides: ConfigOverrides = {}, count = 1): Promise<FastifyInstance[]> {
  const loaded = await testConfig(mergeConfig(mergeConfig({ auth: { loginRateLimit } }, store), overrides))
  return startInstances(t, loaded, count)
}

type User = keyof typeof PASSWORDS

function attempt (app: FastifyInstance, username: string, password: string, from?: { remoteAddress?: string, headers?: Record<string, string> }): Promise<LightMyRequestResponse> {
  return app.inject({
    method: 'POST',
    url: '/auth/login',
    payload: { username, password, transport: 'body' },
    ...(from?.remoteAddress === undefined ? {} : { remoteAddress: from.remoteAddress }),
    ...(from?.headers === undefined ? {} : { headers: from.headers })
  })
}

const right = (app: FastifyInstance, user: User, remoteAddress?: string): Promise<LightMyRequestResponse> =>
  attempt(app, user, PASSWORDS[user], { remoteAddress })
const wrong = (app: FastifyInstance, user: string, remoteAddress?: string): Promise<LightMyRequestResponse> =>
  attempt(app, user, 'not-the-password', { remoteAddress })

function assertThrottled (t: Test, res: LightMyRequestResponse, what: string): void {
  t.equal(res.statusCode, 429, what)
  t.match(res.json(), { statusCode: 429, code: 'TG_RATE_LIMITED', error: 'Too Many Requests' }, what)
  t.match(String(res.headers['retry-after']), /^[1-9]\d*$/, `${what}: Retry-After`)
  t.notOk('access_token' in res.json(), `${what}: no token`)
}

eachStore(t, 'failed logins lock the account, even for the right password; another account is not locked', async (t, store) => {
  const [app] = await startGateways(t, store, { max: 3, timeWindow: '1m' })
  for (let i = 0; i < 3; i++) t.equal((await wrong(app, 'alice')).statusCode, 401)
  assertThrottled(t, await right(app, 'alice'), 'the right password once the budget is spent')
  assertThrottled(t, await attempt(app, 'ALICE', PASSWORDS.alice), 'the username in another case is the same account')
  assertThrottled(t, await right(app, 'alice', '10.1.1.1'), 'from another address too: the account is locked')
  t.equal((await right(app, 'bob')).statusCode, 200, 'another account from the same address logs in')
})

eachStore(t, 'an unknown username is throttled like a known one', async (t, store) => {
  const [app] = await startGateways(t, store, { max: 2, timeWindow: '1m' })
  t.equal((await wrong(app, 'mallory')).statusCode, 401)
  t.equal((await wrong(app, 'mallory')).statusCode, 401)
  assertThrottled(t, await wrong(app, 'mallory'), 'unknown user over the budget')
})

eachStore(t, 'successful logins do not count', async (t, store) => {
  const [app] = await startGateways(t, store, { max: 2, timeWindow: '1m', addressMax: 2 })
  for (let i = 0; i < 6; i++) t.equal((await right(app, 'alice')).statusCode, 200, `login ${i + 1}`)
  t.equal((await wrong(app, 'alice')).statusCode, 401)
  t.equal((await right(app, 'alice')).statusCode, 200, 'one failure leaves room')
})

eachStore(t, 'the address budget spans accounts, and only that address', async (t, store) => {
  const [app] = await startGateways(t, store, { max: 3, timeWindow: '1m', addressMax: 4 })
  for (let i = 0; i < 3; i++) t.equal((await wrong(app, 'alice')).statusCode, 401)
  t.equal((await right(app, 'bob')).statusCode, 200, 'alice locked, the address not yet')
  t.equal((await wrong(app, 'carol')).statusCode, 401)
  assertThrottled(t, await right(app, 'bob'), 'bob once the address budget is spent')
  t.equal((await right(app, 'bob', '10.2.2.2')).statusCode, 200, 'bob from another address')
})

eachStore(t, 'a parallel burst of guesses gets no more than the budget', async (t, store) => {
  const [app] = await startGateways(t, store, { max: 3, timeWindow: '1m', addressMax: 100 })
  const answers = await Promise.all(Array.from({ length: 12 }, () => wrong(app, 'alice')))
  t.equal(answers.filter((r) => r.statusCode === 401).length, 3, 'three guesses were checked')
  t.equal(answers.filter((r) => r.statusCode === 429).length, 9, 'the rest were refused before hashing')
})

eachStore(t, 'the lock ends with its window', async (t, store) => {
  const [app] = await startGateways(t, store, { max: 2, timeWindow: '1s' })
  t.equal((await wrong(app, 'alice')).statusCode, 401)
  t.equal((await wrong(app, 'alice')).statusCode, 401)
  assertThrottled(t, await right(app, 'alice'), 'locked')
  // A refused attempt does not extend the lock: polling it is harmless.
  await waitFor('alice can log in again', async () => (await right(app, 'alice')).statusCode === 200, 200, 50)
  t.pass('the lock expired')
})

eachStore(t, 'the window starts with the first failure, not with an earlier success', async (t, store) => {
  const [app] = await startGateways(t, store, { max: 2, timeWindow: '2s' })
  t.equal((await right(app, 'alice')).statusCode, 200, 'a success first')
  await new Promise((resolve) => setTimeout(resolve, 1500))
  t.equal((await wrong(app, 'alice')).statusCode, 401)
  t.equal((await wrong(app, 'alice')).statusCode, 401)
  // Past the end of a window that had started with the success: still locked.
  await new Promise((resolve) => setTimeout(resolve, 700))
  assertThrottled(t, await right(app, 'alice'), 'locked for a whole window from the first failure')
})

eachStore(t, 'a spoofed X-Forwarded-For does not give an attacker fresh address budgets', async (t, store) => {
  const [app] = await startGateways(t, store, { max: 10, timeWindow: '1m', addressMax: 2 })
  const spoof = (n: number): { headers: Record<string, string> } => ({ headers: { 'x-forwarded-for': `198.51.100.${n}` } })
  t.equal((await attempt(app, 'alice', 'nope', spoof(1))).statusCode, 401)
  t.equal((await attempt(app, 'carol', 'nope', spoof(2))).statusCode, 401)
  assertThrottled(t, await attempt(app, 'bob', PASSWORDS.bob, spoof(3)), 'the socket address is spent')
})

t.test('two instances on one Redis share the login counts', async (t) => {
  const store = { redis: { url: SHARED_REDIS_URL, keyPrefix: sharedPrefix(t, 'login-shared') } }
  const [a, b] = await startGateways(t, store, { max: 2, timeWindow: '1m' }, {}, 2)
  t.equal((await wrong(a, 'alice')).statusCode, 401)
  t.equal((await wrong(b, 'alice')).statusCode, 401)
  assertThrottled(t, await right(a, 'alice'), 'locked on the first instance')
  assertThrottled(t, await right(b, 'alice'), 'locked on the second instance')
})

t.test('Redis down: login fails closed with 503 and no internals, then recovers with its counts', async (t) => {
  const shared = new URL(SHARED_REDIS_URL)
  const link = await startNetworkLink(t, { host: shared.hostname, port: Number(shared.port === '' ? 6379 : shared.port) })
  const store = { redis: { url: link.url, keyPrefix: sharedPrefix(t, 'login-down'), connectTimeout: '500ms', commandTimeout: '300ms' } }
  const [app] = await startGateways(t, store, { max: 2, timeWindow: '1m' })
  t.equal((await wrong(app, 'alice')).statusCode, 401)

  await link.cut()
  for (const res of [await right(app, 'bob'), await wrong(app, 'alice')]) {
    t.equal(res.statusCode, 503)
    t.match(res.json(), { statusCode: 503, code: 'TG_STORE_UNAVAILABLE' })
    t.match(String(res.headers['retry-after']), /^\d+$/)
    t.notMatch(res.body, /redis|ECONNREFUSED|127\.0\.0\.1/i, 'no internals')
  }

  await link.restore()
  await waitFor('login works again', async () => (await right(app, 'bob')).statusCode === 200, 250, 20)
  // The failure from before the outage is still counted; the one during it never was.
  t.equal((await wrong(app, 'alice')).statusCode, 401)
  assertThrottled(t, await right(app, 'alice'), 'two failures in the window')
})
