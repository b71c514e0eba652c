import t from 'tap'
import type { Test } from 'tap'
import { DenylistMirror } from '../../src/sessions/denylist-mirror.js'
import { Revoker } from '../../src/sessions/revoker.js'
import { SqliteStore } from '../../src/sessions/sqlite-store.js'
import { RedisStore } from '../../src/sessions/redis-store.js'
import { StoreUnavailableError, type DenyEntry, type SessionStore } from '../../src/sessions/session-store.js'
import { createRedisUser, SHARED_REDIS_URL, sharedPrefix, startPrivateRedis } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'

const MAX_STALENESS_MS = 5000

function openRedisStore (t: Test, url: string, keyPrefix: string): RedisStore {
  const store = new RedisStore({ url, keyPrefix, connectTimeoutMs: 500, commandTimeoutMs: 500 })
  t.teardown(() => store.close())
  return store
}

function openMirror (t: Test, store: SessionStore): DenylistMirror {
  const mirror = new DenylistMirror(store, { maxStalenessMs: MAX_STALENESS_MS, reloadRetryMs: 50 })
  t.teardown(() => mirror.stop())
  return mirror
}

function claims (over: Partial<{ jti: string, sid: string, sub: string, iat: number }> = {}): { jti: string, sid: string, sub: string, iat: number } {
  return { jti: 'j-other', sid: 's-other', sub: 'u-other', iat: 1_000, ...over }
}

t.test('an access token is revoked by its jti, its sid, or its user before a time', async (t) => {
  const mirror = new DenylistMirror(new SqliteStore({ file: ':memory:' }), { maxStalenessMs: MAX_STALENESS_MS })
  const now = Date.now()
  mirror.apply({ kind: 'jti', value: 'j-1', expiresAt: now + 1000 })
  mirror.apply({ kind: 'sid', value: 's-1', expiresAt: now + 1000 })
  mirror.apply({ kind: 'sub', value: 'u-1', before: 2_000, expiresAt: now + 1000 })
  t.ok(mirror.isRevoked(claims({ jti: 'j-1' }), now))
  t.ok(mirror.isRevoked(claims({ sid: 's-1' }), now))
  t.ok(mirror.isRevoked(claims({ sub: 'u-1', iat: 1_999 }), now), 'issued before the cut-off')
  t.notOk(mirror.isRevoked(claims({ sub: 'u-1', iat: 2_000 }), now), 'issued at or after the cut-off')
  t.ok(mirror.isRevoked(claims({ sub: 'u-1', sid: '', iat: 2_000 }), now), 'a sessionless token (an outside issuer\'s) issued in the cut-off\'s own second')
  t.notOk(mirror.isRevoked(claims({ sub: 'u-1', sid: '', iat: 2_001 }), now), 'a sessionless token issued after it')
  t.notOk(mirror.isRevoked(claims(), now), 'nothing matches')

  mirror.apply({ kind: 'sub', value: 'u-1', before: 1_500, expiresAt: now + 500 })
  t.ok(mirror.isRevoked(claims({ sub: 'u-1', iat: 1_999 }), now + 999), 'an older revocation arriving late narrows nothing')
})

t.test('expired entries are ignored and forgotten', async (t) => {
  const mirror = new DenylistMirror(new SqliteStore({ file: ':memory:' }), { maxStalenessMs: MAX_STALENESS_MS })
  const now = Date.now()
  mirror.apply({ kind: 'jti', value: 'j-1', expiresAt: now + 1000 })
  mirror.apply({ kind: 'sid', value: 's-1', expiresAt: now + 1000 })
  mirror.apply({ kind: 'sub', value: 'u-1', before: 2_000, expiresAt: now + 1000 })
  mirror.apply({ kind: 'jti', value: 'j-2', expiresAt: now + 2000 })
  t.equal(mirror.size, 4)
  t.notOk(mirror.isRevoked(claims({ jti: 'j-1', sid: 's-1', sub: 'u-1' }), now + 1000))
  t.equal(mirror.size, 1, 'a lookup drops what it finds expired')
  mirror.sweep(now + 2000)
  t.equal(mirror.size, 0, 'the sweep drops the rest')
})

t.test('on the embedded store the mirror is trusted once started and sees revocations at once', async (t) => {
  const store = new SqliteStore({ file: ':memory:' })
  t.teardown(() => store.close())
  const entry: DenyEntry = { kind: 'jti', value: 'j-before-start', expiresAt: Date.now() + 60_000 }
  await store.revoke(entry)
  const mirror = openMirror(t, store)
  t.notOk(mirror.isTrusted(Date.now()), 'not before it has loaded')
  await mirror.start()
  t.ok(mirror.isTrusted(Date.now()))
  t.ok(mirror.isRevoked(claims({ jti: 'j-before-start' }), Date.now()), 'loaded at start')
  await store.revoke({ kind: 'sid', value: 's-live', expiresAt: Date.now() + 60_000 })
  t.ok(mirror.isRevoked(claims({ sid: 's-live' }), Date.now()), 'delivered before revoke() resolved')
})

