import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { startGateway } from '../helpers/gateway.js'
import { startUpstream, type TestUpstream } from '../helpers/upstream.js'

// Requests shaped to slip past the route policy or confuse the upstream,
// sent as raw bytes: a public route must never become a door to a protected
// one, and malformed framing must be refused before anything is forwarded.

interface Gate { port: number, up: TestUpstream }

async function gate (t: Test): Promise<Gate> {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, {
    routes: [{ prefix: '/public', upstream: up.url, auth: 'none' }, { prefix: '/api', upstream: up.url }]
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return { port: (app.server.address() as AddressInfo).port, up }
}

/** Sends raw bytes and returns the status line's code (0 when the connection closed without one). */
function rawStatus (port: number, bytes: string): Promise<number> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let data = ''
    socket.setTimeout(3000, () => socket.destroy())
    socket.on('data', (c) => { data += String(c) })
    socket.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0)))
    socket.on('error', () => { /* close follows */ })
    socket.write(bytes, () => socket.end())
  })
}

const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: gw\r\n${extra}Connection: close\r\n\r\n`

const traversals = [
  '/public/../api/x', '/public/%2e%2e/api/x', '/public/%2E%2E/api/x', '/public/..%2fapi/x', '/public/..%2Fapi/x',
  '/public/..;/api/x', '/public/.%2e/api/x', '/public/..\\api/x', '/public/..%5capi/x', '/public//../api/x',
  '/public/a/../../api/x', '/public/%', '/public/%zz/x'
]

for (const path of traversals) {
  t.test(`path traversal ${path} never reaches a protected route`, async (t) => {
    const { port, up } = await gate(t)
    const status = await rawStatus(port, get(path))
    t.ok(status >= 400 && status < 500, `refused with a 4xx (${status})`)
    t.notOk(up.seen.some((r) => r.url.includes('api')), 'nothing under api was forwarded')
  })
}

// These two name nothing under api, so "nothing under api was forwarded"
// holds whatever happens; what must hold is that a path that does not
// percent-decode is refused as malformed, in our body, and forwarded nowhere.
for (const path of ['/public/%', '/public/%zz/x']) {
  t.test(`undecodable path ${path} is a 400 TG_BAD_REQUEST and reaches no upstream`, async (t) => {
    const { port, up } = await gate(t)
    const answer = await new Promise<string>((resolve) => {
      const socket = connect(port, '127.0.0.1')
      let data = ''
      socket.on('data', (c) => { data += String(c) })
      socket.on('close', () => resolve(data))
      socket.on('error', () => { /* close follows */ })
      socket.write(get(path), () => socket.end())
    })
    t.match(answer, /^HTTP\/1\.1 400 /)
    t.match(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)), { statusCode: 400, code: 'TG_BAD_REQUEST' })
    t.equal(up.seen.length, 0, 'the public upstream saw nothing either')
  })
}

t.test('prefix confusion: /apiX and /publicity are not under /api or /public', async (t) => {
  const { port, up } = await gate(t)
  t.equal(await rawStatus(port, get('/apiX/1')), 404)
  t.equal(await rawStatus(port, get('/publicity')), 404)
  t.equal(up.seen.length, 0)
})

t.test('absolute-form request target cannot pick another host or route', async (t) => {
  const { port, up } = await gate(t)
  const status = await rawStatus(port, get('http://169.254.169.254/api/x'))
  t.ok(status === 400 || status === 404 || status === 401, `refused (${status})`)
  t.equal(up.seen.length, 0)
})

t.test('CONNECT is refused', async (t) => {
  const { port, up } = await gate(t)
  const status = await rawStatus(port, 'CONNECT 127.0.0.1:6379 HTTP/1.1\r\nHost: 127.0.0.1:6379\r\n\r\n')
  t.ok(status === 0 || (status >= 400 && status < 500), `refused (${status})`)
  t.equal(up.seen.length, 0)
})

// Framing tricks that Node's parser must refuse outright: 400, nothing upstream.
const MALFORMED_REQUESTS: ReadonlyArray<readonly [string, string]> = [
  ['request smuggling: Content-Length with Transfer-Encoding is refused',
    'POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/x HTTP/1.1\r\nHost: gw\r\n\r\n'],
  ['request smuggling: two different Content-Length headers are refused',
    'POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc'],
  ['obs-fold header continuation is refused',
    'GET /public/x HTTP/1.1\r\nHost: gw\r\nX-A: 1\r\n X-User-Id: root\r\nConnection: close\r\n\r\n'],
  ['CR/LF in the request target is refused',
    'GET /public/x\rX-User-Id: root HTTP/1.1\r\nHost: gw\r\n\r\n']
]

for (const [name, bytes] of MALFORMED_REQUESTS) {
  t.test(name, async (t) => {
    const { port, up } = await gate(t)
    t.equal(await rawStatus(port, bytes), 400)
    t.equal(up.seen.length, 0)
  })
}

t.test('h2c upgrade is never granted nor passed to the upstream', async (t) => {
  const { port, up } = await gate(t)
  const status = await rawStatus(port, 'GET /public/x HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n')
  t.not(status, 101, `not switched (${status})`)
  t.notOk(up.seen.some((r) => r.headers.upgrade !== undefined || r.headers['http2-settings'] !== undefined), 'no upgrade headers upstream')
})

t.test('oversized headers get 431 and reach nothing', async (t) => {
  const { port, up } = await gate(t)
  const status = await rawStatus(port, get('/public/x', `X-Big: ${'a'.repeat(20_000)}\r\n`))
  t.equal(status, 431)
  t.equal(up.seen.length, 0)
})
