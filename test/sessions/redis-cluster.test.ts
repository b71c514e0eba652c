import t from 'tap'
import type { Test } from 'tap'
import { parseNode, type RedisNode } from '../../src/config/redis-config.js'
import { DenylistMirror } from '../../src/sessions/denylist-mirror.js'
import { RedisStore } from '../../src/sessions/redis-store.js'
import { startClusterTopology, type ClusterTopology } from '../helpers/redis-cluster.js'
import { uniquePrefix } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'
import { login, storeContract } from '../helpers/store-contract.js'

// The Redis store on a Redis Cluster of three primaries with a replica each:
// the whole store contract (every script in one slot, or Cluster refuses
// it), with revocations confirmed by WAIT on the primary that wrote them.
// One cluster for the file.

function nodes (topology: ClusterTopology): RedisNode[] {
  return topology.seeds.map((s) => parseNode(s)).filter((n): n is RedisNode => n !== null)
}

export function openClusterStore (t: Test, topology: ClusterTopology, keyPrefix: string, waitReplicas = 1): RedisStore {
  const store = new RedisStore({
    target: { cluster: nodes(topology) },
    keyPrefix,
    connectTimeoutMs: 2000,
    commandTimeoutMs: 2000,
    heartbeatIntervalMs: 100,
    waitReplicas,
    waitTimeoutMs: 1000
  })
  t.teardown(() => store.close())
  return store
}

t.test('Redis Cluster', async (t) => {
  const topology = await startClusterTopology(t)

  t.test('the store contract holds on Cluster, with WAIT on every revocation', async (t) => {
    storeContract(t, async (t) => openClusterStore(t, topology, uniquePrefix('cluster')))
  })

  t.test('sessions spread over the shards, and logout-all reaches each of them', async (t) => {
    const prefix = uniquePrefix('spread')
    const store = openClusterStore(t, topology, prefix)
    const first = await login(store)
    const sessions = [first]
    for (let i = 0; i < 11; i++) sessions.push(await login(store, { sub: first.sub }))
    const primaries = new Set(await Promise.all(sessions.map((s) => topology.primaryOf(`${prefix}{${s.sid}}s`))))
    t.ok(primaries.size > 1, `a user's sessions live on ${primaries.size} primaries`)
    t.equal((await store.listSessions(first.sub, Date.now())).length, 12)
    const entries = await store.endUser(first.sub, Math.floor(Date.now() / 1000), Date.now() + 60_000)
    t.same(entries.filter((e) => e.kind === 'sid').map((e) => e.value).sort(), sessions.map((s) => s.sid).sort())
    t.same(await store.listSessions(first.sub, Date.now()), [])
  })

  t.test('the mirror is loaded and fed by sharded pub/sub, and its heartbeat proves it current', async (t) => {
    const prefix = uniquePrefix('mirror')
    const writer = openClusterStore(t, topology, prefix)
    await writer.revoke({ kind: 'jti', value: 'before-start', expiresAt: Date.now() + 60_000 })
    const reader = openClusterStore(t, topology, prefix)
    const mirror = new DenylistMirror(reader, { maxStalenessMs: 2000, reloadRetryMs: 50 })
    t.teardown(() => mirror.stop())
    await mirror.start()
    const claims = (jti: string): { jti: string, sid: string, sub: string, iat: number } => ({ jti, sid: 's', sub: 'u', iat: 0 })
    t.ok(mirror.isRevoked(claims('before-start'), Date.now()), 'loaded at start')
    await writer.revoke({ kind: 'jti', value: 'after-start', expiresAt: Date.now() + 60_000 })
    await waitFor('the revocation reaches the other instance', () => mirror.isRevoked(claims('after-start'), Date.now()), 200, 25)
    // beats every 100 ms keep it trusted well past maxStaleness
    const since = Date.now()
    await waitFor('three staleness windows have passed', () => Date.now() - since > 3 * 2000, 400, 50)
    t.ok(mirror.isTrusted(Date.now()), 'the heartbeat kept the mirror trusted')
  })

  t.test('a resharding that moves the denylist\'s slot: the mirror follows it and misses nothing', async (t) => {
    const prefix = uniquePrefix('reshard')
    const writer = openClusterStore(t, topology, prefix)
    const reader = openClusterStore(t, topology, prefix)
    const mirror = new DenylistMirror(reader, { maxStalenessMs: 5000, reloadRetryMs: 50 })
    t.teardown(() => mirror.stop())
    await mirror.start()
    const claims = (sid: string): { jti: string, sid: string, sub: string, iat: number } => ({ jti: 'j', sid, sub: 'u', iat: 0 })
    await writer.revoke({ kind: 'sid', value: 'before-move', expiresAt: Date.now() + 60_000 })
    await waitFor('fed before the move', () => mirror.isRevoked(claims('before-move'), Date.now()), 200, 25)

    const from = await topology.primaryOf(`${prefix}{deny}`)
    const to = await topology.moveSlotOf(`${prefix}{deny}`)
    t.not(to, from, 'the denylist slot lives on another primary now')
    // the writer follows the MOVED; the revocation lands on the new owner
    await waitFor('a revocation after the move is written', async () => {
      await writer.revoke({ kind: 'sid', value: 'after-move', expiresAt: Date.now() + 60_000 })
      return true
    }, 100, 100)
    await waitFor('the mirror hears of it from the new owner (or reloads it)', () => mirror.isRevoked(claims('after-move'), Date.now()), 400, 50)
    t.ok(mirror.isRevoked(claims('before-move'), Date.now()), 'what it held is still held')
    await writer.revoke({ kind: 'sid', value: 'later', expiresAt: Date.now() + 60_000 })
    await waitFor('and it is fed live again', () => mirror.isRevoked(claims('later'), Date.now()), 200, 25)
    await waitFor('trusted again', () => mirror.inSync && mirror.isTrusted(Date.now()), 200, 50)
    t.pass('the mirror is in sync on the new owner')
  })
})
