import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { join } from 'node:path'

// Serves examples/browser-app, in one of two setups:
// - same origin: the demo echo upstream serves it under /app/ and the gateway
//   routes /app there, so the page and the API share the gateway's origin;
// - another origin: a server of its own (createExampleAppServer) serves it,
//   told the gateway's origin, which the page then calls with CORS and
//   `credentials: 'include'`. The gateway must list this server's origin in
//   cors.origins. Not for production.

/** Where the example browser app is served. */
export const EXAMPLE_APP_PATH = '/app/'

// Only these names are served, so no request path ever reaches the file system.
const EXAMPLE_APP_FILES: ReadonlyMap<string, { file: string, type: string }> = new Map([
  ['', { file: 'index.html', type: 'text/html; charset=utf-8' }],
  ['index.html', { file: 'index.html', type: 'text/html; charset=utf-8' }],
  ['app.js', { file: 'app.js', type: 'text/javascript; charset=utf-8' }],
  ['app.css', { file: 'app.css', type: 'text/css; charset=utf-8' }]
])

/** The page's placeholder for the gateway's origin; empty means "this page's own origin". */
const GATEWAY_META = '<meta name="tokengate-gateway" content="">'

/**
 * The access token is in the page's memory: what guards it is that no script
 * but the app's own runs there. The page may connect to its own origin and,
 * in the other-origin setup, to the gateway's, nowhere else.
 */
function exampleAppHeaders (gatewayOrigin: string | undefined): Record<string, string> {
  const connect = gatewayOrigin === undefined ? "'self'" : `'self' ${gatewayOrigin}`
  return {
    'content-security-policy': `default-src 'none'; script-src 'self'; style-src 'self'; connect-src ${connect}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'`,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-cache'
  }
}

/** examples/browser-app, found from src/demo/ (tests) and from dist/src/demo/ (built). */
export function exampleAppDir (): string | undefined {
  return [join(__dirname, '..', '..', 'examples', 'browser-app'), join(__dirname, '..', '..', '..', 'examples', 'browser-app')]
    .find((dir) => existsSync(join(dir, 'index.html')))
}

export function isExampleAppPath (url: string): boolean {
  const path = url.split('?')[0]
  return path === EXAMPLE_APP_PATH.slice(0, -1) || path.startsWith(EXAMPLE_APP_PATH)
}

/** An http(s) origin in serialised form, or null: only such a value is written into the page and its CSP. */
function checkedOrigin (text: string): string | null {
  try {
    const url = new URL(text)
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.origin === text ? url.origin : null
  } catch {
    return null
  }
}

export async function serveExampleApp (req: IncomingMessage, res: ServerResponse, appDir: string | undefined, gatewayOrigin?: string): Promise<void> {
  const path = (req.url ?? '').split('?')[0]
  if (path === EXAMPLE_APP_PATH.slice(0, -1)) {
    res.writeHead(301, { location: EXAMPLE_APP_PATH, 'content-length': 0 })
    return void res.end()
  }
  const entry = EXAMPLE_APP_FILES.get(path.slice(EXAMPLE_APP_PATH.length))
  const readable = entry !== undefined && appDir !== undefined && (req.method === 'GET' || req.method === 'HEAD')
  let body = readable ? await readFile(join(appDir, entry.file)).catch(() => undefined) : undefined
  if (entry === undefined || body === undefined) {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' })
    return void res.end('not found\n')
  }
  if (gatewayOrigin !== undefined && entry.file === 'index.html') {
    body = Buffer.from(body.toString('utf8').replace(GATEWAY_META, `<meta name="tokengate-gateway" content="${gatewayOrigin}">`))
  }
  res.writeHead(200, { 'content-type': entry.type, 'content-length': body.length, ...exampleAppHeaders(gatewayOrigin) })
  res.end(req.method === 'HEAD' ? undefined : body)
}

export interface ExampleAppServerOptions {
  /** the gateway's origin as the browser reaches it, e.g. http://localhost:8080; read on every request */
  gatewayOrigin: string
  appDir?: string
}

/**
 * The example app on an origin of its own, calling the gateway at
 * `gatewayOrigin` across origins. `/` leads to the app.
 */
export function createExampleAppServer (options: ExampleAppServerOptions): Server {
  const appDir = options.appDir ?? exampleAppDir()
  return createServer((req, res) => {
    const gatewayOrigin = checkedOrigin(options.gatewayOrigin)
    if (gatewayOrigin === null) {
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' })
      return void res.end('the example app server was given no valid gateway origin\n')
    }
    if ((req.url ?? '').split('?')[0] === '/') {
      res.writeHead(302, { location: EXAMPLE_APP_PATH, 'content-length': 0 })
      return void res.end()
    }
    if (!isExampleAppPath(req.url ?? '')) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' })
      return void res.end('not found\n')
    }
    void serveExampleApp(req, res, appDir, gatewayOrigin)
  })
}

export function listenExampleAppServer (host: string, port: number, gatewayOrigin: string): Promise<Server> {
  const server = createExampleAppServer({ gatewayOrigin })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve(server))
  })
}
