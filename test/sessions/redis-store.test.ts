import t from 'tap'
import type { Test } from 'tap'
import type { Redis } from 'ioredis'
import { hashRefreshToken, openSuccessor } from '../../src/tokens/refresh-token.js'
import { RedisStore } from '../../src/sessions/redis-store.js'
import { StoreUnavailableError, type SessionStore } from '../../src/sessions/session-store.js'
import { createRedisUser, scanKeys, SHARED_REDIS_URL, sharedPrefix, startPrivateRedis, withRedis } from '../helpers/redis-server.js'
import { login, rotation, storeContract } from '../helpers/store-contract.js'
import { startFreezableProxy } from '../helpers/freezable-proxy.js'
import { waitFor } from '../helpers/wait-for.js'

function openStore (t: Test, url: string, keyPrefix: string): RedisStore {
  const store = new RedisStore({ url, keyPrefix, connectTimeoutMs: 500, commandTimeoutMs: 500 })
  t.teardown(() => store.close())
  return store
}

t.test('the store contract, on Redis', async (t) => {
  storeContract(t, async (t) => openStore(t, SHARED_REDIS_URL, sharedPrefix(t, 'contract')))
})

async function dumpValues (redis: Redis, key: string): Promise<string[]> {
  switch (await redis.type(key)) {
    case 'hash': return Object.entries(await redis.hgetall(key)).flat()
    case 'zset': return redis.zrange(key, 0, -1)
    case 'string': return [await redis.get(key) ?? '']
    default: return [`unexpected type of ${key}`]
  }
}

t.test('Redis holds no plaintext refresh token, and every key has a prefix and an expiry', async (t) => {
  const prefix = sharedPrefix(t, 'at-rest')
  const store = openStore(t, SHARED_REDIS_URL, prefix)
  const a = await login(store)
  const r1 = rotation(a.token, a.input.now + 1)
  await store.rotate(r1.input)
  const r2 = rotation(r1.next, a.input.now + 2)
  await store.rotate(r2.input)
  const reused = await login(store)
  await store.rotate(rotation(reused.token, reused.input.now + 1).input)
  await store.rotate(rotation(reused.token, reused.input.now + 2, { graceMs: 0 }).input)
  await store.revoke({ kind: 'sub', value: a.sub, before: 1, expiresAt: Date.now() + 60_000 })

  await withRedis(SHARED_REDIS_URL, async (redis) => {
    const keys = await scanKeys(redis, prefix)
    // P{deny}, P{deny}before, P{u:<sub>}, P{<sid>}s, P{<sid>}r:<hash>
    const kindOf = (rest: string): string => rest.startsWith('{deny}') ? 'deny' : rest.startsWith('{u:') ? 'u' : rest.replace(/^\{[^}]*\}/, '').replace(/:.*/, '')
    const kinds = new Set(keys.map((k) => kindOf(k.slice(prefix.length))))
    t.same([...kinds].sort(), ['deny', 'r', 's', 'u'], 'sessions, tokens, user index and denylist were all checked')
    for (const key of keys) {
      const text = [key, ...await dumpValues(redis, key)].join('\n')
      for (const token of [a.token, r1.next, r2.next, reused.token]) t.notOk(text.includes(token), `${key} does not hold a token`)
      t.ok(await redis.pttl(key) > 0, `${key} expires`)
    }
  })
})

t.test('scripts keep every key under the prefix', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const store = openStore(t, redis.url, 'tg:')
  const a = await login(store)
  await store.rotate(rotation(a.token, a.input.now + 1).input)
  await store.rotate(rotation(a.token, a.input.now + 2, { graceMs: 0 }).input)
  await store.revoke({ kind: 'jti', value: 'j', expiresAt: Date.now() + 60_000 })
  const keys = await withRedis(redis.url, (r) => r.keys('*'))
  t.ok(keys.length > 0)
  t.same(keys.filter((k) => !k.startsWith('tg:')), [])
})

t.test('state survives a new store instance on the same Redis', async (t) => {
  const prefix = sharedPrefix(t, 'restart')
  const first = openStore(t, SHARED_REDIS_URL, prefix)
  const a = await login(first)
  const r = rotation(a.token, a.input.now + 1)
  await first.rotate(r.input)
  await first.revoke({ kind: 'jti', value: 'j-restart', expiresAt: Date.now() + 60_000 })
  await first.close()

  const second = openStore(t, SHARED_REDIS_URL, prefix)
  t.same((await second.listSessions(a.sub, a.input.now + 2)).map((s) => s.sid), [a.sid])
  t.same((await second.loadDenylist(Date.now())).map((e) => e.value), ['j-restart'])
  t.equal((await second.rotate(rotation(r.next, a.input.now + 3).input)).kind, 'rotated')
  t.equal((await second.rotate(rotation(a.token, a.input.now + 4).input)).kind, 'reuse', 'reuse is still detected')
})

t.test('twenty concurrent rotations from two instances leave one live head', async (t) => {
  const prefix = sharedPrefix(t, 'race')
  const stores = [openStore(t, SHARED_REDIS_URL, prefix), openStore(t, SHARED_REDIS_URL, prefix)]
  const a = await login(stores[0] as SessionStore)
  const now = a.input.now + 1000
  const attempts = Array.from({ length: 20 }, () => rotation(a.token, now))
  const outcomes = await Promise.all(attempts.map((r, i) => (stores[i % 2] as SessionStore).rotate(r.input)))
  t.equal(outcomes.filter((o) => o.kind === 'rotated').length, 1, 'one rotated')
  t.equal(outcomes.filter((o) => o.kind === 'grace').length, 19, 'the rest got grace')
  const heads = await Promise.all(attempts.map((r) => (stores[1] as SessionStore).findByRefresh(r.input.newHash, now)))
  t.equal(heads.filter((h) => h !== null).length, 1, 'exactly one successor is current')
  const winner = attempts[outcomes.findIndex((o) => o.kind === 'rotated')]
  t.equal((await (stores[1] as SessionStore).rotate(rotation(winner?.next ?? '', now + 1).input)).kind, 'rotated')
})

