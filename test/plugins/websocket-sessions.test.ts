import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import type { FastifyInstance } from 'fastify'
import { login, mergeConfig, startGateways, testConfig } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait-for.js'
import { storeConfig, type StoreKind } from '../helpers/lifecycle.js'

// A proxied WebSocket ends with the token it was opened with: when the token
// is revoked (on whichever instance) or expires, both the browser's side and
// the upstream's side are closed with 1008 and a reason that names nothing.

interface Upstream { url: string, closes: Array<{ code: number, reason: string }> }

async function wsUpstream (t: Test): Promise<Upstream> {
  const closes: Upstream['closes'] = []
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  wss.on('connection', (socket) => {
    socket.on('message', (data) => socket.send(`echo:${String(data)}`))
    socket.on('close', (code, reason) => closes.push({ code, reason: String(reason) }))
  })
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()))
  t.teardown(() => new Promise<void>((resolve) => { for (const c of wss.clients) c.terminate(); wss.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, closes }
}

interface Client { ws: WebSocket, closed: Promise<{ code: number, reason: string }> }

async function open (t: Test, app: FastifyInstance, token: string): Promise<Client> {
  const port = (app.server.address() as AddressInfo).port
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`, { headers: { authorization: `Bearer ${token}` } })
  t.teardown(() => ws.terminate())
  const closed = new Promise<{ code: number, reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })))
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
  // A round trip proves the link to the upstream is up (and registered).
  const echoed = new Promise<string>((resolve) => ws.once('message', (d) => resolve(String(d))))
  ws.send('hi')
  t.equal(await echoed, 'echo:hi')
  return { ws, closed }
}

async function gateways (t: Test, kind: StoreKind, count: number, extra: Record<string, unknown> = {}): Promise<{ apps: FastifyInstance[], up: Upstream }> {
  const up = await wsUpstream(t)
  const loaded = await testConfig(mergeConfig({ ...storeConfig(t, kind, 'ws'), routes: [{ prefix: '/ws', upstream: up.url, websocket: true }] }, extra))
  const apps = await startGateways(t, loaded, count)
  for (const app of apps) await app.listen({ host: '127.0.0.1', port: 0 })
  return { apps, up }
}

async function closedByPolicy (t: Test, client: Client, up: Upstream): Promise<void> {
  const { code, reason } = await client.closed
  t.equal(code, 1008)
  t.equal(reason, 'session ended')
  await waitFor('the upstream side closed', () => up.closes.length > 0)
  t.equal(up.closes[0].code, 1008)
  t.equal(up.closes[0].reason, 'session ended')
}

async function metric (app: FastifyInstance, reason: string): Promise<number> {
  const text = await app.metrics.text()
  const line = text.split('\n').find((l) => l.startsWith(`tokengate_websockets_closed_total{reason="${reason}"}`))
  return Number(line?.split(' ')[1] ?? NaN)
}

t.test('logout closes the socket opened with the session\'s token [memory]', async (t) => {
  const { apps: [app], up } = await gateways(t, 'sqlite', 1)
  const { access_token: token } = await login(app, 'alice')
  const client = await open(t, app, token)
  const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${token}` } })
  t.ok(res.statusCode < 300, `logout answered ${res.statusCode}`)
  await closedByPolicy(t, client, up)
  t.equal(await metric(app, 'revoked'), 1)
})

t.test('another user\'s socket stays open when one user logs out [memory]', async (t) => {
  const { apps: [app] } = await gateways(t, 'sqlite', 1)
  const alice = await login(app, 'alice')
  const bob = await login(app, 'bob')
  const aliceSocket = await open(t, app, alice.access_token)
  const bobSocket = await open(t, app, bob.access_token)
  await app.inject({ method: 'POST', url: '/auth/logout-all', headers: { authorization: `Bearer ${alice.access_token}` } })
  t.equal((await aliceSocket.closed).code, 1008)
  const echoed = new Promise<string>((resolve) => bobSocket.ws.once('message', (d) => resolve(String(d))))
  bobSocket.ws.send('still here')
  t.equal(await echoed, 'echo:still here')
})

t.test('logout on one instance closes the socket held by the other [redis]', async (t) => {
  const { apps: [a, b], up } = await gateways(t, 'redis', 2)
  const { access_token: token } = await login(a, 'alice')
  const client = await open(t, b, token)
  const res = await a.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${token}` } })
  t.ok(res.statusCode < 300)
  await closedByPolicy(t, client, up)
  t.equal(await metric(b, 'revoked'), 1)
})

t.test('admin revocation by sub closes the user\'s socket [redis]', async (t) => {
  const { apps: [a, b], up } = await gateways(t, 'redis', 2)
  const admin = await login(a, 'alice')
  const bob = await login(a, 'bob')
  const client = await open(t, b, bob.access_token)
  const res = await a.inject({ method: 'POST', url: '/admin/revoke', headers: { authorization: `Bearer ${admin.access_token}` }, payload: { sub: 'u-2' } })
  t.ok(res.statusCode < 300, `revoke answered ${res.statusCode}`)
  await closedByPolicy(t, client, up)
})

t.test('the socket closes when its token expires', async (t) => {
  const { apps: [app], up } = await gateways(t, 'sqlite', 1, { tokens: { accessTtl: '2s', clockSkew: '0s' } })
  const { access_token: token } = await login(app, 'alice')
  const client = await open(t, app, token)
  await closedByPolicy(t, client, up)
  t.equal(await metric(app, 'expired'), 1)
})

t.test('websocket.closeOnExpiry: false keeps it open past expiry', async (t) => {
  const { apps: [app] } = await gateways(t, 'sqlite', 1, { tokens: { accessTtl: '1s', clockSkew: '0s' }, websocket: { closeOnExpiry: false } })
  const { access_token: token } = await login(app, 'alice')
  const client = await open(t, app, token)
  await new Promise((resolve) => setTimeout(resolve, 2500))
  const echoed = new Promise<string>((resolve) => client.ws.once('message', (d) => resolve(String(d))))
  client.ws.send('late')
  t.equal(await echoed, 'echo:late')
})

t.test('closing the gateway (a reload replaces it) closes its sockets', async (t) => {
  const { apps: [app], up } = await gateways(t, 'sqlite', 1)
  const { access_token: token } = await login(app, 'alice')
  const client = await open(t, app, token)
  const closing = app.close()
  await closedByPolicy(t, client, up)
  await closing
})