t.test('an empty sid or jti is never written nor matched: an outside issuer\'s token has no sid and may have no jti', async (t) => {
  for (const [name, store] of [['sqlite', new SqliteStore({ file: ':memory:' })], ['redis', openRedisStore(t, SHARED_REDIS_URL, sharedPrefix(t, 'mirror-empty'))]] as const) {
    if (name === 'sqlite') t.teardown(() => store.close())
    const mirror = openMirror(t, store)
    await mirror.start()
    const revoker = new Revoker(store, mirror, { sessionMs: 60_000, tokenMs: 60_000 })
    t.equal(await revoker.endSession(''), null, `${name}: no session is named ''`)
    await revoker.revokeJti('')
    await store.revoke({ kind: 'sid', value: '', expiresAt: Date.now() + 60_000 })
    mirror.apply({ kind: 'jti', value: '', expiresAt: Date.now() + 60_000 })
    t.same(await store.loadDenylist(Date.now()), [], `${name}: nothing was written`)
    t.equal(mirror.size, 0, `${name}: nothing was mirrored`)
    t.notOk(mirror.isRevoked(claims({ sid: '', jti: '' }), Date.now()), `${name}: a token without sid and jti is not refused`)
  }
})

t.test('a revocation on one Redis instance reaches the mirror of another', async (t) => {
  const prefix = sharedPrefix(t, 'mirror')
  const a = openRedisStore(t, SHARED_REDIS_URL, prefix)
  const b = openRedisStore(t, SHARED_REDIS_URL, prefix)
  await a.revoke({ kind: 'sub', value: 'u-early', before: 5_000, expiresAt: Date.now() + 60_000 })
  const mirror = openMirror(t, b)
  await mirror.start()
  t.ok(mirror.isTrusted(Date.now()))
  t.ok(mirror.isRevoked(claims({ sub: 'u-early', iat: 4_999 }), Date.now()), 'loaded at start')

  await a.revoke({ kind: 'jti', value: 'j-late', expiresAt: Date.now() + 60_000 })
  await waitFor('B sees the revocation', () => mirror.isRevoked(claims({ jti: 'j-late' }), Date.now()))
  t.pass('B saw it')
})

t.test('a lost feed is trusted for maxStaleness, then not, and resyncs with what it missed', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const instanceB = await createRedisUser(redis, 'instance-b')
  const a = openRedisStore(t, redis.url, 'tg:')
  const b = openRedisStore(t, instanceB.url, 'tg:')
  const mirror = openMirror(t, b)
  await mirror.start()

  await instanceB.lockOut()
  await waitFor('B notices the loss', () => !mirror.inSync)
  const lostAt = Date.now()
  t.ok(mirror.isTrusted(lostAt), 'still trusted just after the loss')
  t.notOk(mirror.isTrusted(lostAt + MAX_STALENESS_MS + 1000), 'not once maxStaleness has passed')

  await a.revoke({ kind: 'sid', value: 's-missed', expiresAt: Date.now() + 60_000 })
  t.notOk(mirror.isRevoked(claims({ sid: 's-missed' }), Date.now()), 'B could not hear it')

  await instanceB.letIn()
  await waitFor('B resyncs', () => mirror.inSync)
  t.ok(mirror.isTrusted(Date.now()))
  t.ok(mirror.isRevoked(claims({ sid: 's-missed' }), Date.now()), 'the missed entry came with the reload')
})

t.test('Redis stopped and restarted: untrusted after maxStaleness, trusted again after it returns', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const store = openRedisStore(t, redis.url, 'tg:')
  await store.revoke({ kind: 'jti', value: 'j-kept', expiresAt: Date.now() + 60_000 })
  const mirror = openMirror(t, store)
  await mirror.start()

  await redis.stop()
  await waitFor('the loss is noticed', () => !mirror.inSync)
  t.ok(mirror.isTrusted(Date.now()), 'within maxStaleness')
  t.notOk(mirror.isTrusted(Date.now() + MAX_STALENESS_MS + 1000), 'not past it')
  t.ok(mirror.isRevoked(claims({ jti: 'j-kept' }), Date.now()), 'the mirror keeps serving what it holds')

  await redis.start()
  await waitFor('trusted again', () => mirror.inSync && mirror.isTrusted(Date.now()))
  t.ok(mirror.isRevoked(claims({ jti: 'j-kept' }), Date.now()), 'a reload adds, never forgets')
})

t.test('a mirror whose first load fails is untrusted until Redis comes up', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  await redis.stop()
  const store = openRedisStore(t, redis.url, 'tg:')
  const mirror = openMirror(t, store)
  await t.rejects(mirror.start(), StoreUnavailableError)
  t.notOk(mirror.isTrusted(Date.now()))

  await redis.start()
  await waitFor('trusted once Redis is up', () => mirror.isTrusted(Date.now()))
  await store.revoke({ kind: 'jti', value: 'j-after', expiresAt: Date.now() + 60_000 })
  await waitFor('and fed', () => mirror.isRevoked(claims({ jti: 'j-after' }), Date.now()))
  t.pass('fed')
})

t.test('a live feed is trusted only for maxStaleness after its last beat', async (t) => {
  const silent = new SqliteStore({ file: ':memory:', feedIntervalMs: 3_600_000 })
  t.teardown(() => silent.close())
  const mirror = openMirror(t, silent)
  const startedAt = Date.now()
  await mirror.start()
  t.ok(mirror.inSync, 'the feed is live and loaded')
  t.ok(mirror.isTrusted(Date.now()), 'the load is a proof')
  t.notOk(mirror.isTrusted(startedAt + MAX_STALENESS_MS + 1000), 'without a beat, a live-looking feed is not trusted past maxStaleness')

  const beating = new SqliteStore({ file: ':memory:', feedIntervalMs: 20 })
  t.teardown(() => beating.close())
  const fed = new DenylistMirror(beating, { maxStalenessMs: 200 })
  t.teardown(() => fed.stop())
  await fed.start()
  const loadedAt = Date.now()
  await waitFor('beats carry the proof forward', () => fed.isTrusted(loadedAt + 400))
  t.pass('still trusted past the first window')
})
