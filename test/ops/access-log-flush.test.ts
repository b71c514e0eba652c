import { spawn } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { writeTestConfig } from '../helpers/gateway.js'
import { waitFor as eventually } from '../helpers/wait-for.js'
import { closedPort, startUpstream } from '../helpers/upstream.js'

// The bin holds its log lines until the end of each event-loop turn
// (src/ops/log-destination.ts): a clean stop (SIGTERM) must still leave
// every request's line in the file.

const BIN = join(__dirname, '..', '..', 'bin', 'gateway.js')

t.test('SIGTERM right after a burst of requests loses no access-log line', async (t) => {
  const up = await startUpstream(t)
  const port = await closedPort()
  const { file, dir } = await writeTestConfig({
    server: { host: '127.0.0.1', port },
    store: { file: ':memory:' },
    routes: [{ prefix: '/open', upstream: up.url, auth: 'none' }]
  })
  const logFile = join(dir, 'access.log')
  const fd = openSync(logFile, 'w')
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', fd, fd] })
  closeSync(fd)
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  await eventually('the gateway answers', async () => {
    try { return (await fetch(`http://127.0.0.1:${port}/healthz`)).status > 0 } catch { return false }
  }, 400, 50)

  const count = 500
  const statuses = await Promise.all(Array.from({ length: count }, async (_, i) => (await fetch(`http://127.0.0.1:${port}/open/r${i}`)).status))
  t.ok(statuses.every((s) => s === 200))
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'a clean exit')
  const lines = readFileSync(logFile, 'utf8').split('\n').filter((l) => l.includes('"request completed"') && l.includes('/open/r'))
  t.equal(lines.length, count, 'one access line per proxied request, none lost')
})
