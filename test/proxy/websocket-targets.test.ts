import { createServer, request as httpRequest, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import type { FastifyInstance } from 'fastify'
import { login, startGateway } from '../helpers/gateway.js'
import { closedPort } from '../helpers/upstream.js'
import { waitFor } from '../helpers/wait-for.js'

// A route with several targets balances its WebSockets as it balances its
// requests: upgrades are spread over the targets, a target that refuses the
// upstream side's connection is ejected like one that refuses a request, and
// an absolute redirect naming any of the targets comes back under the
// route's prefix.

interface WsTarget { name: string, url: string, port: number, connections: () => number, stop: () => Promise<void> }

/** A ws upstream that answers every message with its own name, so the client sees which target it reached. */
async function wsTarget (t: Test, name: string): Promise<WsTarget> {
  const server: Server = createServer((_req, res) => res.end(name))
  const wss = new WebSocketServer({ server })
  let connections = 0
  wss.on('connection', (socket) => {
    connections++
    socket.on('message', (data) => socket.send(`${name}:${String(data)}`))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  let stopped = false
  const stop = async (): Promise<void> => {
    if (stopped) return
    stopped = true
    for (const client of wss.clients) client.terminate()
    await new Promise<void>((resolve) => wss.close(() => resolve()))
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
  t.teardown(stop)
  return { name, url: `http://127.0.0.1:${port}`, port, connections: () => connections, stop }
}

interface Opened { ws: WebSocket, first: string, closed: Promise<{ code: number, reason: string }> }

/** Opens a socket through the gateway and says which target answered its first message ('' when the link failed). */
async function openThrough (t: Test, port: number, token: string): Promise<Opened> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`, { headers: { authorization: `Bearer ${token}` } })
  t.teardown(() => ws.terminate())
  const closed = new Promise<{ code: number, reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })))
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
  const first = await new Promise<string>((resolve) => {
    ws.once('message', (d) => resolve(String(d)))
    ws.once('close', () => resolve(''))
    ws.send('who')
  })
  return { ws, first, closed }
}

async function gateway (t: Test, upstream: string[], extra: Record<string, unknown> = {}): Promise<{ app: FastifyInstance, port: number, token: string }> {
  const { app } = await startGateway(t, {
    auth: { loginRateLimit: { max: 10_000, timeWindow: '1m' } },
    routes: [{ prefix: '/ws', upstream, websocket: true, rateLimit: false, ...extra }]
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const { access_token: token } = await login(app, 'alice')
  return { app, port: (app.server.address() as AddressInfo).port, token }
}

function metricValue (text: string, name: string, target: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`target="${target}"`))
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1))
}

t.test('WebSocket connections are spread over the targets; a killed target gets none once ejected', async (t) => {
  const a = await wsTarget(t, 'a')
  const b = await wsTarget(t, 'b')
  const { app, port, token } = await gateway(t, [a.url, b.url], { ejectAfter: 2, ejectFor: '1m' })

  const open: Opened[] = []
  for (let i = 0; i < 6; i++) open.push(await openThrough(t, port, token))
  t.same(open.map((o) => o.first.split(':')[0]).sort(), ['a', 'a', 'a', 'b', 'b', 'b'], 'round-robin: three sockets on each target')
  t.equal(a.connections(), 3)
  t.equal(b.connections(), 3)
  let metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.equal(metricValue(metrics, 'tokengate_upstream_target_requests_total', a.url), 3, 'each upgrade counted on its target')
  t.equal(metricValue(metrics, 'tokengate_upstream_target_requests_total', b.url), 3)

  await b.stop()
  await waitFor('the sockets on b closed', () => open.filter((o) => o.first.startsWith('b:')).every((o) => o.ws.readyState === WebSocket.CLOSED))
  // Connecting to b now fails: at most ejectAfter (2) new sockets find it dead, then every one goes to a.
  const after: string[] = []
  for (let i = 0; i < 8; i++) after.push((await openThrough(t, port, token)).first.split(':')[0])
  const failed = after.filter((who) => who === '').length
  t.ok(failed <= 2, `at most ejectAfter sockets found b dead (${failed})`)
  t.same(after.slice(after.lastIndexOf('') + 1).every((who) => who === 'a'), true, 'every later socket reached a')
  t.ok(after.slice(-4).every((who) => who === 'a'), 'the last four all reached a')
  metrics = (await app.inject({ method: 'GET', url: '/metrics' })).body
  t.equal(metricValue(metrics, 'tokengate_upstream_target_up', b.url), 0, 'b is ejected')
  t.equal(metricValue(metrics, 'tokengate_upstream_target_ejections_total', b.url), 1)
  t.equal(metricValue(metrics, 'tokengate_upstream_target_up', a.url), 1)
  for (const o of open.filter((s) => s.first.startsWith('a:'))) t.equal(o.ws.readyState, WebSocket.OPEN, 'the sockets on a stayed open')
})

t.test('an already ejected target gets no WebSocket at all; all targets out: 503 before the upgrade', async (t) => {
  const a = await wsTarget(t, 'a')
  const dead = `http://127.0.0.1:${await closedPort()}`
  const { port, token } = await gateway(t, [dead, a.url], { ejectAfter: 1, ejectFor: '1m' })
  // HTTP traffic ejects the dead target (one refused connection, retried on a).
  const res = await fetch(`http://127.0.0.1:${port}/ws/x`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(res.status, 200, 'the refused request was retried on a')
  const reached: string[] = []
  for (let i = 0; i < 4; i++) reached.push((await openThrough(t, port, token)).first)
  t.same(reached, ['a:who', 'a:who', 'a:who', 'a:who'], 'every socket skipped the ejected target')

  await a.stop()
  const failing = await openThrough(t, port, token)
  t.equal(failing.first, '', 'the socket that found a dead too failed')
  t.same(await failing.closed, { code: 1011, reason: 'upstream unavailable' }, 'closed as a server error whose reason names no address')
  const refused = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`, { headers: { authorization: `Bearer ${token}` } })
  refused.on('error', () => {}) // the refused handshake ends in an error event; the status is what matters
  t.teardown(() => refused.terminate())
  const status = await new Promise<{ status: number, retryAfter: string | undefined }>((resolve, reject) => {
    refused.once('unexpected-response', (_req, response) => resolve({ status: response.statusCode ?? 0, retryAfter: response.headers['retry-after'] }))
    refused.once('open', () => reject(new Error('the upgrade was accepted with every target out')))
  })
  t.equal(status.status, 503, 'every target out: the upgrade is refused with 503')
  t.ok(Number(status.retryAfter) >= 1, 'with Retry-After')
})

t.test('an absolute Location naming any of the route\'s targets comes back under the route\'s prefix', async (t) => {
  const servers: Server[] = []
  const origins: string[] = []
  for (let i = 0; i < 2; i++) {
    const server = createServer((req, res) => {
      const self = origins[i]
      const to = req.url === '/orders/elsewhere' ? 'https://other.example/x' : `${self}/orders/42?tab=items`
      res.writeHead(302, { location: to, 'x-target': String(i) })
      res.end()
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
    servers.push(server)
    origins.push(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
  }
  const { app } = await startGateway(t, { routes: [{ prefix: '/api/orders', upstream: origins, rewritePrefix: '/orders', auth: 'none', rateLimit: false }] })
  const seen = new Map<string, string>()
  for (let i = 0; i < 4; i++) {
    const res = await app.inject({ method: 'GET', url: '/api/orders/1' })
    t.equal(res.statusCode, 302)
    seen.set(String(res.headers['x-target']), String(res.headers.location))
  }
  t.same([...seen.keys()].sort(), ['0', '1'], 'both targets answered')
  for (const [target, location] of seen) t.equal(location, '/api/orders/42?tab=items', `target ${target}'s own URL became the gateway's path`)
  const external = await app.inject({ method: 'GET', url: '/api/orders/elsewhere' })
  t.equal(external.headers.location, 'https://other.example/x', 'a redirect to another site is left alone')
})

t.test('a plain request that only names Upgrade takes no pick: an ejected target still comes back by itself', async (t) => {
  const a = await wsTarget(t, 'a')
  const revivedPort = await closedPort()
  const { port, token } = await gateway(t, [`http://127.0.0.1:${revivedPort}`, a.url], { ejectAfter: 1, ejectFor: '300ms' })
  const plain = (): Promise<number> => new Promise((resolve, reject) => {
    // Upgrade without Connection: upgrade is an ordinary request to Node.
    const req = httpRequest({ host: '127.0.0.1', port, path: '/ws/x', agent: false, headers: { authorization: `Bearer ${token}`, upgrade: 'websocket' } }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
    req.end()
  })
  const first = await fetch(`http://127.0.0.1:${port}/ws/x`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(first.status, 200, 'the refused first target was retried on a (and ejected)')
  // The first target comes back where it was.
  const back = createServer((_req, res) => res.end('revived'))
  await new Promise<void>((resolve) => back.listen(revivedPort, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { back.closeAllConnections(); back.close(() => resolve()) }))
  // Past the ejection, many plain requests naming Upgrade: none may hold the trial for itself.
  await new Promise((resolve) => setTimeout(resolve, 400))
  for (let i = 0; i < 6; i++) t.equal(await plain(), 200)
  t.equal(a.connections(), 0, 'no WebSocket was opened by them')
  let served = false
  await waitFor('the revived target takes traffic again', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/ws/y`, { headers: { authorization: `Bearer ${token}` } })
    served ||= (await res.text()) === 'revived'
    return served
  })
  t.ok(served, 'the revived target answered')
})
