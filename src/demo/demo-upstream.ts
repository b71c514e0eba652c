import { createServer, type Server } from 'node:http'
import { exampleAppDir, isExampleAppPath, serveExampleApp } from './example-app.js'

// A tiny backend for the README walk-through: it answers every request with
// what it received, so you can see the identity headers the gateway sends.
// It also serves the example browser app under /app/, so that the app,
// routed through the gateway, runs on the gateway's own origin (where the
// refresh cookie and the Origin check work). Not for production; it trusts
// whatever reaches it, as backends behind the gateway do.

export { EXAMPLE_APP_PATH, exampleAppDir } from './example-app.js'

export interface EchoReply {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  body: string
}

export function createEchoUpstream (appDir: string | undefined = exampleAppDir()): Server {
  return createServer((req, res) => {
    if (isExampleAppPath(req.url ?? '')) return void serveExampleApp(req, res, appDir)
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
