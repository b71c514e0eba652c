import { randomBytes } from 'node:crypto'
import t from 'tap'
import { hashRefreshToken, sidOfRefresh } from '../../src/tokens/refresh-token.js'
import { RedisStore } from '../../src/sessions/redis-store.js'
import { callApi, refreshWithBody, startLifecycle, storeConfig } from '../helpers/lifecycle.js'
import { sharedPrefix, SHARED_REDIS_URL, withRedis } from '../helpers/redis-server.js'

// Upgrading from the version whose refresh tokens were a bare 43-character
// secret (before they carried their sid, for Redis Cluster): what a user
// holding one of those sees on each store, and that no revocation written
// before the upgrade is forgotten.

const legacyToken = (): string => randomBytes(32).toString('base64url')

t.test('embedded store: a token from before keeps working, and its next refresh hands out the new format', async (t) => {
  const { app } = await startLifecycle(t, storeConfig(t, 'sqlite', 'upgrade'))
  const token = legacyToken()
  const sid = randomBytes(16).toString('base64url')
  const now = Date.now()
  // what the earlier version wrote at login: the bare hash of a bare token
  await app.store.createSession({ sid, sub: 'u-1', refreshHash: hashRefreshToken(token), now, expiresAt: now + 3_600_000, idleTimeoutMs: 3_600_000, userAgent: 'old', address: '127.0.0.1' })
  const res = await refreshWithBody(app, token)
  t.equal(res.statusCode, 200, res.body)
  const next = res.json() as { access_token: string, refresh_token: string }
  t.equal(sidOfRefresh(next.refresh_token), sid, 'the successor carries the session id')
  t.equal((await callApi(app, next.access_token)).statusCode, 200)
  t.equal((await refreshWithBody(app, next.refresh_token)).statusCode, 200, 'and rotates in turn')
  t.equal((await refreshWithBody(app, token)).statusCode, 401, 'the old token, presented again later, is reuse')
  t.equal((await callApi(app, next.access_token)).statusCode, 401, 'which ends the session, as before')
})

t.test('Redis store: a token from before is refused (log in again), revocations from before still hold', async (t) => {
  const prefix = sharedPrefix(t, 'upgrade')
  const { app } = await startLifecycle(t, { redis: { url: SHARED_REDIS_URL, keyPrefix: prefix } })
  const token = legacyToken()
  const hash = hashRefreshToken(token)
  const sid = randomBytes(16).toString('base64url')
  const expiresAt = Date.now() + 3_600_000
  // the earlier version's layout: P s:<sid>, P r:<hash>, P deny, P deny:before
  await withRedis(SHARED_REDIS_URL, async (r) => {
    await r.hset(`${prefix}s:${sid}`, { sub: 'u-1', createdAt: Date.now(), lastUsedAt: Date.now(), expiresAt, idleMs: 3_600_000, userAgent: 'old', address: '127.0.0.1', current: hash })
    await r.hset(`${prefix}r:${hash}`, { sid })
    await r.zadd(`${prefix}deny`, expiresAt, 'jti:revoked-before', expiresAt, 'sub:u-2')
    await r.hset(`${prefix}deny:before`, 'u-2', '1000')
    for (const key of [`${prefix}s:${sid}`, `${prefix}r:${hash}`, `${prefix}deny`, `${prefix}deny:before`]) await r.pexpireat(key, expiresAt)
  })
  const res = await refreshWithBody(app, token)
  t.equal(res.statusCode, 401, 'the old refresh token answers invalid_grant')
  t.match(res.json(), { code: 'TG_INVALID_GRANT' })

  const store = new RedisStore({ url: SHARED_REDIS_URL, keyPrefix: prefix, connectTimeoutMs: 1000, commandTimeoutMs: 1000 })
  t.teardown(() => store.close())
  const loaded = await store.loadDenylist(Date.now())
  t.ok(loaded.some((e) => e.kind === 'jti' && e.value === 'revoked-before'), 'a token revoked before the upgrade stays revoked')
  t.ok(loaded.some((e) => e.kind === 'sub' && e.value === 'u-2' && e.before === 1000), 'so does a user cut-off')
})
