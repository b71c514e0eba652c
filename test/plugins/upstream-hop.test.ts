import { once } from 'node:events'
import { createServer as createHttpServer, request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http'
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net'
import t, { type Test } from 'tap'
import { startGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'
import { waitFor } from '../helpers/wait-for.js'
import { logSink } from '../helpers/log-sink.js'

// The HTTP hop to an upstream (src/proxy/upstream-forwarder.ts) over real sockets on
// both sides: what the client sees of the upstream's answer, what the upstream
// sees of the client's request, and what happens when either side stops
// reading, goes away or is not HTTP at all.

/** Builds a gateway with these routes and listens on a real port. */
async function gatewayPort (t: Test, routes: Array<Record<string, unknown>>): Promise<number> {
  const { app } = await startGateway(t, { routes })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return (app.server.address() as AddressInfo).port
}

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  /** false when the connection was cut before the whole body arrived */
  complete: boolean
}

interface SendOptions {
  method?: string
  headers?: OutgoingHttpHeaders
  body?: Buffer | string
}

/** Opens a new connection to the gateway and sends one request (no agent, so no pooled socket outlives the test). */
function open (port: number, path: string, { method = 'GET', headers = {} }: SendOptions = {}): ClientRequest {
  return httpRequest({ host: '127.0.0.1', port, path, method, headers, agent: false })
}

/** Reads a whole answer; a body cut short resolves with `complete: false` rather than rejecting. */
function readAnswer (res: IncomingMessage): Promise<Answer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    res.on('data', (c: Buffer) => chunks.push(c))
    res.on('error', () => { /* a cut body: 'close' follows with complete === false */ })
    res.on('close', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), complete: res.complete }))
  })
}

/** One request over a fresh connection, its whole answer. */
async function send (port: number, path: string, options: SendOptions = {}): Promise<Answer> {
  const req = open(port, path, options)
  const answered = once(req, 'response') as Promise<[IncomingMessage]>
  req.end(options.body)
  const [res] = await answered
  return readAnswer(res)
}

/** Polls `check` until it holds; fails the test with `what` after a generous deadline. */
/**
 * A TCP server on port 0 that speaks whatever bytes `answer` writes, once a
 * request's head has arrived: for answers node:http would refuse to produce.
 */
