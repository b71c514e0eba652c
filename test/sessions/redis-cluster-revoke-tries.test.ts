import t from 'tap'
import { callApi, confirmedLogout, decodeJwt, refreshWithBody, startLifecycleInstances } from '../helpers/lifecycle.js'
import { clusterGatewayConfig, startClusterTopology } from '../helpers/redis-cluster.js'
import { uniquePrefix } from '../helpers/redis-server.js'

// The proof that WAIT keeps a revocation through a failover: a logout
// confirmed to the client, then at once kill -9 of the primary that holds
// it, REVOKE_TRIES times, on one cluster. Each try kills the node and starts
// it again (it rejoins as a replica of the node that took its slots): a
// failover and a resync, a few seconds, instead of a new cluster. Even tries
// kill the denylist's primary, odd ones the session's: a logout writes to
// both, each write confirmed by WAIT on its own shard.

const REVOKE_TRIES = Number(process.env.TG_CLUSTER_REVOKE_TRIES ?? 20)
// every try is a failover and a resync: more than the default file timeout
t.setTimeout(Math.max(120_000, REVOKE_TRIES * 12_000))

t.test(`${REVOKE_TRIES} confirmed logouts, each followed at once by kill -9 of its primary: none lost`, async (t) => {
  const topology = await startClusterTopology(t)
  const prefix = uniquePrefix('cluster-tries')
  const [a, b] = await startLifecycleInstances(t, 2, clusterGatewayConfig(topology, prefix))
  const denyKey = `${prefix}{deny}`
  let lost = 0
  for (let i = 0; i < REVOKE_TRIES; i++) {
    const started = Date.now()
    const { session: s, unconfirmed } = await confirmedLogout(a!.app, b!.app, 'alice')
    const sid = decodeJwt(s.access_token).payload.sid as string
    const loggedOut = Date.now()
    await topology.killPrimaryOf(i % 2 === 0 ? denyKey : `${prefix}{${sid}}s`)
    const failedOver = Date.now()
    // a new instance, started after the failover, knows only what Redis kept
    const [fresh] = await startLifecycleInstances(t, 1, clusterGatewayConfig(topology, prefix))
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
