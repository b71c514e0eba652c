import { spawn } from 'node:child_process'
import { request } from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { writeTestConfig } from './helpers/gateway.js'
import { closedPort, startUpstream } from './helpers/upstream.js'

// SIGTERM while a proxied request is in flight: the gateway stops taking new
// connections, lets the request finish, and exits 0.

const BIN = join(__dirname, '..', 'bin', 'gateway.js')

function get (port: number, path: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = ''
      res.on('data', (c) => { body += String(c) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', () => resolve({ status: -1, body: '' }))
    req.end()
  })
}

t.test('SIGTERM during a slow proxied request: the request completes, new connections are refused, exit 0', async (t) => {
  let release: () => void = () => {}
  const arrived = new Promise<void>((resolve) => {
    release = resolve
  })
  let finish: () => void = () => {}
  const finished = new Promise<void>((resolve) => { finish = resolve })
  const up = await startUpstream(t, (_req, res) => {
    release()
    void finished.then(() => res.end('slow answer'))
  })
  const port = await closedPort()
  const { dir } = await writeTestConfig()
  const file = join(dir, 'shutdown.yaml')
  writeFileSync(file, stringify({
    server: { host: '127.0.0.1', port, shutdownGrace: '10s' },
    tokens: { algorithm: 'ES256', keys: [{ kid: 'k', privateKey: './signing.pem' }] },
    auth: { users: { file: './users.yaml' } },
    routes: [{ prefix: '/slow', upstream: up.url, auth: 'none' }]
  }))
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let logs = ''
  child.stdout.on('data', (c) => { logs += String(c) })
  for (let i = 0; i < 100 && !logs.includes('Server listening'); i++) await new Promise((resolve) => setTimeout(resolve, 100))

  const inFlight = get(port, '/slow/x')
  await arrived
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  for (let i = 0; i < 50 && !logs.includes('shutting down'); i++) await new Promise((resolve) => setTimeout(resolve, 20))
  t.match(logs, 'shutting down')
  const late = await get(port, '/slow/y')
  t.ok(late.status === -1 || late.status === 503, `a new request is not served (${late.status})`)
  finish()
  t.same(await inFlight, { status: 200, body: 'slow answer' })
  t.equal(await exit, 0)
  t.equal(up.seen.length, 1, 'only the in-flight request reached the upstream')
})