async function startRawUpstream (t: Test, answer: (socket: Socket) => void): Promise<{ url: string }> {
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => { /* the gateway may hang up first */ })
    let head = ''
    socket.on('data', (chunk: Buffer) => {
      head += chunk.toString('latin1')
      // keep-alive: answer each request head that arrives on the connection
      while (head.includes('\r\n\r\n')) {
        head = head.slice(head.indexOf('\r\n\r\n') + 4)
        answer(socket)
      }
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

interface ReceivedBody { url: string, contentType: string | undefined, body: Buffer }

/** An HTTP upstream that keeps each request body as bytes (the shared helper decodes them as UTF-8). */
async function startBodyRecorder (t: Test): Promise<{ url: string, received: ReceivedBody[] }> {
  const received: ReceivedBody[] = []
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      received.push({ url: req.url ?? '', contentType: req.headers['content-type'], body: Buffer.concat(chunks) })
      res.end('stored')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received }
}

t.test('hop-by-hop answer headers, and those the upstream names in Connection, never reach the client', async (t) => {
  // Raw bytes: node:http would not send Trailer without chunked framing or let us spell Connection freely.
  const up = await startRawUpstream(t, (socket) => socket.write([
    'HTTP/1.1 200 OK',
    'Content-Type: text/plain; charset=utf-8',
    'Connection: x-private',
    'X-Private: secret',
    'Keep-Alive: timeout=77',
    'Proxy-Connection: keep-alive',
    'Trailer: x-checksum',
    'X-App: kept',
    'Set-Cookie: app=1; Path=/',
    'Set-Cookie: tg_refresh=evil; Path=/auth',
    'Transfer-Encoding: chunked',
    '',
    '5', 'hello', '0', 'X-Checksum: abc', '', ''
  ].join('\r\n')))
  const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none' }])
  // keep-alive on the client side too, so the gateway writes a Keep-Alive of its own
  const res = await send(port, '/app/page', { headers: { connection: 'keep-alive' } })
  t.equal(res.status, 200)
  t.equal(res.body.toString(), 'hello')
  t.equal(res.headers['x-private'], undefined, 'a header the upstream named in Connection stays behind')
  t.notMatch(res.headers.connection ?? '', /x-private/i)
  t.not(res.headers['keep-alive'], 'timeout=77', 'the upstream\'s keep-alive parameters are its own')
  t.equal(res.headers['proxy-connection'], undefined)
  t.equal(res.headers.trailer, undefined)
  t.equal(res.headers['content-type'], 'text/plain; charset=utf-8')
  t.equal(res.headers['x-app'], 'kept')
  t.same(res.headers['set-cookie'], ['app=1; Path=/'], 'the app\'s cookie arrives, the gateway\'s own is dropped')
})

t.test('a Connection header split over two lines still hides every header it names', async (t) => {
  // RFC 9110 §5.3: a list header may be sent as several field lines; the
  // upstream's answer then has `connection` as an array.
  const up = await startRawUpstream(t, (socket) => socket.write([
    'HTTP/1.1 200 OK',
    'Connection: keep-alive',
    'Connection: x-private',
    'X-Private: secret',
    'Content-Length: 2',
    '', 'ok'
  ].join('\r\n')))
  const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none' }])
  const res = await send(port, '/app/page')
  t.equal(res.status, 200)
  t.equal(res.body.toString(), 'ok')
  t.equal(res.headers['x-private'], undefined)
})

t.test('a Location under the upstream\'s rewritePrefix is rewritten back under the route prefix', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/orders/new') {
      res.writeHead(302, { location: '/orders/1' })
      res.end()
    } else {
      res.end(`order at ${req.url}`)
    }
  })
  const port = await gatewayPort(t, [{ prefix: '/api', upstream: up.url, rewritePrefix: '/orders', auth: 'none' }])
  const res = await send(port, '/api/new')
  t.equal(res.status, 302)
  t.equal(up.seen[0].url, '/orders/new')
  // /api/x is the upstream's /orders/x, so its /orders/1 is the client's /api/1.
  t.equal(res.headers.location, '/api/1')
  const followed = await send(port, res.headers.location ?? '')
  t.equal(followed.status, 200)
  t.equal(followed.body.toString(), 'order at /orders/1', 'following it reaches the upstream\'s /orders/1')
})

t.test('an upstream 503 with Retry-After reaches the client as is, asked once (no hidden retry)', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(503, { 'retry-after': '120', 'content-type': 'text/plain' })
    res.end('down for maintenance')
  })
  const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none' }])
  const res = await send(port, '/app/status')
  t.equal(res.status, 503)
  t.equal(res.headers['retry-after'], '120')
  t.equal(res.headers['content-type'], 'text/plain')
  t.equal(res.body.toString(), 'down for maintenance', 'the upstream\'s own body, not a gateway error')
  t.equal(up.seen.length, 1, 'the upstream got exactly one request')
})

