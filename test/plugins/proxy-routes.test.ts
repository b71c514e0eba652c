import t from 'tap'
import { closedPort, startUpstream } from '../helpers/upstream.js'
import { login, startGateway } from '../helpers/gateway.js'

// A proxied route end to end: a real upstream, the gateway built from a real
// config file, tokens from a real login.

t.test('no token: 401 with a Bearer challenge, upstream untouched', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url }] })
  const res = await app.inject({ url: '/api/things' })
  t.equal(res.statusCode, 401)
  t.equal(res.headers['www-authenticate'], 'Bearer realm="tokengate"')
  t.match(res.json(), { statusCode: 401, code: 'TG_TOKEN_MISSING', error: 'invalid_request' })
  t.equal(up.seen.length, 0)
})

t.test('a garbage or non-bearer token: 401 invalid_token, upstream untouched', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url }] })
  for (const authorization of ['Bearer abc.def.ghi', 'Basic YWxpY2U6cHc=', 'Bearer', 'Bearer a.b', 'Token xyz']) {
    const res = await app.inject({ url: '/api/x', headers: { authorization } })
    t.equal(res.statusCode, 401, authorization)
    t.match(res.headers['www-authenticate'], /error="invalid_token"/, authorization)
    t.notMatch(res.body, /FAST_JWT|fast-jwt|at Object|\.js:/, 'no library text')
  }
  t.equal(up.seen.length, 0)
})

t.test('a valid token: identity headers reach the upstream, the token does not', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/api/orders', upstream: up.url, rewritePrefix: '/orders' }] })
  const { access_token: token } = await login(app, 'alice')
  const res = await app.inject({ url: '/api/orders/42?x=1', headers: { authorization: `bearer ${token}`, 'x-request-id': 'trace-abc.1' } })
  t.equal(res.statusCode, 200)
  t.equal(res.headers['x-request-id'], 'trace-abc.1')
  const seen = up.seen[0]
  t.equal(seen.url, '/orders/42?x=1')
  t.equal(seen.headers['x-user-id'], 'u-1')
  t.equal(seen.headers['x-user-name'], 'alice')
  t.equal(seen.headers['x-user-email'], 'alice@example.com')
  t.equal(seen.headers['x-user-roles'], 'admin')
  t.equal(seen.headers['x-user-scopes'], 'orders:read orders:write')
  t.equal(seen.headers['x-request-id'], 'trace-abc.1')
  t.equal(seen.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(seen.headers['x-forwarded-proto'], 'http')
  t.equal(seen.headers.authorization, undefined, 'the bearer token stays at the gateway')
})

t.test('the bare prefix with a query string reaches the upstream at its root, with or without rewritePrefix', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, {
    routes: [
      { prefix: '/public', upstream: up.url, auth: 'none' },
      { prefix: '/api/orders', upstream: up.url, rewritePrefix: '/orders', auth: 'none' }
    ]
  })
  for (const [url, upstreamUrl] of [['/public?x=1', '/?x=1'], ['/public?a', '/?a'], ['/public', '/'], ['/public/?x=1', '/?x=1'], ['/api/orders?x=1', '/orders?x=1']]) {
    const res = await app.inject({ url })
    t.equal(res.statusCode, 200, url)
    t.equal(up.seen.at(-1)?.url, upstreamUrl, `${url} arrives as ${upstreamUrl}`)
  }
})

t.test('forged identity headers never arrive, in any spelling, on any route', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, {
    routes: [
      { prefix: '/api', upstream: up.url },
      { prefix: '/open', upstream: up.url, auth: 'none' },
      { prefix: '/maybe', upstream: up.url, auth: 'optional' }
    ]
  })
  const { access_token: token } = await login(app, 'bob')
  const forged = {
    'X-User-Id': 'root', 'x-user-roles': 'admin', X_USER_SCOPES: 'orders:write', 'x_user-email': 'evil@x',
    'X-USER-NAME': 'root', 'x-forwarded-for': '10.0.0.1', forwarded: 'for=10.0.0.1', 'x-real-ip': '10.0.0.1',
    'x-original-url': '/admin', 'x-http-method-override': 'DELETE', connection: 'close, x-user-id'
  }
  for (const [url, auth] of [['/api/a', true], ['/open/b', false], ['/maybe/c', false], ['/maybe/d', true]] as const) {
    const res = await app.inject({ url, headers: { ...forged, ...(auth ? { authorization: `Bearer ${token}` } : {}) } })
    t.equal(res.statusCode, 200, url)
    const h = up.seen[up.seen.length - 1].headers
    const raw = up.seen[up.seen.length - 1].rawHeaders.map((x) => x.toLowerCase())
    t.notOk(raw.includes('x_user_scopes') || raw.includes('x_user-email'), `${url}: underscore variants dropped`)
    t.not(h['x-user-roles'], 'admin', url)
    t.not(h['x-forwarded-for'], '10.0.0.1', url)
    t.equal(h.forwarded, undefined, url)
    t.equal(h['x-real-ip'], undefined, url)
    t.equal(h['x-original-url'], undefined, url)
    t.equal(h['x-http-method-override'], undefined, url)
    if (auth) {
      t.equal(h['x-user-id'], 'u-2', `${url}: ours, not the client's`)
      t.equal(h['x-user-roles'], 'user', url)
    } else {
      t.equal(h['x-user-id'], undefined, `${url}: no identity without a token`)
    }
  }
})

