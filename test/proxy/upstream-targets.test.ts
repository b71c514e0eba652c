import { once } from 'node:events'
import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server } from 'node:http'
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { loadConfig } from '../../src/config/load-config.js'
import { startGateway, writeTestConfig } from '../helpers/gateway.js'
import { closedPort, startUpstream } from '../helpers/upstream.js'

// A route with several targets over real sockets: how requests are spread,
// what happens when a target is killed, hangs, resets or comes back, which
// requests are retried on another target and which never are.

interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

/** One request over a fresh connection (no agent, so no pooled socket outlives the test). */
async function send (port: number, path: string, method = 'GET', body?: string): Promise<Answer> {
  const req = httpRequest({ host: '127.0.0.1', port, path, method, agent: false, headers: body === undefined ? {} : { 'content-type': 'application/octet-stream', 'content-length': String(Buffer.byteLength(body)) } })
  const answered = once(req, 'response') as Promise<[IncomingMessage]>
  req.end(body)
  const [res] = await answered
  const chunks: Buffer[] = []
  for await (const chunk of res) chunks.push(chunk as Buffer)
  return { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }
}

async function gatewayPort (t: Test, route: Record<string, unknown>): Promise<{ port: number, metrics: () => Promise<string> }> {
  const { app } = await startGateway(t, { routes: [{ prefix: '/svc', auth: 'none', rateLimit: false, ...route }] })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    port: (app.server.address() as AddressInfo).port,
    metrics: async () => (await app.inject({ method: 'GET', url: '/metrics' })).body
  }
}

/** A plain upstream on a chosen port, for a target that comes back where it was. */
async function listenOn (t: Test, port: number, seen: string[]): Promise<Server> {
  const server = createServer((req, res) => {
    seen.push(`${req.method ?? ''} ${req.url ?? ''}`)
    res.end('back')
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return server
}

/** Accepts connections and never answers: a hung upstream, counting who connected. */
async function hangOn (t: Test, port: number): Promise<{ connections: () => number }> {
  let connections = 0
  const sockets = new Set<import('node:net').Socket>()
  const server: NetServer = createNetServer((socket) => {
    connections++
    sockets.add(socket)
  })
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()) }))
  return { connections: () => connections }
}

function metricValue (text: string, name: string, target: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`target="${target}"`))
  return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1))
}

t.test('round-robin spreads requests evenly over two targets', async (t) => {
  const a = await startUpstream(t)
  const b = await startUpstream(t)
  const { port } = await gatewayPort(t, { upstream: [a.url, b.url] })
  for (let i = 0; i < 10; i++) t.equal((await send(port, '/svc/x')).status, 200)
  t.equal(a.seen.length, 5)
  t.equal(b.seen.length, 5)
})

t.test('least-request sends to the target with fewer requests in flight', async (t) => {
  const slowAnswers: Array<() => void> = []
  const slow = await startUpstream(t, (_req, res) => { slowAnswers.push(() => res.end('slow')) })
  const fast = await startUpstream(t)
  const { port } = await gatewayPort(t, { upstream: [slow.url, fast.url], balance: 'least-request' })
  // The first request goes to the slow target and stays there; every later one finds it busy.
  const pending = send(port, '/svc/hold')
  while (slow.seen.length === 0) await sleep(10)
  for (let i = 0; i < 4; i++) t.equal((await send(port, '/svc/x')).status, 200)
  t.equal(slow.seen.length, 1, 'nothing else went to the busy target')
  t.equal(fast.seen.length, 4)
  for (const answer of slowAnswers) answer()
  t.equal((await pending).status, 200)
})

t.test('a killed target is ejected after ejectAfter failures and idempotent requests never see a 5xx', async (t) => {
  const a = await startUpstream(t)
  const b = await startUpstream(t)
  const { port, metrics } = await gatewayPort(t, { upstream: [a.url, b.url], ejectAfter: 3, ejectFor: '60s' })
  await a.close()
  const statuses: number[] = []
  for (let i = 0; i < 20; i++) statuses.push((await send(port, '/svc/x')).status)
  t.same(new Set(statuses), new Set([200]), 'every GET answered by the live target')
  t.equal(b.seen.length, 20)
  const text = await metrics()
  t.equal(metricValue(text, 'tokengate_upstream_target_failures_total', a.url), 3, 'the dead target was tried only ejectAfter times')
  t.equal(metricValue(text, 'tokengate_upstream_target_ejections_total', a.url), 1)
  t.equal(metricValue(text, 'tokengate_upstream_target_up', a.url), 0)
  t.equal(metricValue(text, 'tokengate_upstream_target_up', b.url), 1)
})