t.test('a client that stops reading stops the upstream: the body is not buffered in the gateway', async (t) => {
  const TOTAL = 64 * 1024 * 1024
  const CHUNK = 64 * 1024
  const upstream = { written: 0, finished: false }
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(TOTAL) })
    const chunk = Buffer.alloc(CHUNK, 0x61)
    const pump = (): void => {
      while (upstream.written < TOTAL) {
        upstream.written += CHUNK
        if (!res.write(chunk)) {
          res.once('drain', pump)
          return
        }
      }
      res.end()
    }
    res.on('finish', () => { upstream.finished = true })
    pump()
  })
  const port = await gatewayPort(t, [{ prefix: '/files', upstream: up.url, auth: 'none' }])

  const req = open(port, '/files/big.bin')
  req.on('error', () => { /* reported through the response below */ })
  const answered = once(req, 'response') as Promise<[IncomingMessage]>
  req.end()
  const [res] = await answered
  res.pause()
  t.equal(res.statusCode, 200)

  // Every socket and stream buffer on the way fills up; then the upstream must stall.
  let last = -1
  let steady = 0
  await waitFor('the upstream to stop writing', () => {
    steady = upstream.written === last ? steady + 1 : 0
    last = upstream.written
    return steady >= 10 || upstream.finished
  }, 1500, 20)
  t.notOk(upstream.finished, 'the upstream has not finished its body')
  t.ok(upstream.written < TOTAL / 4, `the upstream wrote far less than the whole body (${upstream.written} of ${TOTAL} bytes)`)

  let received = 0
  res.on('data', (c: Buffer) => { received += c.length })
  const ended = once(res, 'end')
  res.resume()
  await ended
  t.equal(received, TOTAL, 'resumed, the client gets every byte')
  t.ok(upstream.finished)
})

t.test('a client that goes away aborts the upstream request; the gateway carries on', async (t) => {
  let upstreamClosed = 0
  const up = await startUpstream(t, (req, res) => {
    if (req.url === '/hang') res.on('close', () => { upstreamClosed++ })
    else res.end('ok')
  })
  const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none' }])

  const req = open(port, '/app/hang')
  req.on('error', () => { /* we hang up ourselves */ })
  req.end()
  await waitFor('the upstream to receive the request', () => up.seen.length === 1, 500, 20)
  req.destroy()
  await waitFor('the gateway to abort the upstream request', () => upstreamClosed === 1, 500, 20)
  t.equal(upstreamClosed, 1, 'the upstream\'s request was closed under it')

  const next = await send(port, '/app/next')
  t.equal(next.status, 200)
  t.equal(next.body.toString(), 'ok')
})

t.test('an upstream that dies mid-body cuts the client\'s answer; the gateway carries on', async (t) => {
  // Both framings: with a Content-Length the client can count, and chunked,
  // where only a missing last chunk tells it the body is incomplete.
  for (const framing of ['content-length', 'chunked'] as const) {
    const up = await startUpstream(t, (req, res) => {
      if (req.url !== '/dies') {
        res.end('ok')
        return
      }
      res.writeHead(200, framing === 'content-length' ? { 'content-length': '100000' } : {})
      res.write(Buffer.alloc(1000, 0x62), () => res.socket?.destroy())
    })
    const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none' }])
    const cut = await send(port, '/app/dies')
    t.equal(cut.status, 200, `${framing}: the answer had started`)
    t.notOk(cut.complete, `${framing}: the client sees a cut body, not a clean end`)
    t.ok(cut.body.length < 100000, `${framing}: only part of the body arrived (${cut.body.length} bytes)`)

    const next = await send(port, '/app/next')
    t.equal(next.status, 200, `${framing}: the next request is served`)
    t.equal(next.body.toString(), 'ok')
  }
})

