import t from 'tap'
import { lifecycleAcrossInstances, mergeConfig, rateLimitAcrossInstances, startLifecycleInstances } from '../helpers/lifecycle.js'
import { startSentinelTopology } from '../helpers/redis-sentinel.js'
import { tlsTransport, uniquePrefix } from '../helpers/redis-server.js'
import { createThrowawayCa } from '../helpers/throwaway-ca.js'

// Sentinel where everything speaks TLS only and asks for client
// certificates: the primary, its replica (replicating over TLS), the three
// sentinels. A gateway given the private CA and its client certificate
// reaches the sentinels and, through them, the primary, on every connection
// (store, denylist subscriber, rate limiter); revocations are confirmed on
// the replica (waitReplicas 1, Sentinel's default). One topology for the file.

t.test('gateways on a TLS-only Sentinel topology', async (t) => {
  const ca = createThrowawayCa(t, 'sentinel')
  const topology = await startSentinelTopology(t, { transport: tlsTransport(ca, { authClients: true }) })
  const config = (label: string): Record<string, unknown> => ({
    redis: {
      sentinels: topology.sentinels,
      masterName: topology.masterName,
      tls: { ca: ca.ca, cert: ca.client.cert, key: ca.client.key },
      keyPrefix: uniquePrefix(label),
      connectTimeout: '1s',
      commandTimeout: '1500ms',
      waitTimeout: '1s'
    }
  })

  t.test('login, rotation, reuse and logout on one instance are seen by the other', async (t) => {
    const [a, b] = await startLifecycleInstances(t, 2, config('tls-sentinel-life'))
    await lifecycleAcrossInstances(t, a.app, b.app)
  })

  t.test('a rate-limited route counts across both', async (t) => {
    const [a, b] = await startLifecycleInstances(t, 2, mergeConfig(config('tls-sentinel-rl'), { rateLimit: { max: 7, timeWindow: '1m' } }))
    await rateLimitAcrossInstances(t, a.app, b.app, 7)
  })
})
