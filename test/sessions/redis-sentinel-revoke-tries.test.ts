import t from 'tap'
import { callApi, confirmedLogout, refreshWithBody, startLifecycleInstances } from '../helpers/lifecycle.js'
import { startSentinelTopology, type SentinelTopology } from '../helpers/redis-sentinel.js'
import { uniquePrefix } from '../helpers/redis-server.js'

// The proof that WAIT keeps a revocation through a Sentinel failover: a
// logout confirmed to the client, then at once kill -9 of the primary,
// REVOKE_TRIES times, on one topology: each try kills the primary and starts
// the node again as a replica of the promoted one (a failover and a resync,
// a few seconds) instead of a new topology.

const REVOKE_TRIES = Number(process.env.TG_SENTINEL_REVOKE_TRIES ?? 20)
// every try is a failover and a resync: more than the default file timeout
t.setTimeout(Math.max(120_000, REVOKE_TRIES * 12_000))

function sentinelConfig (topology: SentinelTopology, keyPrefix: string): Record<string, unknown> {
  return {
    redis: { sentinels: topology.sentinels, masterName: topology.masterName, keyPrefix, connectTimeout: '1s', commandTimeout: '1500ms', waitTimeout: '1s' },
    denylist: { maxStaleness: '15s' }
  }
}

t.test(`${REVOKE_TRIES} confirmed logouts, each followed at once by kill -9 of the Sentinel primary: none lost`, async (t) => {
  const topology = await startSentinelTopology(t)
  const prefix = uniquePrefix('sentinel-tries')
  const [a, b] = await startLifecycleInstances(t, 2, sentinelConfig(topology, prefix))
  let lost = 0
  for (let i = 0; i < REVOKE_TRIES; i++) {
    const started = Date.now()
    const { session: s, unconfirmed } = await confirmedLogout(a!.app, b!.app, 'alice')
    const loggedOut = Date.now()
    await topology.killPrimary()
    const failedOver = Date.now()
    // a new instance, started after the failover, knows only what Redis kept
    const [fresh] = await startLifecycleInstances(t, 1, sentinelConfig(topology, prefix))
    const access = (await callApi(fresh!.app, s.access_token)).statusCode
    const refresh = (await refreshWithBody(fresh!.app, s.refresh_token ?? '')).statusCode
    if (access !== 401 || refresh !== 401) {
      lost++
      t.fail(`try ${i}: after the failover the access token answers ${access}, the refresh token ${refresh}`)
    }
    await fresh!.app.close()
    const checked = Date.now()
    await topology.restoreKilled()
    t.comment(`try ${i}: login+logout ${loggedOut - started} ms (${unconfirmed} unconfirmed first), failover ${failedOver - loggedOut} ms, check ${checked - failedOver} ms, restore ${Date.now() - checked} ms`)
  }
  t.equal(lost, 0, `no revocation lost in ${REVOKE_TRIES} tries`)
})
