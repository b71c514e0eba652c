import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { login, PASSWORDS } from '../helpers/gateway.js'
import { callApi, decodeJwt, refreshWithBody, startLifecycleInstances } from '../helpers/lifecycle.js'
import { clusterGatewayConfig, startClusterTopology } from '../helpers/redis-cluster.js'
import { uniquePrefix } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'

// Two gateway instances on one Redis Cluster (three primaries, a replica
// each): the whole token lifecycle across instances, the rate limit exact
// across them, and kill -9 under load of the primary holding a session's
// slot and the denylist's. One cluster for the file. The 20 revoke-then-kill
// tries are in redis-cluster-revoke-tries.test.ts.

const loginRes = (app: FastifyInstance, username: keyof typeof PASSWORDS): Promise<LightMyRequestResponse> =>
  app.inject({ method: 'POST', url: '/auth/login', payload: { username, password: PASSWORDS[username], transport: 'body' } })

t.test('gateways on Redis Cluster', async (t) => {
  const topology = await startClusterTopology(t)

  t.test('the lifecycle across two instances: login, rotation, reuse, logout on one and refusal on the other', async (t) => {
    const [a, b] = await startLifecycleInstances(t, 2, clusterGatewayConfig(topology, uniquePrefix('cluster-life')))
    const alice = await login(a.app, 'alice')
    t.match(alice.refresh_token, /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/, 'the refresh token carries its session id')
    t.equal(alice.refresh_token?.split('.')[0], decodeJwt(alice.access_token).payload.sid, 'the sid of its access token')
    t.equal((await callApi(b.app, alice.access_token)).statusCode, 200, 'a token from a is accepted on b')

    const rotated = await refreshWithBody(b.app, alice.refresh_token ?? '')
    t.equal(rotated.statusCode, 200, 'rotated on b')
    const next = rotated.json() as { access_token: string, refresh_token: string }
    t.equal((await callApi(a.app, next.access_token)).statusCode, 200)

    // reuse: an older ancestor is never inside the grace rules
    const third = await refreshWithBody(a.app, next.refresh_token)
    t.equal(third.statusCode, 200, 'rotated again on a')
    const reused = await refreshWithBody(a.app, alice.refresh_token ?? '')
    t.equal(reused.statusCode, 401, 'an ancestor presented again is refused')
    const thirdTokens = third.json() as { access_token: string, refresh_token: string }
    await waitFor('b refuses the family revoked for reuse', async () => (await callApi(b.app, thirdTokens.access_token)).statusCode === 401, 200, 25)
    t.equal((await refreshWithBody(b.app, thirdTokens.refresh_token)).statusCode, 401, 'its current refresh token died with it')

    const bob = await login(b.app, 'bob')
    t.equal((await a.app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${bob.access_token}` } })).statusCode, 204, 'bob logs out on a')
    await waitFor('b refuses bob\'s access token', async () => (await callApi(b.app, bob.access_token)).statusCode === 401, 200, 25)
    t.equal((await refreshWithBody(b.app, bob.refresh_token ?? '')).statusCode, 401, 'and his refresh token')

    const carol1 = await login(a.app, 'carol')
    const carol2 = await login(b.app, 'carol')
    t.equal((await b.app.inject({ method: 'POST', url: '/auth/logout-all', headers: { authorization: `Bearer ${carol1.access_token}` } })).statusCode, 204, 'carol logs out everywhere on b')
    for (const app of [a.app, b.app]) {
      await waitFor('both of carol\'s sessions are refused', async () => (await callApi(app, carol2.access_token)).statusCode === 401, 200, 25)
    }
    t.equal((await refreshWithBody(a.app, carol2.refresh_token ?? '')).statusCode, 401, 'her other session\'s refresh token is dead')
  })

  t.test('the rate limit is exact across instances on Cluster', async (t) => {
    const [a, b] = await startLifecycleInstances(t, 2, { ...clusterGatewayConfig(topology, uniquePrefix('cluster-rl')), rateLimit: { max: 7, timeWindow: '1m' } })
    const alice = await login(a.app, 'alice')
    const statuses = await Promise.all(Array.from({ length: 20 }, (_, i) => callApi(i % 2 === 0 ? a.app : b.app, alice.access_token)))
    const codes = statuses.map((r) => r.statusCode)
    t.equal(codes.filter((c) => c === 200).length, 7, `exactly max requests served across both: ${JSON.stringify(codes)}`)
    t.equal(codes.filter((c) => c === 429).length, 13, 'the rest refused')
  })

  t.test('kill -9 of the primary holding a session and the denylist under load: no 500, nothing confirmed lost', async (t) => {
    const prefix = uniquePrefix('cluster-kill')
    const [a, b] = await startLifecycleInstances(t, 2, clusterGatewayConfig(topology, prefix))
    const denyKey = `${prefix}{deny}`
    const denyPrimary = await topology.primaryOf(denyKey)
    // a session on the shard that is about to lose its primary
    let victim = await login(a.app, 'alice')
    while (await topology.primaryOf(`${prefix}{${decodeJwt(victim.access_token).payload.sid as string}}s`) !== denyPrimary) victim = await login(a.app, 'alice')
    const kept = await login(a.app, 'bob')

    const statuses = { proxied: new Map<number, number>(), auth: new Map<number, number>() }
    const count = (m: Map<number, number>, s: number): void => { m.set(s, (m.get(s) ?? 0) + 1) }
    let loading = true
    const proxied = async (app: FastifyInstance): Promise<void> => {
      while (loading) count(statuses.proxied, (await callApi(app, kept.access_token)).statusCode)
    }
    const load = async (app: FastifyInstance): Promise<void> => {
      while (loading) {
        const res = await loginRes(app, 'carol')
        count(statuses.auth, res.statusCode)
        if (res.statusCode === 503) t.match(res.headers['retry-after'], /^\d+$/, 'a 503 says when to retry')
        if (res.statusCode === 200) count(statuses.auth, (await refreshWithBody(app, (res.json() as { refresh_token: string }).refresh_token)).statusCode)
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

    t.comment(`statuses during the failover: proxied ${JSON.stringify([...statuses.proxied])}, auth ${JSON.stringify([...statuses.auth])}`)
    t.same([...statuses.proxied.keys()], [200], `every proxied request with a valid token was served: ${JSON.stringify([...statuses.proxied])}`)
    t.ok([...statuses.auth.keys()].every((s) => s === 200 || s === 503), `logins and refreshes answered 200 or 503, never 500: ${JSON.stringify([...statuses.auth])}`)
    for (const app of [a.app, b.app]) t.equal((await callApi(app, victim.access_token)).statusCode, 401, 'the logout survived the failover')
    t.equal((await refreshWithBody(a.app, victim.refresh_token ?? '')).statusCode, 401, 'so did the end of its session')
    const refreshed = await refreshWithBody(b.app, kept.refresh_token ?? '')
    t.equal(refreshed.statusCode, 200, `a session from before the failover still refreshes: ${refreshed.body}`)
  })
})
