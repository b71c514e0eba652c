import t from 'tap'
import type { Test } from 'tap'
import { parseNode, type RedisNode } from '../../src/config/redis-config.js'
import { DenylistMirror } from '../../src/sessions/denylist-mirror.js'
import { RedisStore } from '../../src/sessions/redis-store.js'
import { StoreUnconfirmedError } from '../../src/sessions/session-store.js'
import { hashRefreshToken } from '../../src/tokens/refresh-token.js'
import { startSentinelTopology, type SentinelTopology } from '../helpers/redis-sentinel.js'
import { uniquePrefix } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'
import { login, rotation, storeContract } from '../helpers/store-contract.js'

// The Redis store through Sentinel: the whole store contract, then a kill -9
// of the primary. One topology for the file (a failover takes seconds).

function nodes (topology: SentinelTopology): RedisNode[] {
  return topology.sentinels.map((s) => parseNode(s)).filter((n): n is RedisNode => n !== null)
}

function openStore (t: Test, topology: SentinelTopology, keyPrefix: string, waitReplicas?: number): RedisStore {
  const store = new RedisStore({
    target: { sentinels: nodes(topology), masterName: topology.masterName },
    keyPrefix,
    connectTimeoutMs: 1000,
    commandTimeoutMs: 1000,
    ...(waitReplicas === undefined ? {} : { waitReplicas, waitTimeoutMs: 500 })
  })
  t.teardown(() => store.close())
  return store
}

t.test('Sentinel', async (t) => {
  const topology = await startSentinelTopology(t)

  t.test('the store contract holds through Sentinel', async (t) => {
    storeContract(t, async (t) => openStore(t, topology, uniquePrefix('sentinel')))
  })

  t.test('kill -9 of the primary: what was confirmed survives, and the store and mirror recover by themselves', async (t) => {
    const store = openStore(t, topology, 'tg:', 1)
    const mirror = new DenylistMirror(store, { maxStalenessMs: 5000, reloadRetryMs: 50 })
    t.teardown(() => mirror.stop())
    await mirror.start()

    const kept = await login(store)
    const ended = await login(store)
    const rotated = await login(store)
    const { input } = rotation(rotated.token, Date.now())
    t.match(await store.rotate(input), { kind: 'rotated' })
    await store.revoke({ kind: 'jti', value: 'j-confirmed', expiresAt: Date.now() + 60_000 })
    t.ok(await store.endSession(ended.sid), 'logout confirmed')

    const before = await topology.primaryPort()
    await topology.killPrimary()
    t.not(await topology.primaryPort(), before, 'a replica was promoted')

    await waitFor('the store reaches the new primary', async () => { await store.ping(); return true }, 400, 50)
    // The new primary has no replica left (the old primary is dead): a
    // revocation cannot be confirmed, so it is refused, never falsely "done".
    await t.rejects(store.revoke({ kind: 'jti', value: 'j-unconfirmed', expiresAt: Date.now() + 60_000 }), StoreUnconfirmedError)

    const checker = openStore(t, topology, 'tg:', 0)
    const denied = await checker.loadDenylist(Date.now())
    t.ok(denied.some((e) => e.kind === 'jti' && e.value === 'j-confirmed'), 'the confirmed revocation survived')
    t.equal(await checker.findByRefresh(hashRefreshToken(ended.token), Date.now()), null, 'the ended session stays ended')
    t.match(await checker.rotate(rotation(rotated.token, Date.now(), { graceMs: 0 }).input), { kind: 'reuse' }, 'the rotated-out token stays dead')
    t.equal((await checker.findByRefresh(hashRefreshToken(kept.token), Date.now()))?.sid, kept.sid, 'a session from before the failover is still live')

    await waitFor('the mirror is in sync again', () => mirror.inSync && mirror.isTrusted(Date.now()), 400, 50)
    await checker.revoke({ kind: 'sid', value: 's-after', expiresAt: Date.now() + 60_000 })
    await waitFor('revocations after the failover reach the mirror', () => mirror.isRevoked({ jti: 'x', sid: 's-after', sub: 'u', iat: 0 }, Date.now()), 200, 25)
    t.pass('fed again')
  })
})
