import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Test } from 'tap'
import { login, PASSWORDS } from '../helpers/gateway.js'
import { callApi, decodeJwt, refreshFollowingRetryAfter, refreshWithBody, startLifecycle, type LifecycleGateway } from '../helpers/lifecycle.js'
import { startClusterTopology } from '../helpers/redis-cluster.js'
import { startSentinelTopology } from '../helpers/redis-sentinel.js'
import { uniquePrefix } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'

// The Redis node the denylist mirror listens to goes silent without closing
// anything: kill -STOP of the Sentinel primary, and of the Cluster primary
// that owns the {deny} slot. The kernel keeps its sockets open (no FIN, no
// RST) and nothing on them is answered, so no socket event tells the
// gateway. Its mirror must stop vouching for tokens maxStaleness after the
// last heartbeat, and serve again by itself once a replica has taken over,
// with the node still frozen; a revocation made before stays in force.

const MAX_STALENESS = '1s'
// A failover only after the mirror has failed closed, so that the 503 window
// is seconds wide even on a loaded machine.
const FAILOVER_AFTER_MS = 3000

const loginRes = (app: FastifyInstance, username: keyof typeof PASSWORDS): Promise<LightMyRequestResponse> =>
  app.inject({ method: 'POST', url: '/auth/login', payload: { username, password: PASSWORDS[username], transport: 'body' } })

interface SilentNode {
  /** kill -STOP of the node the mirror listens to; resolves with its port */
  freeze (): Promise<number>
  /** the port of the primary serving the denylist now */
  primary (): Promise<number>
  thaw (): void
  /** a session whose refresh needs the frozen node (any on Sentinel; on Cluster one whose slot it serves) */
  sessionOnFrozen (app: FastifyInstance): Promise<{ refresh_token?: string }>
}

