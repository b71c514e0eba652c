import { createServer, type Server } from 'node:http'

// A tiny backend for the README walk-through: it answers every request with
// what it received, so you can see the identity headers the gateway sends.
// Not for production; it trusts whatever reaches it, as backends behind the
// gateway do.

export interface EchoReply {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  body: string
}

export function createEchoUpstream (): Server {
  return createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => { if (chunks.length < 64) chunks.push(c) })
    req.on('end', () => {
      const reply: EchoReply = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8').slice(0, 4096) }
      const text = JSON.stringify(reply, null, 2) + '\n'
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
      res.end(text)
    })
  })
}

export function listenEchoUpstream (host: string, port: number): Promise<Server> {
  const server = createEchoUpstream()
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve(server))
  })
}
