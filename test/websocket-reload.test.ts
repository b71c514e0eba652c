import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import { stringify } from 'yaml'
import { PASSWORDS, writeTestConfig } from './helpers/gateway.js'
import { closedPort } from './helpers/upstream.js'
import { waitFor } from './helpers/wait-for.js'

// A SIGHUP reload ends the proxied WebSockets of the routes whose policy it
// changed or removed, with 1008, and leaves those of unchanged routes open:
// they keep relaying, and the new configuration now ends them (a logout
// still closes them). /metrics counts each close under its own reason.

const BIN = join(__dirname, '..', 'bin', 'gateway.js')

interface Upstream { url: string, received: string[], closes: number[] }

async function wsUpstream (t: Test): Promise<Upstream> {
  const received: string[] = []
  const closes: number[] = []
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  wss.on('connection', (socket) => {
    socket.on('message', (data) => {
      received.push(String(data))
      socket.send(`echo:${String(data)}`)
    })
    socket.on('close', (code) => closes.push(code))
  })
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()))
  t.teardown(() => new Promise<void>((resolve) => { for (const c of wss.clients) c.terminate(); wss.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, received, closes }
}

interface Client { ws: WebSocket, closed: Promise<{ code: number, reason: string }>, echo: (text: string) => Promise<string> }

async function open (t: Test, port: number, path: string, token: string): Promise<Client> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, { headers: { authorization: `Bearer ${token}` } })
  t.teardown(() => ws.terminate())
  const closed = new Promise<{ code: number, reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })))
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
  const echo = (text: string): Promise<string> => {
    const answer = new Promise<string>((resolve) => ws.once('message', (d) => resolve(String(d))))
    ws.send(text)
    return answer
  }
  t.equal(await echo(`hello ${path}`), `echo:hello ${path}`, `${path}: relayed`)
  return { ws, closed, echo }
}

async function closes (port: number): Promise<Record<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^tokengate_websockets_closed_total\{reason="([a-z_]+)"\} (\d+)$/gm)) out[m[1]] = Number(m[2])
  return out
}

t.test('a reload closes the sockets of changed or removed routes and keeps the others', async (t) => {
  const keep = await wsUpstream(t)
  const change = await wsUpstream(t)
  const drop = await wsUpstream(t)
  const port = await closedPort()
  const { dir } = await writeTestConfig()
  const file = join(dir, 'reload.yaml')
  const write = (routes: Array<Record<string, unknown>>): void => {
    writeFileSync(file, stringify({
      server: { host: '127.0.0.1', port, shutdownGrace: '5s' },
      tokens: { algorithm: 'ES256', keys: [{ kid: 'k', privateKey: './signing.pem' }] },
      auth: { users: { file: './users.yaml' }, cookie: { secure: false } },
      routes
    }))
  }
  const keepRoute = { prefix: '/ws/keep', upstream: keep.url, websocket: true }
  write([keepRoute, { prefix: '/ws/change', upstream: change.url, websocket: true }, { prefix: '/ws/drop', upstream: drop.url, websocket: true }])

  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let logs = ''
  child.stdout.on('data', (c) => { logs += String(c) })
  child.stderr.on('data', (c) => { logs += String(c) })
  await waitFor('the gateway listens', () => logs.includes('Server listening'), 300, 50)

  const res = await fetch(`http://127.0.0.1:${port}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'bob', password: PASSWORDS.bob, transport: 'body' }) })
  t.equal(res.status, 200)
  const { access_token: token } = await res.json() as { access_token: string }
  const kept = await open(t, port, '/ws/keep', token)
  const changed = await open(t, port, '/ws/change', token)
  const dropped = await open(t, port, '/ws/drop', token)

  // /ws/change now needs a scope bob has (its policy changed even so); /ws/drop is gone.
  write([keepRoute, { prefix: '/ws/change', upstream: change.url, websocket: true, scopes: ['orders:read'] }])
  child.kill('SIGHUP')
  for (const [name, client] of [['changed', changed], ['removed', dropped]] as const) {
    t.same(await client.closed, { code: 1008, reason: 'session ended' }, `the ${name} route's socket closed by policy, naming nothing`)
  }
  await waitFor('the upstream sides closed', () => change.closes.length > 0 && drop.closes.length > 0)
  t.same([change.closes, drop.closes], [[1008], [1008]], 'both sides were closed')
  await waitFor('the reload is logged', () => logs.includes('configuration reloaded'), 200, 50)

  t.equal(kept.ws.readyState, WebSocket.OPEN, 'the unchanged route\'s socket is still open')
  t.equal(await kept.echo('after the reload'), 'echo:after the reload', 'and still relays both ways')
  // The previous gateway is closed once drained (nothing was in flight): the socket outlives it.
  await waitFor('the previous gateway has closed', () => logs.includes('the previous configuration finished its requests and is closed'), 200, 50)
  t.equal(await kept.echo('after the old gateway closed'), 'echo:after the old gateway closed')
  t.same(keep.closes, [], 'the upstream side of the kept socket is open')
  t.same(await closes(port), { revoked: 0, expired: 0, route_changed: 2, shutdown: 0 }, 'two closes, counted as route_changed')

  // The new configuration tracks the socket it took over: a logout ends it.
  const again = await open(t, port, '/ws/change', token)
  const logout = await fetch(`http://127.0.0.1:${port}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
  t.equal(logout.status, 204)
  t.same(await kept.closed, { code: 1008, reason: 'session ended' }, 'the kept socket ends with its session')
  t.same(await again.closed, { code: 1008, reason: 'session ended' })
  const heard = keep.received.length
  t.ok(await new Promise<Error | undefined>((resolve) => kept.ws.send('after logout', resolve)) instanceof Error, 'nothing can be sent after the close')
  t.equal(keep.received.length, heard, 'the upstream heard nothing more')
  t.same(await closes(port), { revoked: 2, expired: 0, route_changed: 2, shutdown: 0 }, 'the revocations counted apart')

  const stillOpen = await (async () => {
    const r = await fetch(`http://127.0.0.1:${port}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: PASSWORDS.alice, transport: 'body' }) })
    return open(t, port, '/ws/keep', ((await r.json()) as { access_token: string }).access_token)
  })()
  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  t.same(await stillOpen.closed, { code: 1008, reason: 'session ended' }, 'shutdown closes the rest by policy too')
  t.equal(await exit, 0)
})