t.test('a dead Redis makes every method fail with StoreUnavailableError, and the same store recovers', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const store = openStore(t, redis.url, 'tg:')
  const a = await login(store)
  await redis.stop()

  const now = Date.now()
  const calls: Array<[string, () => Promise<unknown>]> = [
    ['createSession', () => login(store)],
    ['rotate', () => store.rotate(rotation(a.token, now).input)],
    ['findByRefresh', () => store.findByRefresh(a.input.refreshHash, now)],
    ['endSession', () => store.endSession(a.sid)],
    ['endUser', () => store.endUser(a.sub, Math.floor(now / 1000), now + 1000)],
    ['listSessions', () => store.listSessions(a.sub, now)],
    ['revoke', () => store.revoke({ kind: 'jti', value: 'j', expiresAt: now + 1000 })],
    ['loadDenylist', () => store.loadDenylist(now)],
    ['subscribeDenylist', () => store.subscribeDenylist(() => {}, () => {}, () => {})],
    ['ping', () => store.ping()]
  ]
  for (const [name, call] of calls) await t.rejects(call(), StoreUnavailableError, name)

  await redis.start()
  await waitFor('the store reconnects', async () => { await store.ping(); return true })
  // The restarted Redis persisted nothing; the point is that this instance works again.
  const b = await login(store)
  t.equal((await store.rotate(rotation(b.token, b.input.now + 1).input)).kind, 'rotated')
})

t.test('a rotate refused because Redis was unreachable did not consume the token', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const gateway = await createRedisUser(redis, 'gateway')
  const store = openStore(t, gateway.url, 'tg:')
  const a = await login(store)
  const refused = rotation(a.token, a.input.now + 1)
  await gateway.lockOut()
  await t.rejects(store.rotate(refused.input), StoreUnavailableError)

  await gateway.letIn()
  await waitFor('the store reconnects', async () => { await store.ping(); return true })
  t.equal(await store.findByRefresh(refused.input.newHash, a.input.now + 2), null, 'the refused rotation left no successor')
  t.equal((await store.rotate(rotation(a.token, a.input.now + 2).input)).kind, 'rotated', 'the token was still current')
})

t.test('a rotate that timed out may still have run: retrying it inside the grace window yields that successor', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const store = openStore(t, redis.url, 'tg:')
  const a = await login(store)
  const slow = rotation(a.token, a.input.now + 1)
  await withRedis(redis.url, (admin) => admin.call('CLIENT', 'PAUSE', '1000', 'ALL'))
  await t.rejects(store.rotate(slow.input), StoreUnavailableError)

  await waitFor('Redis answers again', async () => { await store.ping(); return true })
  const retry = await store.rotate(rotation(a.token, a.input.now + 2).input)
  t.equal(retry.kind, 'grace')
  if (retry.kind === 'grace') t.equal(openSuccessor(a.token, retry.sealedCurrent), slow.next)
})

t.test('a store opened while Redis is down fails fast and connects when it comes up', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  await redis.stop()
  const store = openStore(t, redis.url, 'tg:')
  await t.rejects(store.ping(), StoreUnavailableError)
  await redis.start()
  await waitFor('the store connects', async () => { await store.ping(); return true })
  const a = await login(store)
  t.equal((await store.findByRefresh(hashRefreshToken(a.token), a.input.now))?.sid, a.sid)
})

t.test('the denylist feed reports its loss and its return', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const store = openStore(t, redis.url, 'tg:')
  const feed: boolean[] = []
  await store.subscribeDenylist(() => {}, (live) => feed.push(live), () => {})
  await redis.stop()
  await waitFor('the loss is reported', () => feed.length === 1)
  await redis.start()
  await waitFor('the return is reported', () => feed.length === 2)
  t.same(feed, [false, true])
})

t.test('options are checked when the store is built, naming the option', async (t) => {
  const good = { url: SHARED_REDIS_URL, keyPrefix: 'tg:', connectTimeoutMs: 500, commandTimeoutMs: 500 }
  t.throws(() => new RedisStore({ ...good, url: '' }), { message: 'url must be a non-empty string' })
  t.throws(() => new RedisStore({ ...good, connectTimeoutMs: 0 }), { message: 'connectTimeoutMs must be a positive number of milliseconds' })
  t.throws(() => new RedisStore({ ...good, commandTimeoutMs: Number.NaN }), { message: 'commandTimeoutMs must be a positive number of milliseconds' })
})

t.test('the denylist feed beats while Redis answers, and stops beating while the link is silent', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const proxy = await startFreezableProxy(t, { host: '127.0.0.1', port: redis.port })
  const store = new RedisStore({ url: proxy.url, keyPrefix: 'tg:', connectTimeoutMs: 300, commandTimeoutMs: 200, heartbeatIntervalMs: 20 })
  t.teardown(() => store.close())
  let beats = 0
  const feed: boolean[] = []
  await store.subscribeDenylist(() => {}, (live) => feed.push(live), () => { beats++ })
  await waitFor('beats arrive', () => beats >= 3)

  proxy.freeze()
  // the subscriber notices its PING went unanswered and drops the connection
  await waitFor('the silent link is reported as a lost feed', () => feed.length === 1)
  const frozenAt = beats
  t.same(feed, [false])
  proxy.thaw()
  await waitFor('the feed comes back', () => feed.length === 2)
  t.same(feed, [false, true])
  await waitFor('and beats again', () => beats > frozenAt)
  t.pass('beating again')
})
