import t from 'tap'
import { lifecycleAcrossInstances, mergeConfig, startLifecycleInstances } from '../helpers/lifecycle.js'
import { clusterGatewayConfig, startClusterTopology } from '../helpers/redis-cluster.js'
import { tlsTransport, uniquePrefix } from '../helpers/redis-server.js'
import { createThrowawayCa } from '../helpers/throwaway-ca.js'

// A TLS Redis Cluster as managed offerings run one: every certificate names
// the nodes by DNS name only, and the slot table names them by hostname
// (cluster-preferred-endpoint-type hostname). The gateway must connect by
// those names, the seed included (ioredis would connect to the address a
// seed's name resolves to, and the certificate names no address), so that
// each certificate is checked against the name.

t.test('a TLS cluster whose certificates name its nodes by DNS name only', async (t) => {
  const ca = createThrowawayCa(t, 'cluster-dns', { serverNames: ['DNS:localhost'] })
  const topology = await startClusterTopology(t, { transport: tlsTransport(ca), announceHostname: 'localhost' })
  const seed = topology.seeds[0]!.replace('127.0.0.1', 'localhost')
  const [a, b] = await startLifecycleInstances(t, 2, mergeConfig(clusterGatewayConfig(topology, uniquePrefix('tls-cluster-dns')), {
    redis: { cluster: [seed], tls: { ca: ca.ca } }
  }))
  await lifecycleAcrossInstances(t, a.app, b.app)
})
