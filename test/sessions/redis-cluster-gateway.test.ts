import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { login, PASSWORDS } from '../helpers/gateway.js'
import { callApi, decodeJwt, lifecycleAcrossInstances, rateLimitAcrossInstances, refreshWithBody, startLifecycleInstances } from '../helpers/lifecycle.js'
import { clusterGatewayConfig, startClusterTopology } from '../helpers/redis-cluster.js'
import { uniquePrefix } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'

// Two gateway instances on one Redis Cluster (three primaries, a replica
// each): the whole token lifecycle across instances, the rate limit exact
// across them, and kill -9 under load (logins, refreshes, logouts) of the
// primary holding a session's slot and the denylist's. One cluster for the file. The 20 revoke-then-kill
// tries are in redis-cluster-revoke-tries.test.ts.

const loginRes = (app: FastifyInstance, username: keyof typeof PASSWORDS): Promise<LightMyRequestResponse> =>
  app.inject({ method: 'POST', url: '/auth/login', payload: { username, password: PASSWORDS[username], transport: 'body' } })

t.test('gateways on Redis Cluster', async (t) => {
  const topology = await startClusterTopology(t)

  t.test('the lifecycle across two instances: login, rotation, reuse, logout on one and refusal on the other', async (t) => {
    const [a, b] = await startLifecycleInstances(t, 2, clusterGatewayConfig(topology, uniquePrefix('cluster-life')))
    await lifecycleAcrossInstances(t, a.app, b.app)
  })

  t.test('the rate limit is exact across instances on Cluster', async (t) => {
    const [a, b] = await startLifecycleInstances(t, 2, { ...clusterGatewayConfig(topology, uniquePrefix('cluster-rl')), rateLimit: { max: 7, timeWindow: '1m' } })
    await rateLimitAcrossInstances(t, a.app, b.app, 7)
  })

  t.test('kill -9 of the primary holding a session and the denylist under load: no 500, nothing confirmed lost', async (t) => {
    const prefix = uniquePrefix('cluster-kill')
    // an ancestor presented after the failover is reuse, however soon
    const [a, b] = await startLifecycleInstances(t, 2, { ...clusterGatewayConfig(topology, prefix), tokens: { reuseGrace: '0s' } })
    const denyKey = `${prefix}{deny}`
    const denyPrimary = await topology.primaryOf(denyKey)
    /** a session on the shard that is about to lose its primary */
    const onDenyShard = async (): Promise<{ access_token: string, refresh_token?: string }> => {
      for (;;) {
        const session = await login(a.app, 'alice')
        if (await topology.primaryOf(`${prefix}{${decodeJwt(session.access_token).payload.sid as string}}s`) === denyPrimary) return session
      }
    }
    const victim = await onDenyShard()
    const kept = await login(a.app, 'bob')
    // rotated before the kill, on the same shard: the ancestor must stay dead across it
    const rotatedOut = await onDenyShard()
    const rotation = await refreshWithBody(a.app, rotatedOut.refresh_token ?? '')
    t.equal(rotation.statusCode, 200, 'a rotation confirmed before the kill')
    const successor = rotation.json() as { refresh_token: string }

    const statuses = { proxied: new Map<number, number>(), auth: new Map<number, number>(), logout: new Map<number, number>() }
    const count = (m: Map<number, number>, s: number): void => { m.set(s, (m.get(s) ?? 0) + 1) }
    /** access tokens whose logout was answered 204 during the load */
    const loggedOut: string[] = []
    let loading = true
    const proxied = async (app: FastifyInstance): Promise<void> => {
      while (loading) count(statuses.proxied, (await callApi(app, kept.access_token)).statusCode)
    }
    const load = async (app: FastifyInstance): Promise<void> => {
      while (loading) {
        const res = await loginRes(app, 'carol')
        count(statuses.auth, res.statusCode)
        if (res.statusCode === 503) t.match(res.headers['retry-after'], /^\d+$/, 'a 503 says when to retry')
        if (res.statusCode !== 200) continue
        const refreshed = await refreshWithBody(app, (res.json() as { refresh_token: string }).refresh_token)
        count(statuses.auth, refreshed.statusCode)
        const { access_token: token } = (refreshed.statusCode === 200 ? refreshed.json() : res.json()) as { access_token: string }
        const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${token}` } })
        count(statuses.logout, out.statusCode)
        if (out.statusCode === 503) t.match(out.headers['retry-after'], /^\d+$/, 'a 503 says when to retry')
        if (out.statusCode === 204) loggedOut.push(token)
      }
    }
    const running = [load(a.app), load(b.app), proxied(a.app), proxied(b.app)]

    const out = await b.app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${victim.access_token}` } })
    t.equal(out.statusCode, 204, 'logged out, confirmed by the replicas, just before the kill')
    await topology.killPrimaryOf(denyKey)
    await waitFor('login works again', async () => (await loginRes(a.app, 'carol')).statusCode === 200, 400, 50)
    loading = false
    await Promise.all(running)
    await topology.restoreKilled()

    t.comment(`statuses during the failover: proxied ${JSON.stringify([...statuses.proxied])}, auth ${JSON.stringify([...statuses.auth])}, logout ${JSON.stringify([...statuses.logout])}`)
    t.same([...statuses.proxied.keys()], [200], `every proxied request with a valid token was served: ${JSON.stringify([...statuses.proxied])}`)
    t.ok([...statuses.auth.keys()].every((s) => s === 200 || s === 503), `logins and refreshes answered 200 or 503, never 500: ${JSON.stringify([...statuses.auth])}`)
    t.ok([...statuses.logout.keys()].every((s) => s === 204 || s === 503), `logouts answered 204 or 503, never 500: ${JSON.stringify([...statuses.logout])}`)
    // Logouts write to {deny}, whose shard has no replica from the kill until
    // the restore (after the load): few or none are confirmed under load.
    for (const app of [a.app, b.app]) {
      t.equal((await callApi(app, victim.access_token)).statusCode, 401, 'the logout survived the failover')
      const served = (await Promise.all(loggedOut.map((token) => callApi(app, token)))).filter((r) => r.statusCode !== 401)
      t.equal(served.length, 0, `every one of the ${loggedOut.length} logouts confirmed under load stays in force`)
    }
    t.equal((await refreshWithBody(a.app, victim.refresh_token ?? '')).statusCode, 401, 'so did the end of its session')
    const refreshed = await refreshWithBody(b.app, kept.refresh_token ?? '')
    t.equal(refreshed.statusCode, 200, `a session from before the failover still refreshes: ${refreshed.body}`)
    // the successor first: presenting the ancestor ends the family (reuse)
    const onward = await refreshWithBody(b.app, successor.refresh_token)
    t.equal(onward.statusCode, 200, `the rotation made before the kill survived it: its successor refreshes: ${onward.body}`)
    t.equal((await refreshWithBody(a.app, rotatedOut.refresh_token ?? '')).statusCode, 401, 'and the refresh token it rotated out stays dead')
  })
})
