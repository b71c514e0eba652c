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

interface Upstream {
  url: string
  closes: Array<{ code: number, reason: string }>
  received: string[]
  /** with holdAccepts: each upgrade the upstream has heard but not yet accepted; call one to accept it */
  held: Array<() => void>
}

async function wsUpstream (t: Test, holdAccepts = false): Promise<Upstream> {
  const closes: Upstream['closes'] = []
  const received: string[] = []
  const held: Upstream['held'] = []
  // ws's two-argument verifyClient keeps the handshake waiting until it answers.
  const hold = holdAccepts ? { verifyClient: (_info: unknown, accept: (ok: boolean) => void) => { held.push(() => accept(true)) } } : {}
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', ...hold })
  wss.on('connection', (socket) => {
    socket.on('message', (data) => {
      received.push(String(data))
      socket.send(`echo:${String(data)}`)
    })
    socket.on('close', (code, reason) => closes.push({ code, reason: String(reason) }))
  })
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()))
  t.teardown(() => new Promise<void>((resolve) => { for (const c of wss.clients) c.terminate(); wss.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, closes, received, held }
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

async function gateways (t: Test, kind: StoreKind, count: number, extra: Record<string, unknown> = {}, holdAccepts = false): Promise<{ apps: FastifyInstance[], up: Upstream }> {
  const up = await wsUpstream(t, holdAccepts)
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

/** After the close nothing more crosses the gateway: the client cannot send, and the upstream heard nothing new. */
async function nothingRelayedAfter (t: Test, client: Client, up: Upstream): Promise<void> {
  const heard = up.received.length
  const sent = await new Promise<Error | undefined>((resolve) => client.ws.send('after the close', resolve))
  t.ok(sent instanceof Error, 'the client side is closed: nothing can be sent')
  t.equal(up.received.length, heard, 'the upstream received nothing more')
  t.notOk(up.received.includes('after the close'))
}

async function metric (app: FastifyInstance, reason: string): Promise<number> {
  const text = await app.metrics.text()
  const line = text.split('\n').find((l) => l.startsWith(`tokengate_websockets_closed_total{reason="${reason}"}`))
  return Number(line?.split(' ')[1] ?? NaN)
}

t.test('logout closes the socket opened with the session\'s token [sqlite]', async (t) => {
  const { apps: [app], up } = await gateways(t, 'sqlite', 1)
  const { access_token: token } = await login(app, 'alice')
  const client = await open(t, app, token)
  const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${token}` } })
  t.ok(res.statusCode < 300, `logout answered ${res.statusCode}`)
  await closedByPolicy(t, client, up)
  t.equal(await metric(app, 'revoked'), 1)
})

t.test('logout-all closes the user\'s socket, not another user\'s [sqlite]', async (t) => {
  const { apps: [app], up } = await gateways(t, 'sqlite', 1)
  const alice = await login(app, 'alice')
  const bob = await login(app, 'bob')
  const aliceSocket = await open(t, app, alice.access_token)
  const bobSocket = await open(t, app, bob.access_token)
  const res = await app.inject({ method: 'POST', url: '/auth/logout-all', headers: { authorization: `Bearer ${alice.access_token}` } })
  t.ok(res.statusCode < 300, `logout-all answered ${res.statusCode}`)
  await closedByPolicy(t, aliceSocket, up)
  await nothingRelayedAfter(t, aliceSocket, up)
  const echoed = new Promise<string>((resolve) => bobSocket.ws.once('message', (d) => resolve(String(d))))
  bobSocket.ws.send('still here')
  t.equal(await echoed, 'echo:still here')
  t.equal(up.closes.length, 1, 'only alice\'s upstream side was closed')
})

t.test('the socket closes when its token expires', async (t) => {
  const { apps: [app], up } = await gateways(t, 'sqlite', 1, { tokens: { accessTtl: '2s', clockSkew: '0s' } })
  const { access_token: token } = await login(app, 'alice')
  const client = await open(t, app, token)
  await closedByPolicy(t, client, up)
  t.same(await closeCounts(app), { revoked: 0, expired: 1, route_changed: 0, shutdown: 0 }, 'counted as expired, not as revoked')
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

t.test('closing the gateway (shutdown) closes its sockets', async (t) => {
  const { apps: [app], up } = await gateways(t, 'sqlite', 1)
  const { access_token: token } = await login(app, 'alice')
  const client = await open(t, app, token)
  const closing = app.close()
  await closedByPolicy(t, client, up)
  await closing
  t.equal(await metric(app, 'shutdown'), 1, 'counted as shutdown')
  t.equal(await metric(app, 'route_changed'), 0, 'not as a changed route')
})

/** The claims of one of our access tokens (read only to name what to revoke). */
function claimsOf (token: string): { jti: string, sid: string } {
  return JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as { jti: string, sid: string }
}

/** The close counters of one instance, by reason. */
async function closeCounts (app: FastifyInstance): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const reason of ['revoked', 'expired', 'route_changed', 'shutdown']) out[reason] = await metric(app, reason)
  return out
}

for (const kind of ['sqlite', 'redis'] as const) {
  t.test(`logout on one instance closes the socket held by the other [${kind}]`, async (t) => {
    const { apps: [a, b], up } = await gateways(t, kind, 2)
    const { access_token: token } = await login(a, 'alice')
    const client = await open(t, b, token)
    const res = await a.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${token}` } })
    t.ok(res.statusCode < 300, `logout answered ${res.statusCode}`)
    await closedByPolicy(t, client, up)
    await nothingRelayedAfter(t, client, up)
    t.equal(await metric(b, 'revoked'), 1, 'counted on the instance holding it')
  })

  t.test(`admin revocation by sub closes the user's socket [${kind}]`, async (t) => {
    const { apps: [a, b], up } = await gateways(t, kind, 2)
    const admin = await login(a, 'alice')
    const bob = await login(a, 'bob')
    const client = await open(t, b, bob.access_token)
    const res = await a.inject({ method: 'POST', url: '/admin/revoke', headers: { authorization: `Bearer ${admin.access_token}` }, payload: { sub: 'u-2' } })
    t.ok(res.statusCode < 300, `revoke answered ${res.statusCode}`)
    await closedByPolicy(t, client, up)
    await nothingRelayedAfter(t, client, up)
  })

  t.test(`a revocation landing while the upstream side is opening closes the socket once it opens [${kind}]`, async (t) => {
    const { apps: [a, b], up } = await gateways(t, kind, 2, {}, true)
    const { access_token: token } = await login(a, 'alice')
    const port = (b.server.address() as AddressInfo).port
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/chat`, { headers: { authorization: `Bearer ${token}` } })
    t.teardown(() => ws.terminate())
    const closed = new Promise<{ code: number, reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })))
    await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
    // The gateway let the upgrade in (the token was good) and is now waiting
    // for the upstream to accept its side.
    await waitFor('the upstream heard the gateway\'s upgrade', () => up.held.length === 1)
    const res = await a.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${token}` } })
    t.ok(res.statusCode < 300, `logout answered ${res.statusCode}`)
    await waitFor('the instance holding the socket refuses the token', async () => (await b.inject({ method: 'GET', url: '/ws/chat', headers: { authorization: `Bearer ${token}` } })).statusCode === 401)
    ws.send('sent while the upstream side was opening')
    const echoed = new Promise<string>((resolve) => ws.once('message', (d) => resolve(`relayed: ${String(d)}`)))
    up.held[0]()
    if (!t.equal(await Promise.race([closed.then(() => 'closed'), echoed]), 'closed', 'closed before anything was relayed')) return
    await closedByPolicy(t, { ws, closed }, up)
    t.same(up.received, [], 'the upstream never received what the client sent')
    await nothingRelayedAfter(t, { ws, closed }, up)
    t.same(await closeCounts(b), { revoked: 1, expired: 0, route_changed: 0, shutdown: 0 }, 'counted as revoked on the instance holding it')
  })

  t.test(`refresh-token reuse closes the socket opened in the session [${kind}]`, async (t) => {
    const { apps: [a, b], up } = await gateways(t, kind, 2, { tokens: { reuseGrace: '0s' } })
    const first = await login(a, 'alice')
    const client = await open(t, b, first.access_token)
    const rotated = await a.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: first.refresh_token } })
    t.equal(rotated.statusCode, 200)
    t.equal(up.closes.length, 0, 'a normal rotation leaves the socket alone')
    const echoed = new Promise<string>((resolve) => client.ws.once('message', (d) => resolve(String(d))))
    client.ws.send('still open')
    t.equal(await echoed, 'echo:still open', 'messages are relayed before the reuse')
    const reused = await a.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: first.refresh_token } })
    t.equal(reused.statusCode, 401, 'the rotated token presented again is reuse')
    await closedByPolicy(t, client, up)
    await nothingRelayedAfter(t, client, up)
    t.same(await closeCounts(b), { revoked: 1, expired: 0, route_changed: 0, shutdown: 0 }, 'counted once, as revoked, on the instance holding it')
  })

  t.test(`admin revocation by jti closes exactly that token's socket [${kind}]`, async (t) => {
    const { apps: [a, b], up } = await gateways(t, kind, 2)
    const admin = await login(a, 'alice')
    const one = await login(a, 'bob')
    const other = await login(a, 'bob')
    const target = await open(t, b, one.access_token)
    const bystander = await open(t, b, other.access_token)
    const res = await a.inject({ method: 'POST', url: '/admin/revoke', headers: { authorization: `Bearer ${admin.access_token}` }, payload: { jti: claimsOf(one.access_token).jti } })
    t.ok(res.statusCode < 300, `revoke answered ${res.statusCode}`)
    await closedByPolicy(t, target, up)
    await nothingRelayedAfter(t, target, up)
    const echoed = new Promise<string>((resolve) => bystander.ws.once('message', (d) => resolve(String(d))))
    bystander.ws.send('other token')
    t.equal(await echoed, 'echo:other token', 'the same user\'s socket opened with another token stays open')
    t.equal(await metric(b, 'revoked'), 1)
  })

  t.test(`admin revocation by sid closes the session's socket, not another session's [${kind}]`, async (t) => {
    const { apps: [a, b], up } = await gateways(t, kind, 2)
    const admin = await login(a, 'alice')
    const session = await login(a, 'bob')
    const otherSession = await login(a, 'bob')
    const target = await open(t, b, session.access_token)
    const bystander = await open(t, b, otherSession.access_token)
    const res = await a.inject({ method: 'POST', url: '/admin/revoke', headers: { authorization: `Bearer ${admin.access_token}` }, payload: { sid: claimsOf(session.access_token).sid } })
    t.ok(res.statusCode < 300, `revoke answered ${res.statusCode}`)
    await closedByPolicy(t, target, up)
    await nothingRelayedAfter(t, target, up)
    const echoed = new Promise<string>((resolve) => bystander.ws.once('message', (d) => resolve(String(d))))
    bystander.ws.send('other session')
    t.equal(await echoed, 'echo:other session', 'the user\'s other session keeps its socket')
    t.equal(await metric(b, 'revoked'), 1)
  })
}