t.test('scopes are all required, roles any one suffices: 403 insufficient_scope', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, {
    routes: [
      { prefix: '/write', upstream: up.url, scopes: ['orders:read', 'orders:write'] },
      { prefix: '/staff', upstream: up.url, roles: ['admin', 'user'] },
      { prefix: '/admins', upstream: up.url, roles: ['admin'] }
    ]
  })
  const alice = (await login(app, 'alice')).access_token
  const bob = (await login(app, 'bob')).access_token
  const carol = (await login(app, 'carol')).access_token
  const call = async (url: string, token: string): Promise<number> => (await app.inject({ url, headers: { authorization: `Bearer ${token}` } })).statusCode
  t.equal(await call('/write/1', alice), 200)
  const denied = await app.inject({ url: '/write/1', headers: { authorization: `Bearer ${bob}` } })
  t.equal(denied.statusCode, 403)
  t.match(denied.json(), { code: 'TG_INSUFFICIENT_SCOPE', error: 'insufficient_scope' })
  t.match(denied.headers['www-authenticate'], /error="insufficient_scope"/)
  t.equal(await call('/staff/1', bob), 200)
  t.equal(await call('/staff/1', alice), 200)
  t.equal(await call('/staff/1', carol), 403)
  t.equal(await call('/admins/1', bob), 403)
  // Each route's verdict on a token is kept with its cached claims: asked again, the answers hold.
  t.equal(await call('/write/1', bob), 403, 'the same token again: still refused on /write')
  t.equal(await call('/staff/1', bob), 200, 'and still allowed on /staff')
  t.equal(up.seen.length, 4, 'only the allowed requests arrived')
})

t.test('unknown paths are 404 JSON; a method the route does not allow is 405', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url, auth: 'none', methods: ['GET'] }] })
  const missing = await app.inject({ url: '/nope' })
  t.equal(missing.statusCode, 404)
  t.match(missing.json(), { code: 'TG_NOT_FOUND' })
  const prefixConfusion = await app.inject({ url: '/apiX/1' })
  t.equal(prefixConfusion.statusCode, 404, '/apiX is not under /api')
  const post = await app.inject({ method: 'POST', url: '/api/1', payload: {} })
  t.equal(post.statusCode, 405)
  t.equal(post.headers.allow, 'GET')
  t.equal(up.seen.length, 0)
})

t.test('upstream refused → 503, no internal address in the answer', async (t) => {
  const port = await closedPort()
  const { app } = await startGateway(t, { routes: [{ prefix: '/api', upstream: `http://127.0.0.1:${port}`, auth: 'none' }] })
  const res = await app.inject({ url: '/api/x' })
  t.equal(res.statusCode, 503)
  t.match(res.json(), { code: 'TG_UPSTREAM_UNAVAILABLE' })
  t.notMatch(res.body, new RegExp(`127\\.0\\.0\\.1|${port}|ECONNREFUSED|stack`))
})

t.test('upstream too slow → 504 after the route timeout', async (t) => {
  const up = await startUpstream(t, (_req, res) => { setTimeout(() => res.end('late'), 2000).unref() })
  const { app } = await startGateway(t, { routes: [{ prefix: '/slow', upstream: up.url, auth: 'none', timeout: '200ms' }] })
  const res = await app.inject({ url: '/slow/x' })
  t.equal(res.statusCode, 504)
  t.match(res.json(), { code: 'TG_UPSTREAM_TIMEOUT' })
})

t.test('a body over bodyLimit is refused with 413 and never forwarded', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/up', upstream: up.url, auth: 'none', bodyLimit: 100 }] })
  const declared = await app.inject({ method: 'POST', url: '/up/x', headers: { 'content-type': 'application/octet-stream' }, payload: Buffer.alloc(101) })
  t.equal(declared.statusCode, 413)
  t.match(declared.json(), { code: 'TG_BODY_TOO_LARGE' })
  const small = await app.inject({ method: 'POST', url: '/up/x', headers: { 'content-type': 'text/plain' }, payload: 'hello' })
  t.equal(small.statusCode, 200)
  t.equal(up.seen.length, 1)
  t.equal(up.seen[0].body, 'hello')
})

t.test('the gateway cookie never reaches an upstream, and an upstream cannot set it', async (t) => {
  const up = await startUpstream(t, (_req, res) => {
    res.setHeader('set-cookie', ['tg_refresh=evil; Path=/auth', 'app=1; Path=/'])
    res.end('ok')
  })
  const { app } = await startGateway(t, { routes: [{ prefix: '/app', upstream: up.url, auth: 'none' }] })
  const res = await app.inject({ url: '/app/x', headers: { cookie: 'tg_refresh=secret-token; app=1; __Secure-tg_refresh=x' } })
  t.equal(up.seen[0].headers.cookie, 'app=1')
  t.same(res.headers['set-cookie'], ['app=1; Path=/'])
})

t.test('a chunked body is counted as it streams: over the limit it is cut, never delivered whole', async (t) => {
  const { request } = await import('node:http')
  const received: string[] = []
  const up = await startUpstream(t, (req, res) => { received.push(req.body); res.end('ok') })
  const { app } = await startGateway(t, { routes: [{ prefix: '/up', upstream: up.url, auth: 'none', bodyLimit: 1000 }] })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as import('node:net').AddressInfo).port
  const status = await new Promise<number>((resolve) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/up/x', headers: { 'content-type': 'application/octet-stream', 'transfer-encoding': 'chunked' } }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', () => resolve(0))
    for (let i = 0; i < 20; i++) req.write(Buffer.alloc(100, 97))
    req.end()
  })
  t.equal(status, 413)
  t.notOk(received.some((body) => body.length >= 2000), 'the upstream never received the whole body')
})
