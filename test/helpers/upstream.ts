import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'

// A real HTTP upstream on port 0 that records what reached it, so a test can
// assert both what the upstream saw and that a refused request never arrived.

export interface SeenRequest {
  method: string
  url: string
  headers: IncomingHttpHeaders
  rawHeaders: string[]
  body: string
}

export interface TestUpstream {
  url: string
  port: number
  seen: SeenRequest[]
  server: Server
  close (): Promise<void>
}

export type UpstreamHandler = (req: SeenRequest, res: import('node:http').ServerResponse) => void

export async function startUpstream (t: Test, handler?: UpstreamHandler): Promise<TestUpstream> {
  const seen: SeenRequest[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const record = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString('utf8') }
      seen.push(record)
      if (handler !== undefined) return handler(record, res)
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ method: record.method, url: record.url, headers: record.headers }))
    })
    req.on('error', () => { /* the gateway aborted the body */ })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const close = (): Promise<void> => new Promise((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  })
  t.teardown(close)
  return { url: `http://127.0.0.1:${port}`, port, seen, server, close }
}

/** A port nothing listens on: the connection is refused. */
export async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
