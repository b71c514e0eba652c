import type { IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import { createRemoteJWKSet, decodeJwt, jwtVerify } from 'jose'
import { ASSERTION_TYP } from '../../src/proxy/identity-assertion.js'
import { login, startGateway } from '../helpers/gateway.js'

// WebSocket upgrades go through the same hooks as any request: a token is
// required, forged identity headers are dropped, ours are set.

async function wsUpstream (t: Test): Promise<{ url: string, upgrades: IncomingMessage[] }> {
  const upgrades: IncomingMessage[] = []
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  wss.on('connection', (socket, req) => {
    upgrades.push(req)
    socket.on('message', (data) => socket.send(`echo:${String(data)}`))
  })
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()))
  t.teardown(() => new Promise<void>((resolve) => { for (const c of wss.clients) c.terminate(); wss.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`, upgrades }
}

function connect (url: string, headers: Record<string, string>): Promise<{ ws: WebSocket | null, status: number }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers })
    ws.once('open', () => resolve({ ws, status: 101 }))
    ws.once('unexpected-response', (_req, res) => { resolve({ ws: null, status: res.statusCode ?? 0 }); ws.terminate() })
    ws.once('error', () => resolve({ ws: null, status: 0 }))
  })
}

t.test('a WebSocket upgrade needs a token and carries our identity headers only', async (t) => {
  const up = await wsUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/ws', upstream: up.url, websocket: true }] })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const base = `ws://127.0.0.1:${(app.server.address() as AddressInfo).port}/ws/chat`

  const refused = await connect(base, { 'x-user-id': 'root' })
  t.equal(refused.status, 401, 'no token, no upgrade')
  t.equal(up.upgrades.length, 0, 'the upstream saw nothing')

  const { access_token: token } = await login(app, 'bob')
  const { ws, status } = await connect(base, { authorization: `Bearer ${token}`, 'X-User-Id': 'root', x_user_roles: 'admin', cookie: 'tg_refresh=secret; theme=dark' })
  t.equal(status, 101)
  t.teardown(() => ws?.terminate())
  const reply = await new Promise<string>((resolve) => { ws!.once('message', (d) => resolve(String(d))); ws!.send('hi') })
  t.equal(reply, 'echo:hi')
  const headers = up.upgrades[0].headers
  t.equal(headers['x-user-id'], 'u-2')
  t.equal(headers['x-user-roles'], 'user')
  t.notOk(up.upgrades[0].rawHeaders.map((h) => h.toLowerCase()).includes('x_user_roles'))
  t.equal(headers.cookie, 'theme=dark', 'the gateway cookie stays at the gateway')
  t.equal(headers.authorization, undefined)
})

t.test('with the identity assertion on, an upgrade carries one the JWKS verifies, and a client\'s own is dropped', async (t) => {
  const up = await wsUpstream(t)
  const { app } = await startGateway(t, { identity: { assertion: { ttl: '60s' } }, routes: [{ prefix: '/ws', upstream: up.url, websocket: true }] })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const origin = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  const { access_token: token } = await login(app, 'bob')
  const forged = 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0.'
  const { ws, status } = await connect(`${origin.replace('http', 'ws')}/ws/chat`, { authorization: `Bearer ${token}`, 'x-tokengate-assertion': forged })
  t.equal(status, 101)
  t.teardown(() => ws?.terminate())
  // the gateway opens the upstream side as the client's opens: an echo proves it is there
  t.equal(await new Promise<string>((resolve) => { ws!.once('message', (d) => resolve(String(d))); ws!.send('hi') }), 'echo:hi')
  const assertion = up.upgrades[0]?.headers['x-tokengate-assertion']
  t.type(assertion, 'string')
  t.not(assertion, forged, 'the client\'s header did not reach the upstream')
  const { payload } = await jwtVerify(assertion as string, createRemoteJWKSet(new URL(`${origin}/.well-known/jwks.json`)), { issuer: 'tokengate', audience: up.url, typ: ASSERTION_TYP })
  t.match(payload, { sub: 'u-2', token_jti: decodeJwt(token).jti })
})