t.test('an upstream whose body is broken before its first byte → 502 TG_UPSTREAM_BAD_GATEWAY, not an empty reply', async (t) => {
  const up = await startRawUpstream(t, (socket) => socket.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n'))
  const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none' }])
  const res = await send(port, '/app/chunkbad')
  t.equal(res.status, 502, 'the head was held back, so the client gets a real answer')
  t.ok(res.complete)
  t.match(JSON.parse(res.body.toString()), { statusCode: 502, code: 'TG_UPSTREAM_BAD_GATEWAY' })
})

t.test('an answer cut mid-body leaves a warning naming the request in the log (no access line can be written for it)', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.writeHead(200, { 'content-length': '100000' })
    res.write(Buffer.alloc(1000, 0x62), () => res.socket?.destroy())
  })
  const sink = logSink()
  const { app } = await startGateway(t, { routes: [{ prefix: '/app', upstream: up.url, auth: 'none' }] }, { logger: { level: 'info', stream: sink.stream } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const cut = await send((app.server.address() as AddressInfo).port, '/app/dies', { headers: { 'x-request-id': 'cut-1' } })
  t.notOk(cut.complete, 'the client sees a cut body')
  await waitFor('the warning is logged', () => sink.lines.some((l) => l.msg === 'upstream answer cut short: closed the client connection mid-answer'), 100, 20)
  const line = sink.lines.find((l) => l.msg === 'upstream answer cut short: closed the client connection mid-answer')
  t.match(line, { level: 40, reqId: 'cut-1', upstream: up.url, statusCode: 200 })
})

t.test('an upstream that does not speak HTTP → 502 TG_UPSTREAM_BAD_GATEWAY, no internals', async (t) => {
  const up = await startRawUpstream(t, (socket) => socket.end('HELLO\r\n\r\n'))
  const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none' }])
  const res = await send(port, '/app/x')
  t.equal(res.status, 502)
  t.match(res.headers['content-type'], /^application\/json/)
  const body = res.body.toString()
  t.match(JSON.parse(body), { statusCode: 502, code: 'TG_UPSTREAM_BAD_GATEWAY' })
  const upstreamPort = new URL(up.url).port
  t.notMatch(body, new RegExp(`127\\.0\\.0\\.1|:${upstreamPort}|HPE_|HELLO|stack`), 'no internal address or parser detail')
})

t.test('Expect: 100-continue: the client gets its 100, the upstream gets the body and no Expect', async (t) => {
  const up = await startUpstream(t)
  const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none' }])
  const body = 'a body sent only after 100 Continue'
  const req = open(port, '/app/upload', {
    method: 'POST',
    headers: { expect: '100-continue', 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) }
  })
  let continued = false
  req.on('continue', () => {
    continued = true
    req.end(body)
  })
  const [response] = await (once(req, 'response') as Promise<[IncomingMessage]>)
  const res = await readAnswer(response)
  t.ok(continued, 'the gateway answered 100 Continue')
  t.equal(res.status, 200, 'the upstream\'s answer, not a gateway error')
  t.equal(up.seen.length, 1)
  t.equal(up.seen[0]?.body, body)
  t.equal(up.seen[0]?.headers.expect, undefined, 'the expectation was met at the gateway')
})

t.test('the query string reaches the upstream exactly as sent, with the client\'s Host and X-Forwarded-Host', async (t) => {
  const up = await startUpstream(t)
  const port = await gatewayPort(t, [{ prefix: '/api', upstream: up.url, auth: 'none' }])
  const res = await send(port, '/api/x?a=1&a=2&b=%20x&c', { headers: { host: 'shop.example:8443' } })
  t.equal(res.status, 200)
  const seen = up.seen[0]
  t.equal(seen.url, '/x?a=1&a=2&b=%20x&c', 'not parsed and re-serialised')
  t.equal(seen.headers.host, 'shop.example:8443')
  t.equal(seen.headers['x-forwarded-host'], 'shop.example:8443')
})