async function provesSilence (t: Test, gw: LifecycleGateway, node: SilentNode): Promise<void> {
  const { app, up } = gw
  const alice = await login(app, 'alice')
  const bob = await login(app, 'bob')
  const onFrozen = await node.sessionOnFrozen(app)
  t.equal((await callApi(app, alice.access_token)).statusCode, 200, 'before: a logged-in user is served')
  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${bob.access_token}` } })
  t.equal(out.statusCode, 204, 'bob logs out before the silence, confirmed by a replica')
  t.equal((await callApi(app, bob.access_token)).statusCode, 401, 'and is refused')

  const frozenPort = await node.freeze()
  t.teardown(() => node.thaw())
  await waitFor('the protected route answers 503 once the mirror is unproven', async () =>
    (await callApi(app, alice.access_token)).statusCode === 503, 100, 50)
  const seen = up.seen.length
  const refused = await callApi(app, alice.access_token)
  t.equal(refused.statusCode, 503, 'fail closed: the mirror cannot prove it is current')
  t.match(refused.json(), { statusCode: 503, code: 'TG_STORE_UNAVAILABLE' })
  t.match(refused.headers['retry-after'], /^\d+$/, 'and says when to retry')
  t.not((await callApi(app, bob.access_token)).statusCode, 200, 'the revoked token is not served either')
  t.equal(up.seen.length, seen, 'nothing unverified reached the upstream')

  const refresh = await refreshWithBody(app, onFrozen.refresh_token ?? '')
  t.equal(refresh.statusCode, 503, 'a refresh that needs the silent node answers 503')
  t.match(refresh.headers['retry-after'], /^\d+$/)
  const signIn = await loginRes(app, 'carol')
  t.ok(signIn.statusCode === 503 || signIn.statusCode === 200, `login answers 503 or 200, never 500: ${signIn.statusCode}`)

  // Recovery by itself, the node still frozen: a replica takes over, the
  // gateway finds it, resubscribes and reloads.
  await waitFor('a replica takes over the denylist', async () => (await node.primary()) !== frozenPort, 300, 50)
  await waitFor('the gateway serves again without a restart', async () =>
    (await callApi(app, alice.access_token)).statusCode === 200, 300, 50)
  t.equal((await callApi(app, alice.access_token)).statusCode, 200, 'after: the same token is served again')
  t.equal((await callApi(app, bob.access_token)).statusCode, 401, 'the token revoked before the silence stays refused')
  t.equal((await refreshWithBody(app, bob.refresh_token ?? '')).statusCode, 401, 'and so does its refresh token')
  // A login waits for a replica like a revocation: the promoted node has none
  // (Sentinel, and the Cluster shard that lost its primary) until the frozen
  // one is back, so it may answer 503 until then, never 500.
  const onNewPrimary = await loginRes(app, 'carol')
  t.ok(onNewPrimary.statusCode === 200 || onNewPrimary.statusCode === 503, `a login on the new primary answers 200 or 503: ${onNewPrimary.statusCode}`)

  // The frozen node wakes up, is demoted to a replica of the new primary,
  // and revocations and rotations can be confirmed on a replica again.
  node.thaw()
  await waitFor('a fresh session refreshes once the topology has a replica again', async () => {
    const res = await loginRes(app, 'carol')
    if (res.statusCode !== 200) return false
    return (await refreshWithBody(app, (res.json() as { refresh_token: string }).refresh_token)).statusCode === 200
  }, 300, 50)
  t.equal((await callApi(app, bob.access_token)).statusCode, 401, 'the old primary back as a replica brings no revocation back')
  // The demoted node may still be catching up, so a rotation's WAIT can time
  // out (503, the rotation may have landed); a client retries after
  // Retry-After with the same token, and the grace window answers it.
  const rotated = await refreshFollowingRetryAfter(app, alice.refresh_token ?? '')
  t.equal(rotated.last.statusCode, 200, `a session from before the silence still refreshes: ${rotated.last.body}`)
  t.ok(rotated.before.every((r) => r.statusCode === 503 && /^\d+$/.test(String(r.headers['retry-after']))), 'any answer before it was a 503 with Retry-After')
}

t.test('kill -STOP of the Sentinel primary: fail closed after maxStaleness, recover on the promoted replica', async (t) => {
  const topology = await startSentinelTopology(t, { downAfterMs: FAILOVER_AFTER_MS })
  const gw = await startLifecycle(t, {
    redis: { sentinels: topology.sentinels, masterName: topology.masterName, keyPrefix: uniquePrefix('silent-sentinel'), connectTimeout: '500ms', commandTimeout: '500ms' },
    denylist: { maxStaleness: MAX_STALENESS }
  })
  await provesSilence(t, gw, {
    freeze: () => topology.freezePrimary(),
    primary: () => topology.primaryPort(),
    thaw: () => topology.thawFrozen(),
    sessionOnFrozen: (app) => login(app, 'carol')
  })
})

t.test('kill -STOP of the Cluster primary owning {deny}: fail closed after maxStaleness, recover on the promoted replica', async (t) => {
  const topology = await startClusterTopology(t, { nodeTimeoutMs: FAILOVER_AFTER_MS })
  const prefix = uniquePrefix('silent-cluster')
  const denyKey = `${prefix}{deny}`
  const gw = await startLifecycle(t, {
    redis: { cluster: topology.seeds, keyPrefix: prefix, connectTimeout: '1s', commandTimeout: '1500ms', waitTimeout: '1s' },
    denylist: { maxStaleness: MAX_STALENESS }
  })
  await provesSilence(t, gw, {
    freeze: () => topology.freezePrimaryOf(denyKey),
    primary: () => topology.primaryOf(denyKey),
    thaw: () => topology.thawFrozen(),
    sessionOnFrozen: async (app) => {
      const denyPrimary = await topology.primaryOf(denyKey)
      for (;;) {
        const s = await login(app, 'carol')
        if (await topology.primaryOf(`${prefix}{${decodeJwt(s.access_token).payload.sid as string}}s`) === denyPrimary) return s
      }
    }
  })
})
