import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { hashPassword } from '../../src/users/password.js'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream, type TestUpstream } from '../helpers/upstream.js'

// The OAuth endpoints over HTTP: client credentials, introspection,
// revocation and discovery, each with the failures a client can cause.

const SECRETS = { reports: 'reports-secret-0123456789', backend: 'backend-secret-0123456789' } as const

const form = (fields: Record<string, string>): string => new URLSearchParams(fields).toString()
const basic = (id: string, secret: string): string => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`
const FORM = 'application/x-www-form-urlencoded'

async function gateway (t: Test, extra: Record<string, unknown> = {}): Promise<{ app: FastifyInstance, upstream: TestUpstream }> {
  const upstream = await startUpstream(t)
  const { app } = await startGateway(t, {
    auth: {
      clients: [
        { id: 'svc-reports', secretHash: await hashPassword(SECRETS.reports), scopes: ['orders:read', 'reports:write'], roles: ['service'] },
        { id: 'svc-backend', secretHash: await hashPassword(SECRETS.backend), scopes: [], introspect: true }
      ],
      ...extra
    },
    routes: [{ prefix: '/api', upstream: upstream.url, auth: 'required', scopes: ['orders:read'] }]
  })
  return { app, upstream }
}

function token (app: FastifyInstance, fields: Record<string, string>, authorization?: string) {
  return app.inject({
    method: 'POST',
    url: '/oauth/token',
    headers: { 'content-type': FORM, ...(authorization === undefined ? {} : { authorization }) },
    payload: form(fields)
  })
}

const backendCall = (app: FastifyInstance, url: string, fields: Record<string, string>, id: string = 'svc-backend', secret: string = SECRETS.backend) =>
  app.inject({ method: 'POST', url, headers: { 'content-type': FORM, authorization: basic(id, secret) }, payload: form(fields) })

t.test('client_credentials with HTTP Basic: an access token the proxied routes accept, identity upstream, no refresh token', async (t) => {
  const { app, upstream } = await gateway(t)
  const res = await token(app, { grant_type: 'client_credentials' }, basic('svc-reports', SECRETS.reports))
  t.equal(res.statusCode, 200)
  const body = res.json()
  t.equal(body.token_type, 'Bearer')
  t.equal(body.scope, 'orders:read reports:write')
  t.notOk('refresh_token' in body)
  t.notOk(res.headers['set-cookie'])
  t.equal(res.headers['cache-control'], 'no-store')
  const claims = app.accessTokens.verify(body.access_token) as ReturnType<FastifyInstance['accessTokens']['verify']> & { client_id?: string }
  t.equal(claims.sub, 'svc-reports')
  t.equal(claims.client_id, 'svc-reports')

  const proxied = await app.inject({ method: 'GET', url: '/api/orders', headers: { authorization: `Bearer ${body.access_token}` } })
  t.equal(proxied.statusCode, 200)
  t.equal(upstream.seen.at(-1)?.headers['x-user-id'], 'svc-reports')
  t.equal(upstream.seen.at(-1)?.headers['x-user-roles'], 'service')
})

t.test('client_secret_post and scope narrowing; a scope the client lacks is invalid_scope', async (t) => {
  const { app, upstream } = await gateway(t)
  const narrowed = await token(app, { grant_type: 'client_credentials', client_id: 'svc-reports', client_secret: SECRETS.reports, scope: 'reports:write' })
  t.equal(narrowed.statusCode, 200)
  t.equal(narrowed.json().scope, 'reports:write')
  // The narrowed token lacks orders:read, which the route requires.
  const proxied = await app.inject({ method: 'GET', url: '/api/orders', headers: { authorization: `Bearer ${narrowed.json().access_token}` } })
  t.equal(proxied.statusCode, 403)
  t.equal(upstream.seen.length, 0)

  const lacking = await token(app, { grant_type: 'client_credentials', client_id: 'svc-reports', client_secret: SECRETS.reports, scope: 'orders:read admin:all' })
  t.equal(lacking.statusCode, 400)
  t.match(lacking.json(), { statusCode: 400, code: 'TG_INVALID_SCOPE', error: 'invalid_scope' })
})

t.test('wrong secret and unknown client: the same 401 invalid_client; bad grant types are named', async (t) => {
  const { app } = await gateway(t)
  const wrong = await token(app, { grant_type: 'client_credentials' }, basic('svc-reports', 'not-the-secret'))
  const unknown = await token(app, { grant_type: 'client_credentials' }, basic('svc-nobody', 'whatever'))
  for (const res of [wrong, unknown]) {
    t.equal(res.statusCode, 401)
    t.match(res.json(), { code: 'TG_INVALID_CLIENT', error: 'invalid_client' })
    t.match(res.headers['www-authenticate'], /^Basic /)
  }
  t.same(wrong.json(), unknown.json())
  const none = await token(app, { grant_type: 'client_credentials' })
  t.equal(none.statusCode, 401)

  const password = await token(app, { grant_type: 'password', username: 'alice', password: 'x' }, basic('svc-reports', SECRETS.reports))
  t.match(password.json(), { statusCode: 400, error: 'unsupported_grant_type' })
  const missing = await token(app, {}, basic('svc-reports', SECRETS.reports))
  t.match(missing.json(), { statusCode: 400, error: 'invalid_request' })
  const both = await token(app, { grant_type: 'client_credentials', client_id: 'svc-reports', client_secret: SECRETS.reports }, basic('svc-reports', SECRETS.reports))
  t.match(both.json(), { statusCode: 400, error: 'invalid_request' }, 'two authentication methods at once')
})

t.test('client authentication is throttled like login, per client id', async (t) => {
  const { app } = await gateway(t, { loginRateLimit: { max: 2, timeWindow: '1m' } })
  for (let i = 0; i < 2; i++) t.equal((await token(app, { grant_type: 'client_credentials' }, basic('svc-reports', 'guess'))).statusCode, 401)
  const throttled = await token(app, { grant_type: 'client_credentials' }, basic('svc-reports', SECRETS.reports))
  t.equal(throttled.statusCode, 429)
  t.ok(throttled.headers['retry-after'])
  t.equal((await token(app, { grant_type: 'client_credentials' }, basic('svc-backend', SECRETS.backend))).statusCode, 200, 'another client is not affected')
})

t.test('POST /admin/revoke {sub: client id} ends the client\'s tokens', async (t) => {
  const { app } = await gateway(t)
  const access = (await token(app, { grant_type: 'client_credentials' }, basic('svc-reports', SECRETS.reports))).json().access_token
  const admin = await login(app, 'alice')
  const revoked = await app.inject({ method: 'POST', url: '/admin/revoke', headers: { authorization: `Bearer ${admin.access_token}` }, payload: { sub: 'svc-reports' } })
  t.equal(revoked.statusCode, 200)
  const refused = await app.inject({ method: 'GET', url: '/api/orders', headers: { authorization: `Bearer ${access}` } })
  t.equal(refused.statusCode, 401)
  t.equal(refused.json().code, 'TG_TOKEN_REVOKED')
})

t.test('introspection: a user\'s token is active with no more claims than needed; anything else is active:false', async (t) => {
  const { app } = await gateway(t)
  const user = await login(app, 'alice')
  const active = await backendCall(app, '/oauth/introspect', { token: user.access_token })
  t.equal(active.statusCode, 200)
  t.match(active.json(), { active: true, sub: 'u-1', username: 'alice', scope: 'orders:read orders:write', token_type: 'Bearer' })
  t.notOk('email' in active.json(), 'no email')
  t.notOk('name' in active.json(), 'no name')
  t.notOk('sid' in active.json(), 'no session id')

  for (const garbage of ['not-a-token', `${user.access_token.slice(0, -4)}AAAA`, 'a.b.c']) {
    t.same((await backendCall(app, '/oauth/introspect', { token: garbage })).json(), { active: false })
  }
  await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${user.access_token}` } })
  t.same((await backendCall(app, '/oauth/introspect', { token: user.access_token })).json(), { active: false }, 'revoked')
})

