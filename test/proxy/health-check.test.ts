import { once } from 'node:events'
import { request as httpRequest, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { startGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'
import { waitFor } from '../helpers/wait-for.js'

// Active health checks over real sockets: the check's verdict holds until the
// check itself reverses it, whatever ejectFor says, and a probe that never
// answers is a failing probe.

/** One GET over a fresh connection; its status. */
async function status (port: number, path: string): Promise<number> {
  const req = httpRequest({ host: '127.0.0.1', port, path, agent: false })
  const answered = once(req, 'response') as Promise<[IncomingMessage]>
  req.end()
  const [res] = await answered
  res.resume()
  await once(res, 'end')
  return res.statusCode ?? 0
}

async function gatewayPort (t: Test, route: Record<string, unknown>): Promise<{ port: number, up: (target: string) => Promise<number> }> {
  const { app } = await startGateway(t, { routes: [{ prefix: '/svc', auth: 'none', rateLimit: false, ...route }] })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return {
    port: (app.server.address() as AddressInfo).port,
    up: async (target) => {
      const text = (await app.inject({ method: 'GET', url: '/metrics' })).body
      const line = text.split('\n').find((l) => l.startsWith('tokengate_upstream_target_up{') && l.includes(`target="${target}"`))
      return line === undefined ? Number.NaN : Number(line.slice(line.lastIndexOf(' ') + 1))
    }
  }
}

t.test('a target the check found unhealthy gets no request until the check sees it pass healthyAfter times, though ejectFor is shorter than interval', async (t) => {
  let healthy = false
  const a = await startUpstream(t, (req, res) => {
    if (req.url === '/health') { res.statusCode = healthy ? 200 : 503; res.end(); return }
    res.end('a')
  })
  const b = await startUpstream(t)
  const probes = (): number => a.seen.filter((r) => r.url === '/health').length
  const requests = (): number => a.seen.filter((r) => r.url !== '/health').length
  // ejectFor is left at its default (1s), shorter than the interval: a passive
  // trial would be due long before the next probe.
  const { port, up } = await gatewayPort(t, { upstream: [a.url, b.url], healthCheck: { path: '/health', interval: '1500ms', unhealthyAfter: 1, healthyAfter: 2 } })
  await waitFor('the check holds the failing target out', async () => await up(a.url) === 0, 200, 50)

  const from = probes()
  const statuses = new Set<number>()
  while (probes() < from + 2) statuses.add(await status(port, '/svc/x'))
  t.same([...statuses], [200], 'every request was answered')
  t.equal(requests(), 0, 'across two intervals, no request reached the unhealthy target')
  t.equal(await up(a.url), 0)

  healthy = true
  const passedFrom = probes()
  await waitFor('the recovered target takes traffic again', async () => {
    await status(port, '/svc/x')
    return requests() > 0
  }, 200, 50)
  t.ok(probes() - passedFrom >= 2, 'it came back after healthyAfter passing probes, not before')
  t.equal(await up(a.url), 1)
})

t.test('a target whose health path hangs past timeout is unhealthy and gets no request', async (t) => {
  // Answers every path but the probe's, which it never answers.
  const a = await startUpstream(t, (req, res) => { if (req.url !== '/health') res.end('a') })
  const b = await startUpstream(t)
  const { port, up } = await gatewayPort(t, { upstream: [a.url, b.url], healthCheck: { path: '/health', interval: '200ms', timeout: '100ms', unhealthyAfter: 2 } })
  await waitFor('the hanging probes hold the target out', async () => await up(a.url) === 0)
  for (let i = 0; i < 6; i++) t.equal(await status(port, '/svc/x'), 200)
  t.equal(a.seen.filter((r) => r.url !== '/health').length, 0, 'the target whose probe hangs got no traffic')
  t.equal(b.seen.filter((r) => r.url !== '/health').length, 6)
})
