import { spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { BIN, listeningPids, pidsAnswering, send, startBin } from './helpers/gateway-workers.js'
import { PASSWORDS, mergeConfig, writeTestConfig, type ConfigOverrides } from './helpers/gateway.js'
import { waitFor } from './helpers/wait-for.js'
import { closedPort, startUpstream } from './helpers/upstream.js'

// server.workers: 2 against the real `gateway` bin, one topology for the
// file. Every request goes on a new connection, so the kernel spreads them
// over both workers (reusePort); which worker answered is the pid on its
// access line.

// Many worker processes start here; on a loaded 2-core machine that takes a while.
t.setTimeout(300_000)

t.test('server.workers: 2 runs as one gateway', async (t) => {
  let releaseSlow: (() => void) | null = null
  const up = await startUpstream(t, (req, res) => {
    const answer = (): void => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ url: req.url }))
    }
    // /api/slow waits until the test lets it go: a request in flight during the shutdown.
    if (req.url.startsWith('/slow')) releaseSlow = answer
    else answer()
  })
  const port = await closedPort()
  const overrides: ConfigOverrides = {
    server: { host: '127.0.0.1', port, workers: 2 },
    store: { file: './data/tokengate.db' },
    auth: { loginRateLimit: { max: 3, addressMax: 1000, timeWindow: '10m' } },
    routes: [
      { prefix: '/api', upstream: up.url, rateLimit: false },
      { prefix: '/limited', upstream: up.url, auth: 'none', rateLimit: { max: 5, timeWindow: '10m' } }
    ]
  }
  const { file, dir } = await writeTestConfig(overrides)
  const config = readFileSync(file, 'utf8')
  const gw = startBin(t, file)
  await waitFor('two workers listen', () => listeningPids(gw).length === 2, 600, 50)
  const [first, second] = listeningPids(gw)
  t.not(first, second, 'two processes')
  t.not(first, gw.child.pid, 'the supervisor serves nothing itself')

  const login = async (username: keyof typeof PASSWORDS): Promise<string> => {
    const res = await send(port, 'POST', '/auth/login', {}, { username, password: PASSWORDS[username], transport: 'body' })
    t.equal(res.status, 200, `${username} logs in`)
    return String((JSON.parse(res.body) as { access_token: string }).access_token)
  }
  const alice = await login('alice')
  const bearer = { authorization: `Bearer ${alice}` }

  await t.test('requests are answered by both workers', async (t) => {
    await waitFor('both workers answered /api/spread', async () => {
      for (let i = 0; i < 10; i++) t.equal((await send(port, 'GET', '/api/spread', bearer)).status, 200)
      return pidsAnswering(gw, '/api/spread').size === 2
    }, 40, 50)
    t.same([...pidsAnswering(gw, '/api/spread')].sort(), [first, second].sort())
  })

  await t.test('the login throttle counts every worker\'s failures together', async (t) => {
    const statuses: number[] = []
    for (let i = 0; i < 8; i++) statuses.push((await send(port, 'POST', '/auth/login', {}, { username: 'bob', password: 'wrong', transport: 'body' })).status)
    t.same(statuses, [401, 401, 401, 429, 429, 429, 429, 429], 'max: 3 failures for the whole gateway, not 3 per worker')
    t.equal((await send(port, 'POST', '/auth/login', {}, { username: 'bob', password: PASSWORDS.bob, transport: 'body' })).status, 429, 'locked on every worker, the right password included')
  })

  await t.test('a route\'s rate limit counts every worker\'s requests together', async (t) => {
    const statuses: number[] = []
    for (let i = 0; i < 10; i++) statuses.push((await send(port, 'GET', '/limited/x')).status)
    t.same(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429, 429], 'max: 5 for the whole gateway')
    await waitFor('access lines written', () => pidsAnswering(gw, '/limited/x').size > 0, 100, 20)
  })

  await t.test('a revocation through one worker is refused by every worker', async (t) => {
    const token = await login('carol')
    const headers = { authorization: `Bearer ${token}` }
    for (let i = 0; i < 6; i++) t.equal((await send(port, 'GET', '/api/revoked', headers)).status, 200, 'before: served')
    t.equal((await send(port, 'POST', '/auth/logout', headers)).status, 204)
    // Every fresh connection may land on either worker, and the other worker
    // learns of the logout from the file's change feed (polled every 25 ms):
    // wait (bounded) until both have refused it, then every further request
    // must be refused too.
    await waitFor('both workers refuse the revoked token', async () => {
      await send(port, 'GET', '/api/after', headers)
      return pidsAnswering(gw, '/api/after', 401).size === 2
    }, 100, 20)
    for (let i = 0; i < 10; i++) t.equal((await send(port, 'GET', '/api/after', headers)).status, 401, 'refused, whichever worker answers')
  })

  await t.test('/metrics reports the whole gateway', async (t) => {
    const before = await counted()
    for (let i = 0; i < 12; i++) t.equal((await send(port, 'GET', '/api/metered', bearer)).status, 200)
    await waitFor('both workers served /api/metered', () => pidsAnswering(gw, '/api/metered').size === 2, 100, 20)
    // Whichever worker the scrape reaches, it reports all 12.
    for (let i = 0; i < 6; i++) t.equal(await counted() - before, 12)

    async function counted (): Promise<number> {
      const res = await send(port, 'GET', '/metrics')
      t.equal(res.status, 200)
      const match = /tokengate_http_requests_total\{route="\/api",method="GET",status="2xx"\} (\d+)/.exec(res.body)
      return Number(match?.[1] ?? 0)
    }
  })

  await t.test('a scrape the supervisor cannot answer gets 503 TG_METRICS_UNAVAILABLE, and the next one after it is back 200', async (t) => {
    // a stopped supervisor answers no worker's question: the worker gives up
    // after prom-client's own 5 s wait for workers, plus a second
    gw.child.kill('SIGSTOP')
    let res: { status: number, body: string }
    try {
      res = await send(port, 'GET', '/metrics')
    } finally {
      gw.child.kill('SIGCONT')
    }
    t.equal(res.status, 503)
    t.match(JSON.parse(res.body), { code: 'TG_METRICS_UNAVAILABLE', statusCode: 503 })
    t.equal((await send(port, 'GET', '/metrics')).status, 200, 'recovered by itself')
  })

  await t.test('a worker killed with -9 is restarted and the port keeps serving', async (t) => {
    process.kill(first!, 'SIGKILL')
    await waitFor('the supervisor saw it die', () => gw.lines().some((l) => l.role === 'supervisor' && l.msg === 'worker exited; restarting it'), 200, 25)
    for (let i = 0; i < 6; i++) t.equal((await send(port, 'GET', '/api/during', bearer)).status, 200, 'the other worker answers meanwhile')
    await waitFor('a new worker listens', () => listeningPids(gw).length === 3, 600, 50)
    const replacement = listeningPids(gw)[2]!
    t.not(replacement, first)
    await waitFor('the new worker answers too', async () => {
      t.equal((await send(port, 'GET', '/api/restarted', bearer)).status, 200)
      return pidsAnswering(gw, '/api/restarted').has(replacement)
    }, 100, 20)
  })

  const workers = (): number[] => listeningPids(gw).filter((pid) => pid !== first)

  await t.test('SIGHUP with a good config reloads every worker', async (t) => {
    const next = mergeConfig(JSON.parse(JSON.stringify(await import('yaml').then((y) => y.parse(config)))) as ConfigOverrides, {
      routes: [...(overrides.routes as unknown[]), { prefix: '/v2', upstream: up.url, auth: 'none' }]
    })
    writeFileSync(file, stringify(next))
    gw.child.kill('SIGHUP')
    await waitFor('both workers reloaded', () => {
      const reloaded = new Set(gw.lines().filter((l) => l.msg === 'configuration reloaded').map((l) => l.pid))
      return workers().every((pid) => reloaded.has(pid))
    }, 400, 25)
    for (let i = 0; i < 10; i++) t.equal((await send(port, 'GET', '/v2/new')).status, 200, 'the new route, on any worker')
    await waitFor('access lines written', () => pidsAnswering(gw, '/v2/new').size === 2, 100, 20)
  })

  await t.test('SIGHUP with a refused config leaves every worker on the running one', async (t) => {
    const reloadsBefore = gw.lines().filter((l) => l.msg === 'SIGHUP: reloading the configuration').length
    writeFileSync(file, readFileSync(file, 'utf8') + 'notAKey: 1\n')
    gw.child.kill('SIGHUP')
    // The summary line and each problem are separate writes to stderr: wait
    // for the problem itself, not for the first line that mentions a refusal.
    await waitFor('the supervisor refuses it', () => /gateway\.config\.yaml:\d+:\d+ notAKey/.test(gw.text()), 200, 25)
    t.match(gw.text(), 'reload refused', 'says the reload was refused')
    t.match(gw.text(), /gateway\.config\.yaml:\d+:\d+ notAKey/, 'names file:line:col and key')
    t.equal(gw.lines().filter((l) => l.msg === 'SIGHUP: reloading the configuration').length, reloadsBefore, 'no worker was told to reload')
    for (let i = 0; i < 10; i++) t.equal((await send(port, 'GET', '/v2/still')).status, 200, 'every worker still serves the running config')
    await waitFor('access lines written', () => pidsAnswering(gw, '/v2/still').size === 2, 100, 20)

    // A worker that dies now starts again on the configuration the supervisor
    // accepted last, not on the refused file.
    const victim = listeningPids(gw).at(-1)!
    process.kill(victim, 'SIGKILL')
    await waitFor('a replacement listens', () => listeningPids(gw).length === 4, 600, 50)
    const replacement = listeningPids(gw)[3]!
    await waitFor('the replacement serves the running config', async () => {
      t.equal((await send(port, 'GET', '/v2/replaced')).status, 200)
      return pidsAnswering(gw, '/v2/replaced').has(replacement)
    }, 100, 20)
  })

  await t.test('SIGTERM: every worker drains and flushes its log, the gateway exits 0', async (t) => {
    t.equal((await send(port, 'GET', '/api/last', bearer)).status, 200)
    const alive = listeningPids(gw).filter((pid) => {
      try { return process.kill(pid, 0) } catch { return false }
    })
    t.equal(alive.length, 2)
    const slow = send(port, 'GET', '/api/slow', bearer)
    await waitFor('the slow request reached the upstream', () => releaseSlow !== null, 200, 25)
    gw.child.kill('SIGTERM')
    await waitFor('the workers drain', () => gw.lines().filter((l) => l.msg === 'shutting down').length === 2, 200, 25)
    // A second SIGTERM straight to the workers (systemd signals the whole
    // cgroup) must not cut the drain short.
    for (const pid of alive) {
      try { process.kill(pid, 'SIGTERM') } catch { /* already gone */ }
    }
    releaseSlow!()
    t.equal((await slow).status, 200, 'the request in flight is answered')
    t.equal(await gw.exited, 0)
    t.equal(pidsAnswering(gw, '/api/last').size, 1, 'the last request\'s access line was written before the exit')
    t.ok(gw.lines().some((l) => l.msg === 'every worker has exited'))
  })

  await t.test('workers > 1 on ":memory:" is refused, naming file:line', async (t) => {
    const memory = join(dir, 'memory.yaml')
    writeFileSync(memory, stringify(mergeConfig(JSON.parse(JSON.stringify((await import('yaml')).parse(config))) as ConfigOverrides, { store: { file: ':memory:' } })))
    const validate = spawnSync(process.execPath, [BIN, 'validate', memory], { encoding: 'utf8' })
    t.equal(validate.status, 1)
    t.match(validate.stderr, /memory\.yaml:\d+:\d+ server\.workers more than 1 worker needs a store the workers share/)
    const started = spawnSync(process.execPath, [BIN, '--config', memory], { encoding: 'utf8', timeout: 20_000 })
    t.equal(started.status, 1, 'the gateway refuses to start')
    t.match(started.stderr, /server\.workers more than 1 worker needs a store/)
  })
})
