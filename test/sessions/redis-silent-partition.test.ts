import t from 'tap'
import { buildGateway } from '../../src/build-gateway.js'
import type { LoadedConfig } from '../../src/config/load-config.js'
import { startFreezableProxy } from '../helpers/freezable-proxy.js'
import { login } from '../helpers/gateway.js'
import { callApi, startLifecycle } from '../helpers/lifecycle.js'
import { waitFor } from '../helpers/wait-for.js'
import { startPrivateRedis } from '../helpers/redis-server.js'

// A partition that drops packets without closing anything: the cut-off
// instance's sockets look open, nothing it hears says it is behind. Its
// mirror must stop vouching for tokens maxStaleness after Redis last proved
// the feed current, and resync by itself when the link heals.

const MAX_STALENESS = '1s'

t.test('a silently partitioned instance fails closed after maxStaleness and recovers when the link heals', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const proxy = await startFreezableProxy(t, { host: '127.0.0.1', port: redis.port })

  // B talks to Redis directly; A, built from the same config (same signing
  // key, same store), goes through the proxy.
  const b = await startLifecycle(t, {
    redis: { url: redis.url, keyPrefix: 'tg:', connectTimeout: '500ms', commandTimeout: '300ms' },
    denylist: { maxStaleness: MAX_STALENESS }
  })
  const viaProxy: LoadedConfig = { ...b.loaded, redisTarget: { ...b.loaded.redisTarget, url: proxy.url } }
  const a = await buildGateway(viaProxy)
  t.teardown(() => a.close())
  await a.ready()

  const kept = await login(b.app, 'alice')
  const doomed = await login(b.app, 'bob')
  t.equal((await callApi(a, kept.access_token)).statusCode, 200, 'A serves a valid token')
  t.equal((await callApi(a, doomed.access_token)).statusCode, 200, 'A serves the token about to be revoked')

  proxy.freeze()
  const logout = await b.app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${doomed.access_token}` } })
  t.equal(logout.statusCode, 204, 'B logs bob out')
  t.equal((await callApi(b.app, doomed.access_token)).statusCode, 401, 'B refuses the revoked token at once')

  // A never heard the revocation. It may serve from its mirror for at most
  // maxStaleness; then it must refuse, even though no socket was closed.
  await waitFor('A refuses the revoked token once its mirror is unproven', async () =>
    (await callApi(a, doomed.access_token)).statusCode === 503, 100, 50)
  const seen = b.up.seen.length
  const refused = await callApi(a, doomed.access_token)
  t.equal(refused.statusCode, 503)
  t.match(refused.json(), { statusCode: 503, code: 'TG_STORE_UNAVAILABLE' })
  t.equal((await callApi(a, kept.access_token)).statusCode, 503, 'fail closed: no token is vouched for')
  t.equal(b.up.seen.length, seen, 'nothing unverified reached the upstream')
  t.equal((await callApi(b.app, kept.access_token)).statusCode, 200, 'B, which can reach Redis, is unaffected')

  proxy.thaw()
  await waitFor('A serves again after the link heals', async () =>
    (await callApi(a, kept.access_token)).statusCode === 200, 100, 50)
  t.equal((await callApi(a, doomed.access_token)).statusCode, 401, 'A now knows of the revocation made during the partition')
  t.equal((await callApi(a, kept.access_token)).statusCode, 200, 'and still serves the valid token')
})
