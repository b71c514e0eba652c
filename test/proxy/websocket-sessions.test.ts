import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import { DenylistMirror } from '../../src/sessions/denylist-mirror.js'
import { SqliteStore } from '../../src/sessions/sqlite-store.js'
import type { DenyEntry } from '../../src/sessions/session-store.js'
import { WebSocketSessions, type SocketClaims, type SocketCloseReason } from '../../src/proxy/websocket-sessions.js'

// The registry closes a socket on a denylist entry exactly when the mirror
// (and so authenticate) would refuse the socket's token: one rule, the
// mirror's. Links are real ws pairs over loopback.

interface Link { sockets: WebSocket[], closed: Promise<Array<{ code: number, reason: string }>> }

async function links (t: Test): Promise<() => Promise<Link>> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()))
  t.teardown(() => new Promise<void>((resolve) => { for (const c of wss.clients) c.terminate(); wss.close(() => resolve()) }))
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`
  return async () => {
    const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve))
    const client = new WebSocket(url)
    t.teardown(() => client.terminate())
    await new Promise<void>((resolve, reject) => { client.once('open', () => resolve()); client.once('error', reject) })
    const server = await accepted
    const closedWith = (s: WebSocket): Promise<{ code: number, reason: string }> => new Promise((resolve) => s.once('close', (code, reason) => resolve({ code, reason: String(reason) })))
    return { sockets: [client, server], closed: Promise.all([closedWith(client), closedWith(server)]) }
  }
}

const NOW = Date.now()
const CUT_OFF = Math.floor(NOW / 1000)
const POLICY = { route: 'r', owner: {}, closeOnExpiry: false }

function claims (over: Partial<SocketClaims>): SocketClaims {
  return { jti: 'j-other', sid: 's-other', sub: 'u-other', iat: CUT_OFF - 10, exp: CUT_OFF + 600, ...over }
}

const CASES: Array<{ name: string, entry: DenyEntry, claims: SocketClaims, closes: boolean }> = [
  { name: 'its jti', entry: { kind: 'jti', value: 'j-1', expiresAt: NOW + 60_000 }, claims: claims({ jti: 'j-1' }), closes: true },
  { name: 'its sid', entry: { kind: 'sid', value: 's-1', expiresAt: NOW + 60_000 }, claims: claims({ sid: 's-1' }), closes: true },
  { name: 'its user, token issued before the cut-off', entry: { kind: 'sub', value: 'u-1', before: CUT_OFF, expiresAt: NOW + 60_000 }, claims: claims({ sub: 'u-1', iat: CUT_OFF - 1 }), closes: true },
  { name: 'its user, our token issued in the cut-off\'s second (its sid entry covers it)', entry: { kind: 'sub', value: 'u-1', before: CUT_OFF, expiresAt: NOW + 60_000 }, claims: claims({ sub: 'u-1', iat: CUT_OFF }), closes: false },
  { name: 'its user, a sessionless token issued in the cut-off\'s second', entry: { kind: 'sub', value: 'u-1', before: CUT_OFF, expiresAt: NOW + 60_000 }, claims: claims({ sub: 'u-1', sid: '', iat: CUT_OFF }), closes: true },
  { name: 'its user, a sessionless token issued after the cut-off', entry: { kind: 'sub', value: 'u-1', before: CUT_OFF, expiresAt: NOW + 60_000 }, claims: claims({ sub: 'u-1', sid: '', iat: CUT_OFF + 1 }), closes: false },
  { name: 'another user', entry: { kind: 'sub', value: 'u-2', before: CUT_OFF, expiresAt: NOW + 60_000 }, claims: claims({ sub: 'u-1', sid: '', iat: CUT_OFF - 1 }), closes: false }
]

for (const c of CASES) {
  t.test(`a denylist entry for ${c.name}: the socket ${c.closes ? 'closes' : 'stays open'}, as authenticate decides`, async (t) => {
    const mirror = new DenylistMirror(new SqliteStore({ file: ':memory:' }), { maxStalenessMs: 5000 })
    mirror.apply(c.entry)
    t.equal(mirror.isRevoked(c.claims, NOW), c.closes, 'the mirror refuses the token iff the socket should close')

    const closes: SocketCloseReason[] = []
    const registry = new WebSocketSessions({ onClosed: (reason) => closes.push(reason) })
    const link = await (await links(t))()
    registry.add(c.claims, link.sockets, POLICY, NOW)
    registry.revoke(c.entry, NOW)
    t.equal(registry.size, c.closes ? 0 : 1, c.closes ? 'let go at once' : 'still held')
    if (c.closes && registry.size === 0) {
      t.same(await link.closed, [{ code: 1008, reason: 'session ended' }, { code: 1008, reason: 'session ended' }], 'both sides closed by policy')
      t.same(closes, ['revoked'])
    } else if (!c.closes) {
      t.same(closes, [])
      t.ok(link.sockets.every((s) => s.readyState === WebSocket.OPEN))
    }
  })
}
