import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { PASSWORDS, startGateway, type ConfigOverrides } from '../helpers/gateway.js'
import { lifecycleAcrossInstances, mergeConfig, rateLimitAcrossInstances, startLifecycleInstances } from '../helpers/lifecycle.js'
import { logSink } from '../helpers/log-sink.js'
import { createRedisUser, startPrivateRedis, tlsTransport, uniquePrefix, type PrivateRedis } from '../helpers/redis-server.js'
import { createThrowawayCa } from '../helpers/throwaway-ca.js'
import { waitFor } from '../helpers/wait-for.js'

// One Redis node that speaks TLS only (--port 0), its certificate signed by a
// private CA made for this file: gateways given that CA (redis.tls.ca) work
// as on plain Redis, every connection included (store, denylist subscriber,
// rate limiter, login throttle); a gateway that cannot prove Redis's
// certificate, or whose credentials or client certificate Redis refuses,
// answers 503 and says why in its log, and never crashes.

const ca = createThrowawayCa(t, 'single')

/** redis config for `redis` as the ACL user `user`, TLS with `tls`. */
function redisConfig (redis: PrivateRedis, user: { username: string, password: string }, tls: Record<string, string>, label: string): ConfigOverrides {
  return { redis: { url: redis.url, username: user.username, password: user.password, tls, keyPrefix: uniquePrefix(label), connectTimeout: '500ms', commandTimeout: '500ms' } }
}

async function startTlsRedis (t: Test, authClients = false): Promise<PrivateRedis> {
  const redis = await startPrivateRedis({ transport: tlsTransport(ca, { authClients }) })
  t.teardown(redis.stop)
  return redis
}

/** A gateway that cannot use Redis: 503s where Redis is needed, a log line that names `why`, and the process still answering. */
async function refusedByRedis (t: Test, overrides: ConfigOverrides, why: RegExp): Promise<void> {
  const { lines, stream } = logSink()
  const { app } = await startGateway(t, overrides, { logger: { level: 'info', stream } })
  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503, '/readyz says not ready')
  t.equal(ready.json().checks.store, 'unavailable')
  const login = await loginRes(app)
  t.equal(login.statusCode, 503, 'login is refused with a 503')
  t.equal(login.json().code, 'TG_STORE_UNAVAILABLE')
  await waitFor(`the log says ${why}`, () => lines.some((l) => why.test(String(l.msg))))
  t.notOk(lines.some((l) => typeof l.level === 'number' && l.level >= 60), 'nothing fatal')
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'the gateway is alive')
}

function loginRes (app: FastifyInstance): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice, transport: 'body' } })
}

t.test('two gateways on a TLS-only Redis as an ACL user, trusting its private CA: sessions, revocations and rate limits are shared', async (t) => {
  const redis = await startTlsRedis(t)
  const user = await createRedisUser(redis, 'tokengate')
  t.test('login, rotation, reuse and logout on one are seen by the other', async (t) => {
    const [a, b] = await startLifecycleInstances(t, 2, redisConfig(redis, user, { ca: ca.ca }, 'tls-life'))
    // the denylist reaches b by pub/sub, on its subscriber connection over TLS
    await lifecycleAcrossInstances(t, a.app, b.app)
  })
  t.test('a rate-limited route counts across both', async (t) => {
    const [a, b] = await startLifecycleInstances(t, 2, mergeConfig(redisConfig(redis, user, { ca: ca.ca }, 'tls-rl'), { rateLimit: { max: 7, timeWindow: '1m' } }))
    await rateLimitAcrossInstances(t, a.app, b.app, 7)
  })
})

t.test('a gateway that trusts another CA does not talk to Redis: 503, and a log line naming redis.tls.ca', async (t) => {
  const redis = await startTlsRedis(t)
  const user = await createRedisUser(redis, 'tokengate')
  const other = createThrowawayCa(t, 'other')
  await refusedByRedis(t, redisConfig(redis, user, { ca: other.ca }, 'tls-wrong-ca'), /certificate is not signed by a CA the gateway trusts: name that CA in redis\.tls\.ca/)
  t.test('nor does one that trusts only the public CAs (tls: true)', async (t) => {
    await refusedByRedis(t, mergeConfig(redisConfig(redis, user, {}, 'tls-public'), { redis: { tls: true } }), /not signed by a CA the gateway trusts/)
  })
})

t.test('the certificate is checked against redis.tls.servername when it is set', async (t) => {
  const redis = await startTlsRedis(t)
  const user = await createRedisUser(redis, 'tokengate')
  const { app } = await startGateway(t, redisConfig(redis, user, { ca: ca.ca, servername: 'localhost' }, 'tls-sni'))
  t.equal((await loginRes(app)).statusCode, 200, 'a name the certificate carries')
  await refusedByRedis(t, redisConfig(redis, user, { ca: ca.ca, servername: 'redis.example.com' }, 'tls-sni-bad'), /does not carry the name connected to: .*redis\.tls\.servername/)
})

t.test('a wrong password is refused over TLS: 503, and a log line naming the credentials', async (t) => {
  const redis = await startTlsRedis(t)
  const user = await createRedisUser(redis, 'tokengate')
  await refusedByRedis(t, redisConfig(redis, { ...user, password: 'not-the-password' }, { ca: ca.ca }, 'tls-wrong-password'), /refused the credentials: check redis\.username and redis\.password/)
})

t.test('a Redis that requires client certificates lets in the gateway with redis.tls.cert and key, and no other', async (t) => {
  const redis = await startTlsRedis(t, true)
  const user = await createRedisUser(redis, 'tokengate')
  const [a, b] = await startLifecycleInstances(t, 2, redisConfig(redis, user, { ca: ca.ca, cert: ca.client.cert, key: ca.client.key }, 'tls-client-cert'))
  t.test('with its certificate: the whole lifecycle', (t) => lifecycleAcrossInstances(t, a.app, b.app))
  t.test('without one: refused', (t) => refusedByRedis(t, redisConfig(redis, user, { ca: ca.ca }, 'tls-no-client-cert'), /Redis connection failed/))
  t.test('with a certificate of another CA: refused', async (t) => {
    const other = createThrowawayCa(t, 'other-client')
    await refusedByRedis(t, redisConfig(redis, user, { ca: ca.ca, cert: other.client.cert, key: other.client.key }, 'tls-foreign-cert'), /refused the TLS handshake: .*redis\.tls\.cert/)
  })
})
