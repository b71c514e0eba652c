import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { createEchoUpstream, exampleAppDir, type EchoReply } from '../../src/demo/demo-upstream.js'

// The demo upstream echoes every request, except under /app/, where it serves
// the example browser app's few files and nothing else.

const APP_DIR = join(__dirname, '..', '..', 'examples', 'browser-app')

async function listen (t: Test, appDir?: string): Promise<string> {
  const server = createEchoUpstream(appDir)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** A GET with the path exactly as given: fetch would normalise dot segments away. */
function rawGet (base: string, path: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(base, { path }, (res) => {
      let body = ''
      res.setEncoding('utf8').on('data', (c: string) => { body += c }).on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject).end()
  })
}

t.test('finds the example app beside src/', async (t) => {
  t.equal(exampleAppDir(), APP_DIR)
})

t.test('serves the example app with its content types and a strict CSP', async (t) => {
  const base = await listen(t)
  for (const [path, file, type] of [['/app/', 'index.html', 'text/html'], ['/app/index.html', 'index.html', 'text/html'], ['/app/app.js?v=1', 'app.js', 'text/javascript'], ['/app/app.css', 'app.css', 'text/css']]) {
    const res = await fetch(base + path)
    t.equal(res.status, 200, path)
    t.match(res.headers.get('content-type'), type, path)
    t.match(res.headers.get('content-security-policy'), "script-src 'self'", path)
    t.equal(res.headers.get('x-content-type-options'), 'nosniff', path)
    t.equal(await res.text(), readFileSync(join(APP_DIR, file), 'utf8'), path)
  }
  const head = await fetch(`${base}/app/app.js`, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(await head.text(), '')
})

t.test('redirects /app to /app/', async (t) => {
  const base = await listen(t)
  const res = await fetch(`${base}/app`, { redirect: 'manual' })
  t.equal(res.status, 301)
  t.equal(res.headers.get('location'), '/app/')
})

t.test('serves nothing else under /app/: unknown names, traversal, other methods', async (t) => {
  const base = await listen(t)
  for (const path of ['/app/users.yaml', '/app/../package.json', '/app/%2e%2e/package.json', '/app/..%2fpackage.json', '/app/app.js/', '/app/.', '/app//app.js']) {
    t.same(await rawGet(base, path), { status: 404, body: 'not found\n' }, path)
  }
  const post = await fetch(`${base}/app/app.js`, { method: 'POST', body: 'x' })
  t.equal(post.status, 404)
})

t.test('without the example app, /app/ is a 404', async (t) => {
  const base = await listen(t, join(APP_DIR, 'missing'))
  t.equal((await fetch(`${base}/app/`)).status, 404)
})

t.test('echoes everything else', async (t) => {
  const base = await listen(t)
  const res = await fetch(`${base}/hello/app/app.js?x=1`, { method: 'POST', headers: { 'x-user-id': 'u-1' }, body: 'hi' })
  const reply = await res.json() as EchoReply
  t.equal(reply.method, 'POST')
  t.equal(reply.url, '/hello/app/app.js?x=1')
  t.equal(reply.headers['x-user-id'], 'u-1')
  t.equal(reply.body, 'hi')
})