t.test('all targets down: 503 with Retry-After at once, and no request waits on a hung target', async (t) => {
  const portA = await closedPort()
  const portB = await closedPort()
  const { port } = await gatewayPort(t, { upstream: [`http://127.0.0.1:${portA}`, `http://127.0.0.1:${portB}`], ejectAfter: 2, ejectFor: '60s', timeout: '60s' })
  // Two requests, each refused by both targets (first try and its retry): both ejected.
  for (let i = 0; i < 2; i++) t.equal((await send(port, '/svc/x')).status, 503)
  // Now both ports accept connections and never answer: a request sent to either would hang for 60 s.
  const hungA = await hangOn(t, portA)
  const hungB = await hangOn(t, portB)
  for (let i = 0; i < 3; i++) {
    const answer = await send(port, '/svc/x')
    t.equal(answer.status, 503)
    t.equal(JSON.parse(answer.body).code, 'TG_UPSTREAM_UNAVAILABLE')
    t.ok(Number(answer.headers['retry-after']) >= 1, 'Retry-After says when to come back')
  }
  t.equal(hungA.connections() + hungB.connections(), 0, 'the open circuit sent nothing to the targets')
  // The gateway is ready (its store answers); only the route is not.
  const ready = await send(port, '/readyz')
  t.equal(ready.status, 200, '/readyz is not affected by the upstream being down')
  const metrics = (await send(port, '/metrics')).body
  t.equal(metricValue(metrics, 'tokengate_upstream_target_up', `http://127.0.0.1:${portA}`), 0, '/metrics shows each target down')
  t.equal(metricValue(metrics, 'tokengate_upstream_target_up', `http://127.0.0.1:${portB}`), 0)
  t.equal(metricValue(metrics, 'tokengate_upstream_target_ejections_total', `http://127.0.0.1:${portA}`), 1)
})

t.test('a target that comes back takes traffic again by itself', async (t) => {
  const targetPort = await closedPort()
  const { port } = await gatewayPort(t, { upstream: [`http://127.0.0.1:${targetPort}`], ejectAfter: 1, ejectFor: '100ms' })
  t.equal((await send(port, '/svc/x')).status, 503)
  const seen: string[] = []
  await listenOn(t, targetPort, seen)
  let status = 0
  for (let i = 0; i < 200 && status !== 200; i++) {
    status = (await send(port, '/svc/x')).status
    if (status !== 200) await sleep(50)
  }
  t.equal(status, 200, 'the trial request after the back-off reached the restarted target')
  t.equal((await send(port, '/svc/again')).status, 200)
  t.ok(seen.includes('GET /again'))
})

t.test('half-open: while the only target is on trial, other requests get 503 at once', async (t) => {
  const targetPort = await closedPort()
  const { port } = await gatewayPort(t, { upstream: [`http://127.0.0.1:${targetPort}`], ejectAfter: 1, ejectFor: '100ms', timeout: '60s' })
  t.equal((await send(port, '/svc/x')).status, 503)
  const hung = await hangOn(t, targetPort)
  await sleep(150)
  // The first request after the back-off is the probe: it hangs on the target.
  const probe = httpRequest({ host: '127.0.0.1', port, path: '/svc/probe', agent: false })
  probe.on('error', () => { /* cut at teardown */ })
  probe.end()
  while (hung.connections() === 0) await sleep(10)
  for (let i = 0; i < 3; i++) t.equal((await send(port, '/svc/x')).status, 503)
  t.equal(hung.connections(), 1, 'only the probe reached the target')
  probe.destroy()
})

t.test('a POST that may have arrived is never sent twice; a GET reset by one target is retried on the other', async (t) => {
  const reset = (_req: unknown, res: import('node:http').ServerResponse): void => { res.socket?.destroy() }
  const a = await startUpstream(t, reset)
  const b = await startUpstream(t, reset)
  const { port } = await gatewayPort(t, { upstream: [a.url, b.url], ejectAfter: 100 })
  t.equal((await send(port, '/svc/order', 'POST', 'one order')).status, 502)
  t.equal((await send(port, '/svc/order', 'POST')).status, 502)
  t.equal((await send(port, '/svc/order', 'PATCH')).status, 502)
  const posts = [...a.seen, ...b.seen]
  t.equal(posts.length, 3, 'each non-idempotent request reached one target once')

  const c = await startUpstream(t, reset)
  const d = await startUpstream(t)
  const route = await gatewayPort(t, { upstream: [c.url, d.url], ejectAfter: 100 })
  t.equal((await send(route.port, '/svc/read')).status, 200, 'the GET reset by the first target was answered by the second')
  t.equal(c.seen.length, 1)
  t.equal(d.seen.length, 1)
})

