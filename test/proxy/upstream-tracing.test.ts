import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'

// Traces across the hop: a real OTLP/HTTP receiver (JSON encoding) gets the
// gateway's spans, and the upstream's traceparent names the same trace and
// the client span of its attempt.

interface OtlpSpan {
  traceId: string
  spanId: string
  parentSpanId?: string
  name: string
  kind: number
  attributes: Array<{ key: string, value: Record<string, unknown> }>
}

async function startReceiver (t: Test): Promise<{ url: string, spans: OtlpSpan[], contentTypes: string[] }> {
  const spans: OtlpSpan[] = []
  const contentTypes: string[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      contentTypes.push(req.headers['content-type'] ?? '')
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { resourceSpans: Array<{ scopeSpans: Array<{ spans: OtlpSpan[] }> }> }
      for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`, spans, contentTypes }
}

function attribute (span: OtlpSpan, key: string): unknown {
  const found = span.attributes.find((a) => a.key === key)
  return found === undefined ? undefined : Object.values(found.value)[0]
}

const CLIENT_TRACE = '0af7651916cd43dd8448eb211c80319c'
const CLIENT_PARENT = 'b7ad6b7169203331'

t.test('spans reach the OTLP receiver and the upstream sees the trace of its attempt', async (t) => {
  const receiver = await startReceiver(t)
  const upstream = await startUpstream(t)
  const { app } = await startGateway(t, {
    tracing: { enabled: true, otlp: { endpoint: receiver.url } },
    routes: [{ prefix: '/svc', upstream: upstream.url, auth: 'none', rateLimit: false }]
  })
  const res = await app.inject({ method: 'GET', url: '/svc/x', headers: { traceparent: `00-${CLIENT_TRACE}-${CLIENT_PARENT}-01`, tracestate: 'vendor=secret' } })
  t.equal(res.statusCode, 200)
  // Closing the gateway flushes the batch to the receiver.
  await app.close()
  const traceparent = String(upstream.seen[0].headers.traceparent)
  const [, traceId, parentId] = traceparent.split('-')
  t.not(traceId, CLIENT_TRACE, 'an untrusted client trace is not continued')
  t.equal(upstream.seen[0].headers.tracestate, undefined, 'an untrusted tracestate is not forwarded')
  const server = receiver.spans.find((s) => s.kind === 2)
  const client = receiver.spans.find((s) => s.kind === 3)
  if (server === undefined || client === undefined) throw new Error(`spans missing: ${JSON.stringify(receiver.spans)}`)
  t.equal(server.traceId, traceId, 'the upstream saw the exported trace')
  t.equal(client.spanId, parentId, 'the upstream\'s parent is the attempt\'s client span')
  t.equal(client.parentSpanId, server.spanId)
  t.equal(attribute(server, 'http.route'), '/svc')
  t.equal(attribute(server, 'http.response.status_code'), 200)
  t.equal(attribute(client, 'server.address'), upstream.url)
  t.equal(attribute(client, 'tokengate.outcome'), 'answered')
  t.equal(Number(attribute(client, 'tokengate.retry')), 0)
  t.match(receiver.contentTypes[0], /json/)
})

t.test('trustIncoming continues the client\'s trace; a retry is a second client span', async (t) => {
  const receiver = await startReceiver(t)
  const reset = await startUpstream(t, (_req, res) => { res.socket?.destroy() })
  const upstream = await startUpstream(t)
  const { app } = await startGateway(t, {
    tracing: { enabled: true, trustIncoming: true, otlp: { endpoint: receiver.url } },
    routes: [{ prefix: '/svc', upstream: [reset.url, upstream.url], auth: 'none', rateLimit: false }]
  })
  const res = await app.inject({ method: 'GET', url: '/svc/x', headers: { traceparent: `00-${CLIENT_TRACE}-${CLIENT_PARENT}-01`, tracestate: 'vendor=v1' } })
  t.equal(res.statusCode, 200)
  await app.close()
  t.equal(String(upstream.seen[0].headers.traceparent).split('-')[1], CLIENT_TRACE)
  t.equal(upstream.seen[0].headers.tracestate, 'vendor=v1')
  const server = receiver.spans.find((s) => s.kind === 2)
  t.equal(server?.parentSpanId, CLIENT_PARENT)
  const clients = receiver.spans.filter((s) => s.kind === 3).sort((a, b) => Number(attribute(a, 'tokengate.retry')) - Number(attribute(b, 'tokengate.retry')))
  t.equal(clients.length, 2)
  t.equal(attribute(clients[0], 'server.address'), reset.url)
  t.not(attribute(clients[0], 'tokengate.outcome'), 'answered')
  t.equal(attribute(clients[1], 'server.address'), upstream.url)
  t.equal(Number(attribute(clients[1], 'tokengate.retry')), 1)
})

t.test('the config of DESIGN.md (an endpoint, no enabled key) exports spans', async (t) => {
  const receiver = await startReceiver(t)
  const upstream = await startUpstream(t)
  const { app } = await startGateway(t, {
    tracing: { otlp: { endpoint: receiver.url }, trustIncoming: false },
    routes: [{ prefix: '/svc', upstream: upstream.url, auth: 'none', rateLimit: false }]
  })
  t.equal((await app.inject({ method: 'GET', url: '/svc/x' })).statusCode, 200)
  await app.close()
  const server = receiver.spans.find((s) => s.kind === 2)
  t.equal(server?.traceId, String(upstream.seen[0].headers.traceparent).split('-')[1], 'the receiver has the trace the upstream saw')
  t.ok(receiver.spans.some((s) => s.kind === 3), 'and the attempt\'s client span')
})

t.test('no tracing key at all: tracing is off', async (t) => {
  const upstream = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/svc', upstream: upstream.url, auth: 'none', rateLimit: false }] })
  t.equal(app.tracing, null)
})

t.test('enabled: false beside an endpoint: the client\'s traceparent passes through untouched and nothing is exported', async (t) => {
  const receiver = await startReceiver(t)
  const upstream = await startUpstream(t)
  const { app } = await startGateway(t, {
    tracing: { enabled: false, otlp: { endpoint: receiver.url } },
    routes: [{ prefix: '/svc', upstream: upstream.url, auth: 'none', rateLimit: false }]
  })
  t.equal(app.tracing, null)
  const sent = `00-${CLIENT_TRACE}-${CLIENT_PARENT}-01`
  t.equal((await app.inject({ method: 'GET', url: '/svc/x', headers: { traceparent: sent } })).statusCode, 200)
  await app.close()
  t.equal(upstream.seen[0].headers.traceparent, sent)
  t.equal(receiver.spans.length, 0)
})

for (const userId of ['hash', 'omit'] as const) {
  t.test(`tracing.userId: ${userId} — the server span never carries the raw user id`, async (t) => {
    const receiver = await startReceiver(t)
    const upstream = await startUpstream(t)
    const { app } = await startGateway(t, {
      tracing: { enabled: true, userId, otlp: { endpoint: receiver.url } },
      routes: [{ prefix: '/svc', upstream: upstream.url, auth: 'required', rateLimit: false }]
    })
    const { access_token: token } = await login(app, 'alice')
    t.equal((await app.inject({ method: 'GET', url: '/svc/x', headers: { authorization: `Bearer ${token}` } })).statusCode, 200)
    await app.close()
    const server = receiver.spans.find((s) => s.kind === 2 && attribute(s, 'http.route') === '/svc')
    if (server === undefined) throw new Error(`server span missing: ${JSON.stringify(receiver.spans)}`)
    t.notMatch(JSON.stringify(receiver.spans), /"u-1"|alice/, 'neither the subject nor the username is exported')
    const hashed = attribute(server, 'enduser.id_hash')
    if (userId === 'hash') t.match(hashed, /^[0-9a-f]{16}$/, 'a hash prefix of the subject stands in for it')
    else t.equal(hashed, undefined, 'no user attribute at all')
  })
}
