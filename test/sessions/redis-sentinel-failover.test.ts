import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { login, PASSWORDS } from '../helpers/gateway.js'
import { callApi, refreshWithBody, startLifecycleInstances } from '../helpers/lifecycle.js'
import { waitFor } from '../helpers/wait-for.js'
import { startSentinelTopology } from '../helpers/redis-sentinel.js'
import { uniquePrefix } from '../helpers/redis-server.js'

// Two gateway instances on Sentinel; kill -9 of the primary under load
// (proxied requests, and logins each followed by a refresh and a logout).
// Proxied requests keep being served from the mirrors, the auth endpoints
// answer 503 (never 500) while no primary can confirm, and nothing a client
// was told succeeded is lost: every logout answered 204 stays in force, a
// refresh token rotated out before the kill stays dead.

t.test('kill -9 of the Sentinel primary under load: no 500, no revocation lost, recovery by itself', async (t) => {
  const topology = await startSentinelTopology(t)
  const [a, b] = await startLifecycleInstances(t, 2, {
    redis: { sentinels: topology.sentinels, masterName: topology.masterName, keyPrefix: uniquePrefix('failover'), connectTimeout: '500ms', commandTimeout: '500ms' },
    denylist: { maxStaleness: '15s' },
    // an ancestor presented after the failover is reuse, however soon
    tokens: { reuseGrace: '0s' }
  })
  const alice = await login(a.app, 'alice')
  const bob = await login(a.app, 'bob')
  const carol = await login(b.app, 'carol')

  t.equal((await a.app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${bob.access_token}` } })).statusCode, 204, 'bob logged out, confirmed by a replica')

  // rotated before the kill: the ancestor must stay dead across it
  const rotatedOut = await login(a.app, 'carol')
  const rotation = await refreshWithBody(a.app, rotatedOut.refresh_token ?? '')
  t.equal(rotation.statusCode, 200, 'a rotation confirmed before the kill')

  const statuses = { proxied: new Map<number, number>(), login: new Map<number, number>(), refresh: new Map<number, number>(), logout: new Map<number, number>() }
  const count = (m: Map<number, number>, s: number): void => { m.set(s, (m.get(s) ?? 0) + 1) }
  const retryAfter = (res: LightMyRequestResponse): void => {
    if (res.statusCode === 503) t.match(res.headers['retry-after'], /^\d+$/, 'a 503 says when to retry')
  }
  /** access tokens whose logout was answered 204 during the load */
  const loggedOut: string[] = []
  let loading = true
  const load = async (app: FastifyInstance): Promise<void> => {
    while (loading) {
      count(statuses.proxied, (await callApi(app, alice.access_token)).statusCode)
      const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice, transport: 'body' } })
      count(statuses.login, res.statusCode)
      retryAfter(res)
      if (res.statusCode !== 200) continue
      const refreshed = await refreshWithBody(app, (res.json() as { refresh_token: string }).refresh_token)
      count(statuses.refresh, refreshed.statusCode)
      retryAfter(refreshed)
      const { access_token: token } = (refreshed.statusCode === 200 ? refreshed.json() : res.json()) as { access_token: string }
      const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${token}` } })
      count(statuses.logout, out.statusCode)
      retryAfter(out)
      if (out.statusCode === 204) loggedOut.push(token)
    }
  }
  const running = [load(a.app), load(b.app)]

  // revoke, then kill at once: the logout was answered only after a replica had it
  const carolOut = await b.app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${carol.access_token}` } })
  t.equal(carolOut.statusCode, 204, 'carol logged out just before the kill')
  await topology.killPrimary()
  await topology.restoreKilled()
  await waitFor('login works again', async () => (await a.app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice, transport: 'body' } })).statusCode === 200, 200, 50)
  loading = false
  await Promise.all(running)

  t.comment(`statuses during the failover: ${JSON.stringify(Object.fromEntries(Object.entries(statuses).map(([k, m]) => [k, [...m]])))}`)
  t.same([...statuses.proxied.keys()], [200], `every proxied request with a valid token was served: ${JSON.stringify([...statuses.proxied])}`)
  t.ok([...statuses.login.keys()].every((s) => s === 200 || s === 503), `logins answered 200 or 503, never 500: ${JSON.stringify([...statuses.login])}`)
  t.ok([...statuses.refresh.keys()].every((s) => s === 200 || s === 503), `refreshes answered 200 or 503, never 500: ${JSON.stringify([...statuses.refresh])}`)
  t.ok([...statuses.logout.keys()].every((s) => s === 204 || s === 503), `logouts answered 204 or 503, never 500: ${JSON.stringify([...statuses.logout])}`)
  t.ok(loggedOut.length > 0, 'some logouts were confirmed during the load')
  for (const app of [a.app, b.app]) {
    t.equal((await callApi(app, bob.access_token)).statusCode, 401, 'bob stays logged out')
    t.equal((await callApi(app, carol.access_token)).statusCode, 401, 'carol, logged out right before the kill, stays logged out')
    const served = (await Promise.all(loggedOut.map((token) => callApi(app, token)))).filter((r) => r.statusCode !== 401)
    t.equal(served.length, 0, `every one of the ${loggedOut.length} logouts confirmed under load stays in force`)
  }
  t.equal((await refreshWithBody(a.app, bob.refresh_token ?? '')).statusCode, 401, 'bob\'s refresh token stays dead')
  // Rotations wait for a replica: until the killed node is back and synced,
  // b answers 503. Wait on a throwaway session of b's own, so alice's token
  // is presented once, after the topology is whole again.
  await waitFor('b can rotate again', async () => {
    const res = await b.app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice, transport: 'body' } })
    if (res.statusCode !== 200) return false
    return (await refreshWithBody(b.app, (res.json() as { refresh_token: string }).refresh_token)).statusCode === 200
  }, 200, 50)
  const refreshed = await refreshWithBody(b.app, alice.refresh_token ?? '')
  t.equal(refreshed.statusCode, 200, `a session from before the failover still refreshes: ${refreshed.body}`)
  t.equal((await callApi(a.app, refreshed.json().access_token)).statusCode, 200, 'and its new token is served')
  // the successor first: presenting the ancestor ends the family (reuse)
  const onward = await refreshWithBody(b.app, (rotation.json() as { refresh_token: string }).refresh_token)
  t.equal(onward.statusCode, 200, `the rotation made before the kill survived it: its successor refreshes: ${onward.body}`)
  t.equal((await refreshWithBody(a.app, rotatedOut.refresh_token ?? '')).statusCode, 401, 'and the refresh token it rotated out stays dead')
})
