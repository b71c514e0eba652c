import t from 'tap'
import { PASSWORDS, writeTestConfig } from './helpers/gateway.js'
import { listeningPids, pidsAnswering, send, startBin } from './helpers/gateway-workers.js'
import { sharedPrefix, SHARED_REDIS_URL } from './helpers/redis-server.js'
import { waitFor } from './helpers/wait-for.js'
import { closedPort, startUpstream } from './helpers/upstream.js'

// server.workers on Redis: the workers share what separate instances share
// (sessions, revocations over pub/sub, counters in Redis), through the bin.

// Many worker processes start here; on a loaded 2-core machine that takes a while.
t.setTimeout(300_000)

t.test('server.workers: 2 on Redis shares sessions, revocations and counters through Redis', async (t) => {
  const up = await startUpstream(t)
  const port = await closedPort()
  const { file } = await writeTestConfig({
    server: { host: '127.0.0.1', port, workers: 2 },
    redis: { url: SHARED_REDIS_URL, keyPrefix: sharedPrefix(t, 'workers') },
    auth: { loginRateLimit: { max: 3, addressMax: 1000, timeWindow: '10m' } },
    routes: [{ prefix: '/api', upstream: up.url, rateLimit: false }]
  })
  const gw = startBin(t, file)
  await waitFor('two workers listen', () => listeningPids(gw).length === 2, 600, 50)

  const statuses: number[] = []
  for (let i = 0; i < 6; i++) statuses.push((await send(port, 'POST', '/auth/login', {}, { username: 'bob', password: 'wrong', transport: 'body' })).status)
  t.same(statuses, [401, 401, 401, 429, 429, 429], 'the login throttle is Redis\'s, for the whole gateway')

  const res = await send(port, 'POST', '/auth/login', {}, { username: 'carol', password: PASSWORDS.carol, transport: 'body' })
  t.equal(res.status, 200)
  const headers = { authorization: `Bearer ${String((JSON.parse(res.body) as { access_token: string }).access_token)}` }
  t.equal((await send(port, 'POST', '/auth/logout', headers)).status, 204)
  await waitFor('both workers refuse the revoked token', async () => {
    await send(port, 'GET', '/api/redis-after', headers)
    return pidsAnswering(gw, '/api/redis-after', 401).size === 2
  }, 100, 20)
  for (let i = 0; i < 6; i++) t.equal((await send(port, 'GET', '/api/redis-after', headers)).status, 401)
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})
