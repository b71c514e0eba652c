import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { writeTestConfig } from './helpers/gateway.js'
import { waitFor } from './helpers/wait-for.js'
import { closedPort } from './helpers/upstream.js'
import { MAX_RESTART_DELAY_MS, restartDelay, workerCount } from '../src/supervisor.js'

const BIN = join(__dirname, '..', 'bin', 'gateway.js')

t.test('server.workers: auto is the available cores', async (t) => {
  t.equal(workerCount('auto'), availableParallelism())
  t.equal(workerCount(3), 3)
})

t.test('the restart back-off doubles while workers die young, up to a ceiling', async (t) => {
  t.same([1, 2, 3, 4, 5].map(restartDelay), [100, 200, 400, 800, 1600])
  t.equal(restartDelay(40), MAX_RESTART_DELAY_MS)
})

t.test('workers that cannot start are retried with a growing back-off, and start once they can', async (t) => {
  const port = await closedPort()
  // Something else holds the port without SO_REUSEPORT: every worker's listen fails.
  const squatter = createServer((_req, res) => res.end('squatter'))
  await new Promise<void>((resolve) => squatter.listen(port, '127.0.0.1', resolve))
  let squatting = true
  t.teardown(() => { if (squatting) squatter.close() })

  const { file } = await writeTestConfig({ server: { host: '127.0.0.1', port, workers: 2 } })
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout?.on('data', (c) => { out += String(c) })
  child.stderr?.on('data', (c) => { out += String(c) })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const restarts = (): Array<{ worker: number, restartInMs: number }> => out.split('\n')
    .filter((l) => l.includes('"msg":"worker exited; restarting it"'))
    .map((l) => JSON.parse(l) as { worker: number, restartInMs: number })

  await waitFor('each worker failed twice', () => restarts().filter((r) => r.worker === 0).length >= 2 && restarts().filter((r) => r.worker === 1).length >= 2, 600, 50)
  for (const worker of [0, 1]) {
    const delays = restarts().filter((r) => r.worker === worker).map((r) => r.restartInMs).slice(0, 2)
    t.same(delays, [100, 200], `worker ${worker} backs off instead of spinning`)
  }

  await new Promise<void>((resolve) => squatter.close(() => resolve()))
  squatting = false
  await waitFor('both workers listen once the port is free', () => out.split('Server listening').length - 1 === 2, 600, 50)
  const res = await fetch(`http://127.0.0.1:${port}/healthz`)
  t.equal(res.status, 200)
  child.kill('SIGTERM')
  t.equal(await new Promise((resolve) => child.once('exit', resolve)), 0)
})
