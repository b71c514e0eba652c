import { once } from 'node:events'
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { startGateway } from '../helpers/gateway.js'
import { closedPort, startUpstream } from '../helpers/upstream.js'
import { waitFor } from '../helpers/wait-for.js'

// On a route with several targets and retries on, a request body is still
// streamed to the upstream as it arrives, never held back so that it could be
// sent again: a body that reached a target is never retried, whatever the
// method, and the upstream sees the first bytes before the client has sent
// the last. A body no byte of which was read yet (the first target refused
// the connection) goes whole to the next target, still streamed.

async function gatewayPort (t: Test, upstream: string[]): Promise<number> {
  const { app } = await startGateway(t, { routes: [{ prefix: '/svc', upstream, auth: 'none', rateLimit: false, retries: 2, ejectAfter: 100 }] })
  await app.listen({ host: '127.0.0.1', port: 0 })
  return (app.server.address() as AddressInfo).port
}

/** An upstream that records each chunk as it arrives and answers with `answer(everything received)` once the body ends. */
async function startChunkRecorder (t: Test, answer: (body: string) => string): Promise<{ url: string, received: () => string }> {
  const chunks: string[] = []
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.on('data', (c: Buffer) => chunks.push(String(c)))
    req.on('end', () => res.end(answer(chunks.join(''))))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received: () => chunks.join('') }
}

/**
 * Sends 'first chunk;', waits until `recorder` has it while the client still
 * holds the rest, then sends 'second chunk'; answers with the response.
 */
async function sendInTwoChunks (t: Test, port: number, method: string, recorder: { received: () => string }): Promise<{ status: number | undefined, body: string }> {
  const req = httpRequest({ host: '127.0.0.1', port, path: '/svc/upload', method, agent: false, headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' } })
  const answered = once(req, 'response') as Promise<[IncomingMessage]>
  req.write('first chunk;')
  await waitFor('the upstream has the first chunk while the client holds the rest', () => recorder.received().includes('first chunk;'))
  t.notOk(recorder.received().includes('second'), 'the rest has not been sent yet')
  req.end('second chunk')
  const [res] = await answered
  let body = ''
  for await (const c of res) body += String(c)
  return { status: res.statusCode, body }
}

t.test('a streamed body reaches the upstream while the client is still sending it', async (t) => {
  const recorder = await startChunkRecorder(t, (body) => `got ${body.length} bytes`)
  const other = await startUpstream(t)
  const port = await gatewayPort(t, [recorder.url, other.url])
  const { status, body } = await sendInTwoChunks(t, port, 'PUT', recorder)
  t.equal(status, 200)
  t.equal(body, `got ${'first chunk;second chunk'.length} bytes`)
  t.equal(other.seen.length, 0, 'nothing went to the other target')
})

for (const method of ['PUT', 'DELETE', 'POST']) {
  t.test(`a ${method} whose body reached a target that then reset is not retried, though retries are on`, async (t) => {
    // Reads the whole body, then cuts the connection without answering.
    const reset = await startUpstream(t, (_req, res) => { res.socket?.destroy() })
    const good = await startUpstream(t)
    const port = await gatewayPort(t, [reset.url, good.url])
    const req = httpRequest({ host: '127.0.0.1', port, path: '/svc/thing', method, agent: false, headers: { 'content-type': 'text/plain', 'content-length': '9' } })
    const answered = once(req, 'response') as Promise<[IncomingMessage]>
    req.end('some body')
    const [res] = await answered
    res.resume()
    t.equal(res.statusCode, 502, 'the client learns the upstream failed')
    t.equal(reset.seen.length, 1)
    t.equal(reset.seen[0].body, 'some body')
    t.equal(good.seen.length, 0, 'the body was not sent again to the other target (it was not kept)')
  })
}

for (const method of ['POST', 'PUT', 'PATCH']) {
  t.test(`a ${method} with a body whose first target refused the connection goes whole to the other`, async (t) => {
    const dead = await closedPort()
    const live = await startUpstream(t)
    // Round-robin starts at the first target: the refused one.
    const port = await gatewayPort(t, [`http://127.0.0.1:${dead}`, live.url])
    const req = httpRequest({ host: '127.0.0.1', port, path: '/svc/thing', method, agent: false, headers: { 'content-type': 'text/plain', 'content-length': '9' } })
    const answered = once(req, 'response') as Promise<[IncomingMessage]>
    req.end('some body')
    const [res] = await answered
    res.resume()
    t.equal(res.statusCode, 200, 'nothing of it reached the refused target, so it was retried')
    t.equal(live.seen.length, 1)
    t.equal(live.seen[0].body, 'some body', 'the whole body, once')
  })
}

t.test('a body retried after a refused connection is still streamed, not held back', async (t) => {
  const recorder = await startChunkRecorder(t, (body) => `got ${body}`)
  const dead = await closedPort()
  const port = await gatewayPort(t, [`http://127.0.0.1:${dead}`, recorder.url])
  const { status, body } = await sendInTwoChunks(t, port, 'POST', recorder)
  t.equal(status, 200)
  t.equal(body, 'got first chunk;second chunk')
})
