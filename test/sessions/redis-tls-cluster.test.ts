import t from 'tap'
import { lifecycleAcrossInstances, mergeConfig, rateLimitAcrossInstances, startLifecycleInstances } from '../helpers/lifecycle.js'
import { clusterGatewayConfig, startClusterTopology } from '../helpers/redis-cluster.js'
import { tlsTransport, uniquePrefix } from '../helpers/redis-server.js'
import { createThrowawayCa } from '../helpers/throwaway-ca.js'

// Redis Cluster where every node speaks TLS only and asks for client
// certificates, the cluster bus and replication included (three primaries,
// a replica each). The gateway is given one seed by name (localhost): the
// other nodes it learns from the slot table, by address, and reaches each
// with the same CA and client certificate, the denylist's sharded
// subscriber included. One cluster for the file.

t.test('gateways on a TLS-only Redis Cluster', async (t) => {
  const ca = createThrowawayCa(t, 'cluster')
  const topology = await startClusterTopology(t, { transport: tlsTransport(ca, { authClients: true }) })
  const seed = topology.seeds[0]!.replace('127.0.0.1', 'localhost')
  const config = (label: string): Record<string, unknown> => mergeConfig(clusterGatewayConfig(topology, uniquePrefix(label)), {
    redis: { cluster: [seed], tls: { ca: ca.ca, cert: ca.client.cert, key: ca.client.key } }
  })

  t.test('login, rotation, reuse and logout on one instance are seen by the other', async (t) => {
    const [a, b] = await startLifecycleInstances(t, 2, config('tls-cluster-life'))
    await lifecycleAcrossInstances(t, a.app, b.app)
  })

  t.test('a rate-limited route counts across both', async (t) => {
    const [a, b] = await startLifecycleInstances(t, 2, mergeConfig(config('tls-cluster-rl'), { rateLimit: { max: 7, timeWindow: '1m' } }))
    await rateLimitAcrossInstances(t, a.app, b.app, 7)
  })
})
