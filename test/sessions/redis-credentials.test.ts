import { randomBytes } from 'node:crypto'
import t from 'tap'
import type { Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { PASSWORDS, login, startGateway, type ConfigOverrides } from '../helpers/gateway.js'
import { callApi, mergeConfig, refreshWithBody, startLifecycle } from '../helpers/lifecycle.js'
import { logSink } from '../helpers/log-sink.js'
import { clusterGatewayConfig, startClusterTopology } from '../helpers/redis-cluster.js'
import { startSentinelTopology } from '../helpers/redis-sentinel.js'
import { uniquePrefix, type RedisAuth } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'

// redis.username / password (and sentinelPassword) on real topologies that
// require them: a Sentinel topology whose data nodes and sentinels each have
// a password, and a Cluster whose nodes have one, the gateway logging in as
// an ACL user. With the right credentials the whole session lifecycle works
// through them; with a wrong one the gateway answers 503 and says why, and
// keeps running.

const secret = (): string => randomBytes(12).toString('hex')

const loginRes = (app: FastifyInstance): Promise<LightMyRequestResponse> =>
  app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice, transport: 'body' } })

/** Login, a rotation, a logout, and the logged-out tokens refused, all through the credentials in `overrides`. */
async function lifecycleThroughCredentials (t: Test, overrides: ConfigOverrides): Promise<void> {
  const { app } = await startLifecycle(t, overrides)
  const alice = await login(app, 'alice')
  t.equal((await callApi(app, alice.access_token)).statusCode, 200, 'logged in: the token is served')
  const rotated = await refreshWithBody(app, alice.refresh_token ?? '')
  t.equal(rotated.statusCode, 200, `the refresh token rotates: ${rotated.body}`)
  const next = rotated.json() as { access_token: string, refresh_token: string }
  const out = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${next.access_token}` } })
  t.equal(out.statusCode, 204, 'the logout is confirmed')
  t.equal((await callApi(app, next.access_token)).statusCode, 401, 'the logged-out access token is refused')
  t.equal((await refreshWithBody(app, next.refresh_token)).statusCode, 401, 'and so is its refresh token')
}

/** A gateway whose credentials a topology refuses: 503 where Redis is needed, a log line naming `why`, and the process still answering. */
async function refusedCleanly (t: Test, overrides: ConfigOverrides, why: RegExp): Promise<void> {
  const { lines, stream } = logSink()
  const { app } = await startGateway(t, overrides, { logger: { level: 'info', stream } })
  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503, '/readyz says not ready')
  const res = await loginRes(app)
  t.equal(res.statusCode, 503, 'a login is refused with a 503')
  t.match(res.json(), { statusCode: 503, code: 'TG_STORE_UNAVAILABLE' })
  t.match(res.headers['retry-after'], /^\d+$/, 'with Retry-After')
  t.notMatch(res.body, /WRONGPASS|NOAUTH|password/i, 'the client is told nothing about the credentials')
  const says = (): boolean => lines.some((l) => why.test(String(l.msg)) || why.test(String((l.err as { message?: string } | undefined)?.message)))
  await waitFor(`the log says ${why}`, says).catch(() => {})
  t.ok(says(), `the log says ${why}: ${JSON.stringify(lines.filter((l) => Number(l.level) >= 40).map((l) => [l.msg, (l.err as { message?: string } | undefined)?.message]))}`)
  t.notOk(lines.some((l) => typeof l.level === 'number' && l.level >= 60), 'nothing fatal')
  t.equal((await app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, 'the gateway is alive')
}

t.test('Sentinel with passwords on the data nodes and on the sentinels, the gateway an ACL user', async (t) => {
  const auth: Required<RedisAuth> = { password: secret(), user: { name: 'tokengate', password: secret() }, sentinelPassword: secret() }
  const topology = await startSentinelTopology(t, { auth })
  const config = (redis: Record<string, unknown>): ConfigOverrides => ({
    redis: {
      sentinels: topology.sentinels,
      masterName: topology.masterName,
      username: auth.user.name,
      password: auth.user.password,
      sentinelPassword: auth.sentinelPassword,
      keyPrefix: uniquePrefix('sentinel-auth'),
      connectTimeout: '1s',
      commandTimeout: '1500ms',
      waitTimeout: '1s',
      ...redis
    }
  })

  t.test('login, refresh and logout work, the revoked tokens are refused', (t) => lifecycleThroughCredentials(t, config({})))
  t.test('a wrong password for the data nodes: 503 and a log line naming the credentials', (t) =>
    refusedCleanly(t, config({ password: 'not-the-password' }), /refused the credentials: check redis\.username and redis\.password/))
  t.test('a wrong sentinelPassword: 503 and a log line naming it', (t) =>
    refusedCleanly(t, config({ sentinelPassword: 'not-the-password' }), /the sentinels refused the credentials: check redis\.sentinelPassword/))
})

t.test('Cluster with a password on every node, the gateway an ACL user', async (t) => {
  const auth: RedisAuth = { password: secret(), user: { name: 'tokengate', password: secret() } }
  const topology = await startClusterTopology(t, { auth })
  const config = (redis: Record<string, unknown>): ConfigOverrides =>
    mergeConfig(clusterGatewayConfig(topology, uniquePrefix('cluster-auth')), { redis: { username: 'tokengate', password: auth.user?.password, ...redis } })

  t.test('login, refresh and logout work, the revoked tokens are refused', (t) => lifecycleThroughCredentials(t, config({})))
  t.test('a wrong password: 503 and a log line naming the credentials', (t) =>
    refusedCleanly(t, config({ password: 'not-the-password' }), /refused the credentials: check redis\.username and redis\.password/))
})