t.test('encoded traversal out of a public route is refused; legitimate odd paths are forwarded', async (t) => {
  const up = await startUpstream(t)
  const port = await gatewayPort(t, [
    { prefix: '/public', upstream: up.url, auth: 'none' },
    { prefix: '/api', upstream: up.url }
  ])
  // each spelling decodes to `..`, `..;` or `..\` after one or more passes
  const climbing = [
    '/public/%252e%252e/api/x', '/public/%25252e%25252e/api/x', '/public/%252E%252e/api/x',
    '/public/%2e%2e%3b/api/x', '/public/%252e%252e%253b/api/x', '/public/%252e%252e;x/api/x',
    '/public/%252e%252e%255capi/x', '/public/a/%252e%252e/%252e%252e/api/x'
  ]
  for (const path of climbing) {
    const res = await send(port, path)
    t.equal(res.status, 400, path)
    t.match(JSON.parse(res.body.toString()), { code: 'TG_BAD_REQUEST' }, path)
  }
  t.equal(up.seen.length, 0, 'nothing reached the upstream')

  const legitimate: Array<[string, string]> = [['/public/100%25', '/100%25'], ['/public/a/.../b', '/a/.../b']]
  for (const [path, upstreamUrl] of legitimate) {
    const res = await send(port, path)
    t.equal(res.status, 200, path)
    t.equal(up.seen[up.seen.length - 1]?.url, upstreamUrl, `${path} arrives as sent`)
  }
})

t.test('request bodies reach the upstream byte for byte, whatever their content type', async (t) => {
  const up = await startBodyRecorder(t)
  const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none' }])
  const everyByte = Buffer.from(Array.from({ length: 256 }, (_v, i) => i))
  const bodies: Array<[string, Buffer]> = [
    ['text/plain; charset=utf-8', Buffer.from('héllo wörld\r\n  trailing spaces  \n\n', 'utf8')],
    ['text/plain; charset=iso-8859-1', Buffer.from('caf\xe9 na\xefve', 'latin1')],
    // spacing and key order a parse-and-serialise would change
    ['application/json', Buffer.from('{ "b" : 1,\n  "a":[1 ,2], "big": 12345678901234567890 }\n', 'utf8')],
    ['application/octet-stream', Buffer.concat([everyByte, Buffer.from([0xc3, 0x28, 0xff, 0xfe, 0xed, 0xa0, 0x80])])]
  ]
  for (const [contentType, body] of bodies) {
    const res = await send(port, '/app/store', { method: 'POST', headers: { 'content-type': contentType }, body })
    t.equal(res.status, 200, contentType)
    const got = up.received[up.received.length - 1]
    t.equal(got?.contentType, contentType)
    t.ok(got?.body.equals(body), `${contentType}: identical bytes (${got?.body.length} of ${body.length})`)
  }
  t.equal(up.received.length, bodies.length)
})

t.test('the gateway adds its request id and rate-limit headers to a proxied answer, unless the upstream set its own', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    res.writeHead(200, req.url === '/own' ? { 'x-request-id': 'upstream-id', 'x-ratelimit-limit': '7' } : {})
    res.end('ok')
  })
  const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none', rateLimit: { max: 50, timeWindow: '1m' } }])
  const plain = await send(port, '/app/plain', { headers: { 'x-request-id': 'client-id' } })
  t.equal(plain.headers['x-request-id'], 'client-id')
  t.equal(plain.headers['x-ratelimit-limit'], '50')
  t.equal(plain.headers['x-ratelimit-remaining'], '49')
  const own = await send(port, '/app/own', { headers: { 'x-request-id': 'client-id' } })
  t.equal(own.headers['x-request-id'], 'upstream-id')
  t.equal(own.headers['x-ratelimit-limit'], '7')
  t.equal(own.headers['x-ratelimit-remaining'], '48', 'headers the upstream did not set are still the gateway\'s')
})

t.test('HEAD goes upstream as HEAD; the client gets the upstream\'s headers and no body', async (t) => {
  const up = await startUpstream(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': '1234' })
    res.end(req.method === 'HEAD' ? undefined : Buffer.alloc(1234))
  })
  const port = await gatewayPort(t, [{ prefix: '/app', upstream: up.url, auth: 'none' }])
  const head = await send(port, '/app/file', { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers['content-length'], '1234')
  t.equal(head.body.length, 0)
  t.equal(up.seen.at(-1)?.method, 'HEAD')
  const get = await send(port, '/app/file')
  t.equal(get.body.length, 1234, 'the connection pool is fine after a HEAD')
})