t.test('introspection by a client that is not allowed, or not authenticated, is refused', async (t) => {
  const { app } = await gateway(t)
  const user = await login(app, 'alice')
  const notAllowed = await backendCall(app, '/oauth/introspect', { token: user.access_token }, 'svc-reports', SECRETS.reports)
  t.equal(notAllowed.statusCode, 403)
  t.notOk('active' in notAllowed.json())
  const anonymous = await app.inject({ method: 'POST', url: '/oauth/introspect', headers: { 'content-type': FORM }, payload: form({ token: user.access_token }) })
  t.equal(anonymous.statusCode, 401)
  t.equal(anonymous.json().error, 'invalid_client')
  const wrong = await backendCall(app, '/oauth/introspect', { token: user.access_token }, 'svc-backend', 'wrong')
  t.equal(wrong.statusCode, 401)
})

t.test('revocation: a refresh token ends its session, an access token is denylisted, anything else is still 200', async (t) => {
  const { app } = await gateway(t)
  const user = await login(app, 'bob')
  t.equal((await backendCall(app, '/oauth/revoke', { token: user.refresh_token! })).statusCode, 200)
  const refresh = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: user.refresh_token } })
  t.equal(refresh.statusCode, 401, 'the session has ended')
  const access = await app.inject({ method: 'GET', url: '/api/orders', headers: { authorization: `Bearer ${user.access_token}` } })
  t.equal(access.statusCode, 401, 'its access tokens too')

  const own = (await token(app, { grant_type: 'client_credentials' }, basic('svc-reports', SECRETS.reports))).json().access_token
  t.equal((await backendCall(app, '/oauth/revoke', { token: own, token_type_hint: 'access_token' }, 'svc-reports', SECRETS.reports)).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/api/orders', headers: { authorization: `Bearer ${own}` } })).statusCode, 401)

  // A client without introspect rights cannot end someone else's token.
  const other = await login(app, 'alice')
  t.equal((await backendCall(app, '/oauth/revoke', { token: other.access_token }, 'svc-reports', SECRETS.reports)).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/api/orders', headers: { authorization: `Bearer ${other.access_token}` } })).statusCode, 200)

  t.equal((await backendCall(app, '/oauth/revoke', { token: 'nonsense' })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/oauth/revoke', headers: { 'content-type': FORM }, payload: form({ token: 'nonsense' }) })).statusCode, 401, 'the client must still authenticate')
})

t.test('discovery documents name the issuer, keys and endpoints', async (t) => {
  const { app } = await gateway(t)
  for (const url of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
    const res = await app.inject({ method: 'GET', url, headers: { host: 'gw.example.com' } })
    t.equal(res.statusCode, 200)
    t.match(res.json(), {
      issuer: 'tokengate',
      jwks_uri: 'http://gw.example.com/.well-known/jwks.json',
      token_endpoint: 'http://gw.example.com/oauth/token',
      introspection_endpoint: 'http://gw.example.com/oauth/introspect',
      revocation_endpoint: 'http://gw.example.com/oauth/revoke',
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post']
    })
  }
})
