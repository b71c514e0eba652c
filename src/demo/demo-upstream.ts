import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { join } from 'node:path'

// A tiny backend for the README walk-through: it answers every request with
// what it received, so you can see the identity headers the gateway sends.
// It also serves the example browser app under /app/, so that the app,
// routed through the gateway, runs on the gateway's own origin (where the
// refresh cookie and the Origin check work). Not for production; it trusts
// whatever reaches it, as backends behind the gateway do.

export interface EchoReply {
  method: string
  url: string
  headers: Record<string, string | string[] | undefined>
  body: string
}

/** Where the demo upstream serves the example browser app; the example config routes this prefix to it. */
export const EXAMPLE_APP_PATH = '/app/'

// Only these names are served, so no request path ever reaches the file system.
const EXAMPLE_APP_FILES: ReadonlyMap<string, { file: string, type: string }> = new Map([
  ['', { file: 'index.html', type: 'text/html; charset=utf-8' }],
  ['index.html', { file: 'index.html', type: 'text/html; charset=utf-8' }],
  ['app.js', { file: 'app.js', type: 'text/javascript; charset=utf-8' }],
  ['app.css', { file: 'app.css', type: 'text/css; charset=utf-8' }]
])

// The access token is in the page's memory: what guards it is that no script
// but the app's own runs there.
const EXAMPLE_APP_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache'
}

/** examples/browser-app, found from src/demo/ (tests) and from dist/src/demo/ (built). */
export function exampleAppDir (): string | undefined {
  return [join(__dirname, '..', '..', 'examples', 'browser-app'), join(__dirname, '..', '..', '..', 'examples', 'browser-app')]
    .find((dir) => existsSync(join(dir, 'index.html')))
}

async function serveExampleApp (req: IncomingMessage, res: ServerResponse, appDir: string | undefined): Promise<void> {
  const path = (req.url ?? '').split('?')[0]
  if (path === EXAMPLE_APP_PATH.slice(0, -1)) {
    res.writeHead(301, { location: EXAMPLE_APP_PATH, 'content-length': 0 })
    return void res.end()
  }
  const entry = EXAMPLE_APP_FILES.get(path.slice(EXAMPLE_APP_PATH.length))
  const readable = entry !== undefined && appDir !== undefined && (req.method === 'GET' || req.method === 'HEAD')
  const body = readable ? await readFile(join(appDir, entry.file)).catch(() => undefined) : undefined
  if (entry === undefined || body === undefined) {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' })
    return void res.end('not found\n')
  }
  res.writeHead(200, { 'content-type': entry.type, 'content-length': body.length, ...EXAMPLE_APP_HEADERS })
  res.end(req.method === 'HEAD' ? undefined : body)
}

function isExampleAppPath (url: string): boolean {
  const path = url.split('?')[0]
  return path === EXAMPLE_APP_PATH.slice(0, -1) || path.startsWith(EXAMPLE_APP_PATH)
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
