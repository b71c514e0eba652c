import { spawn } from 'node:child_process'
import { Agent, request } from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { writeTestConfig } from './helpers/gateway.js'
import { closedPort, startUpstream } from './helpers/upstream.js'
import { waitFor } from './helpers/wait-for.js'

// SIGHUP re-reads the config: a valid one takes effect on the running
// process (new routes answer, removed ones 404, changed upstreams are used)
// without dropping open connections or in-flight requests; an invalid one is
// refused with the same file:line messages and the running config stays.

const BIN = join(__dirname, '..', 'bin', 'gateway.js')

interface Answer { status: number, body: string, reused: boolean }

function get (port: number, path: string, agent: Agent | false = false): Promise<Answer> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = ''
      res.on('data', (c) => { body += String(c) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, reused: req.reusedSocket }))
    })
    req.on('error', () => resolve({ status: -1, body: '', reused: false }))
    req.end()
  })
}

t.test('SIGHUP with a good config applies it without dropping anything; with a bad one keeps the running config', async (t) => {
  let release: () => void = () => {}
  const arrived = new Promise<void>((resolve) => { release = resolve })
  let finish: () => void = () => {}
  const finished = new Promise<void>((resolve) => { finish = resolve })
  const slow = await startUpstream(t, (_req, res) => {
    release()
    void finished.then(() => res.end('slow answer'))
  })
  const first = await startUpstream(t, (_req, res) => res.end('from first'))
  const second = await startUpstream(t, (_req, res) => res.end('from second'))
  const port = await closedPort()
  const { dir } = await writeTestConfig()
  const file = join(dir, 'reload.yaml')
  const write = (routes: Array<Record<string, unknown>>): void => {
    writeFileSync(file, stringify({
      server: { host: '127.0.0.1', port, shutdownGrace: '10s' },
      tokens: { algorithm: 'ES256', keys: [{ kid: 'k', privateKey: './signing.pem' }] },
      auth: { users: { file: './users.yaml' } },
      routes
    }))
  }
  write([{ prefix: '/one', upstream: first.url, auth: 'none' }, { prefix: '/slow', upstream: slow.url, auth: 'none' }])

  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let logs = ''
  let errors = ''
  child.stdout.on('data', (c) => { logs += String(c) })
  child.stderr.on('data', (c) => { errors += String(c) })
  await waitFor('the gateway listens', () => logs.includes('Server listening'), 200, 50)

  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  t.same(await get(port, '/one/x', agent), { status: 200, body: 'from first', reused: false })
  const inFlight = get(port, '/slow/x')
  await arrived

  // A new route, a removed one, the slow one kept.
  write([{ prefix: '/two', upstream: first.url, auth: 'none' }, { prefix: '/slow', upstream: slow.url, auth: 'none' }])
  child.kill('SIGHUP')
  await waitFor('the new route answers', async () => (await get(port, '/two/x')).status === 200, 200, 50)
  // The line is written after the swap, so it may trail the first answer.
  await waitFor('the reload is logged', () => logs.includes('configuration reloaded'), 200, 50)
  t.equal((await get(port, '/one/x')).status, 404, 'a removed route is gone')
  const again = await get(port, '/two/y', agent)
  t.same(again, { status: 200, body: 'from first', reused: true }, 'the open keep-alive connection was kept and now reaches the new config')
  finish()
  t.same(await inFlight, { status: 200, body: 'slow answer', reused: false }, 'the request in flight during the reload completed')

  // A changed upstream is used.
  write([{ prefix: '/two', upstream: second.url, auth: 'none' }])
  child.kill('SIGHUP')
  t.teardown(() => { if (process.env.TG_DEBUG !== undefined) console.error(logs, errors) })
  await waitFor('the route uses its new upstream', async () => (await get(port, '/two/x')).body === 'from second', 200, 50)
  t.equal((await get(port, '/slow/x')).status, 404)

  // A broken config is refused with file:line messages; the running one stays.
  writeFileSync(file, stringify({
    server: { host: '127.0.0.1', port },
    tokens: { algorithm: 'ES256', keys: [{ kid: 'k', privateKey: './signing.pem' }] },
    auth: { users: { file: './users.yaml' } },
    routes: [{ prefix: '/three', upstream: first.url, auth: 'sometimes' }, { prefix: '/four' }]
  }))
  child.kill('SIGHUP')
  // stderr carries the summary and each problem as separate writes, and the
  // JSON log line goes out on its own schedule: wait for all of them.
  await waitFor('the reload is refused', () => /routes\[1\]\.upstream is required/.test(errors) && logs.includes('reload refused'), 200, 50)
  t.match(errors, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+ routes\\[0\\]\\.auth must be one of required, optional, none`))
  t.match(errors, /:\d+:\d+ routes\[1\]\.upstream is required/)
  t.match(logs, 'reload refused')
  t.same(await get(port, '/two/x'), { status: 200, body: 'from second', reused: false }, 'the running config still answers')
  t.equal((await get(port, '/three/x')).status, 404)

  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  t.equal(await exit, 0)
})

t.test('a reload that changes server.port keeps the running port and says so once; putting it back says nothing', async (t) => {
  const upstream = await startUpstream(t, (_req, res) => res.end('up'))
  const port = await closedPort()
  const other = await closedPort()
  const { dir } = await writeTestConfig()
  const file = join(dir, 'reload-port.yaml')
  const write = (listen: number, prefix: string): void => {
    writeFileSync(file, stringify({
      server: { host: '127.0.0.1', port: listen },
      tokens: { algorithm: 'ES256', keys: [{ kid: 'k', privateKey: './signing.pem' }] },
      auth: { users: { file: './users.yaml' } },
      routes: [{ prefix, upstream: upstream.url, auth: 'none' }]
    }))
  }
  write(port, '/a')
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let logs = ''
  child.stdout.on('data', (c) => { logs += String(c) })
  await waitFor('the gateway listens', () => logs.includes('Server listening'), 200, 50)
  const warnings = (): number => logs.split('\n').filter((l) => l.includes('only change on a restart')).length

  write(other, '/b')
  child.kill('SIGHUP')
  await waitFor('the new route answers on the running port', async () => (await get(port, '/b/x')).status === 200, 200, 50)
  await waitFor('the reload is logged', () => logs.includes('configuration reloaded'), 200, 50)
  t.equal(warnings(), 1, 'the port change is reported')
  t.match(logs, /"keys":\["server.port"\]/)
  t.equal((await get(other, '/b/x')).status, -1, 'nothing listens on the port the file asked for')

  write(port, '/c')
  child.kill('SIGHUP')
  await waitFor('the next route answers', async () => (await get(port, '/c/x')).status === 200, 200, 50)
  await waitFor('the second reload is logged', () => logs.split('configuration reloaded').length === 3, 200, 50)
  t.equal(warnings(), 1, 'the port the process runs on is no change')

  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  t.equal(await exit, 0)
})