t.test('a refused connection is retried even for a POST: nothing of it reached the refused target', async (t) => {
  const dead = await closedPort()
  const live = await startUpstream(t)
  const { port } = await gatewayPort(t, { upstream: [`http://127.0.0.1:${dead}`, live.url], ejectAfter: 100 })
  t.equal((await send(port, '/svc/ping', 'POST')).status, 200, 'nothing reached the refused target, so the retry is safe')
  t.equal(live.seen.length, 1)
})

t.test('retries stay within the route budget under a flood', async (t) => {
  const bad = await startUpstream(t, (_req, res) => { res.socket?.destroy() })
  const good = await startUpstream(t)
  const { port } = await gatewayPort(t, { upstream: [bad.url, good.url], ejectAfter: 100000, retries: 1 })
  const total = 200
  const statuses: number[] = []
  let sent = 0
  const started = performance.now()
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (sent < total) {
      sent++
      statuses.push((await send(port, '/svc/x')).status)
    }
  }))
  const attempts = bad.seen.length + good.seen.length
  // The budget is 20 % of the requests over a rolling 5 s window plus a floor
  // of 3 per window: on a slow machine the flood may span several windows.
  const windows = Math.ceil((performance.now() - started) / 5000) + 1
  t.ok(attempts <= total * 1.2 + 3 * windows, `at most 20 % extra attempts (plus 3 per 5 s window): ${attempts} for ${total} requests`)
  t.ok(attempts > total, 'some requests were retried')
  t.ok(statuses.includes(502), 'once the budget is spent, a failure reaches the client instead of a retry')
})

t.test('active health checks eject a failing target before any request hits it, and bring it back', async (t) => {
  let healthy = false
  const a = await startUpstream(t, (req, res) => {
    if (req.url === '/health') { res.statusCode = healthy ? 200 : 503; res.end(); return }
    res.end('a')
  })
  const b = await startUpstream(t)
  const { port } = await gatewayPort(t, { upstream: [a.url, b.url], healthCheck: { path: '/health', interval: '50ms', timeout: '1s', healthyAfter: 1, unhealthyAfter: 2 } })
  while (a.seen.filter((r) => r.url === '/health').length < 3) await sleep(20)
  for (let i = 0; i < 4; i++) t.equal((await send(port, '/svc/x')).status, 200)
  t.equal(a.seen.filter((r) => r.url !== '/health').length, 0, 'the unhealthy target got no traffic')
  healthy = true
  const before = a.seen.filter((r) => r.url === '/health').length
  while (a.seen.filter((r) => r.url === '/health').length < before + 2) await sleep(20)
  for (let i = 0; i < 4; i++) t.equal((await send(port, '/svc/x')).status, 200)
  t.ok(a.seen.filter((r) => r.url !== '/health').length > 0, 'the recovered target takes traffic again')
})

t.test('a target list with a bad URL refuses to start, naming file:line:col and key', async (t) => {
  const { file } = await writeTestConfig({ routes: [{ prefix: '/svc', upstream: ['http://127.0.0.1:1', 'https://127.0.0.1:2', 'ftp://x'] }] })
  const message = (f: string): string => {
    try {
      loadConfig(f, {})
      return 'started'
    } catch (err) {
      return (err as Error).message
    }
  }
  t.match(message(file), /gateway\.config\.yaml:\d+:\d+ routes\[0\]\.upstream\[2\] must be an http\(s\):\/\/host\[:port\] URL/)
  const mixed = await writeTestConfig({ routes: [{ prefix: '/svc', upstream: ['http://127.0.0.1:1', 'https://127.0.0.1:2'] }] })
  t.match(message(mixed.file), /gateway\.config\.yaml:\d+:\d+ routes\[0\]\.upstream\[1\] must use http:\/\//)
})

t.test('a hung target times out ejectAfter times, then is ejected and no request waits on it', async (t) => {
  const hungPort = await closedPort()
  const hung = await hangOn(t, hungPort)
  const live = await startUpstream(t)
  const { port } = await gatewayPort(t, { upstream: [`http://127.0.0.1:${hungPort}`, live.url], ejectAfter: 2, ejectFor: '60s', timeout: '300ms' })
  const statuses: number[] = []
  for (let i = 0; i < 10; i++) statuses.push((await send(port, '/svc/x')).status)
  t.equal(statuses.filter((s) => s === 504).length, 2, 'two requests waited out the timeout (a timed-out request is not retried)')
  t.equal(statuses.filter((s) => s === 200).length, 8)
  const connections = hung.connections()
  for (let i = 0; i < 5; i++) t.equal((await send(port, '/svc/x')).status, 200)
  t.equal(hung.connections(), connections, 'the ejected target got no new connection')
})
