import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { hashPassword } from '../../src/users/password.js'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream, type TestUpstream } from '../helpers/upstream.js'
import { startIdp, type TestIdp } from '../helpers/idp.js'

// The gateway's session endpoints act on its own sessions only. A trusted
// IdP's token has no session here (its sid is '', its jti may be absent): an
// earlier version ended "its session" on logout, denying sid '' and so
// refusing every IdP token for accessTtl + skew; /oauth/revoke did the same
// with a missing jti, and introspection called IdP tokens active.

const SECRET = 'backend-secret-0123456789'
const FORM = 'application/x-www-form-urlencoded'

async function gateway (t: Test, idp: TestIdp, up: TestUpstream): Promise<FastifyInstance> {
  const { app } = await startGateway(t, {
    tokens: { trustedIssuers: [{ issuer: idp.issuer, discovery: true, audience: 'api', algorithms: ['ES256'], typ: 'JWT' }] },
    auth: { clients: [{ id: 'svc-backend', secretHash: await hashPassword(SECRET), scopes: [], introspect: true }] },
    routes: [{ prefix: '/ext', upstream: up.url, issuers: ['tokengate', idp.issuer] }]
  })
  return app
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
const get = async (app: FastifyInstance, token: string): Promise<number> => (await app.inject({ url: '/ext/a', headers: bearer(token) })).statusCode
const backend = (app: FastifyInstance, url: string, token: string) => app.inject({
  method: 'POST',
  url,
  headers: { 'content-type': FORM, authorization: `Basic ${Buffer.from(`svc-backend:${SECRET}`).toString('base64')}` },
  payload: new URLSearchParams({ token }).toString()
})

t.test('an external user\'s logout is refused (401 TG_TOKEN_INVALID) and leaves every other external user\'s token working', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  const mallory = idp.mint({ sub: 'ext-mallory' })
  const victim = idp.mint({ sub: 'ext-victim' })
  t.equal(await get(app, victim), 200)

  const res = await app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(mallory) })
  t.equal(res.statusCode, 401)
  t.match(res.json(), { statusCode: 401, code: 'TG_TOKEN_INVALID', error: 'invalid_token' })
  t.match(res.headers['www-authenticate'], /^Bearer .*error="invalid_token"/)

  t.equal(await get(app, victim), 200, 'another external user is still served')
  t.equal(await get(app, mallory), 200, 'the caller\'s own IdP token is untouched too: its session lives at its IdP')
  t.equal(await get(app, idp.mint({ sub: 'ext-new' })), 200, 'and so is a token the IdP issues afterwards')
  t.equal(up.seen.length, 4)
})

t.test('logout-all and the session list refuse an external token the same way', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  const token = idp.mint({ sub: 'ext-1' })
  for (const [method, url] of [['POST', '/auth/logout-all'], ['GET', '/auth/sessions'], ['DELETE', '/auth/sessions/abc'], ['POST', '/auth/password']] as const) {
    const res = await app.inject({ method, url, headers: bearer(token) })
    t.equal(res.statusCode, 401, `${method} ${url}`)
    t.equal(res.json().code, 'TG_TOKEN_INVALID', `${method} ${url}`)
  }
  t.equal(await get(app, idp.mint({ sub: 'ext-2' })), 200)
  const own = await login(app, 'bob')
  t.equal((await app.inject({ url: '/auth/sessions', headers: bearer(own.access_token) })).statusCode, 200, 'our own users keep their session list')
})

t.test('introspection says an external token is not active here; revoking a jti-less one is a no-op that leaves others working', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  const noJti = idp.mint({ sub: 'ext-1', jti: undefined })
  const otherNoJti = idp.mint({ sub: 'ext-2', jti: undefined })
  const withJti = idp.mint({ sub: 'ext-3' })
  t.equal(await get(app, otherNoJti), 200)

  const introspected = await backend(app, '/oauth/introspect', withJti)
  t.equal(introspected.statusCode, 200)
  t.same(introspected.json(), { active: false }, 'this gateway did not issue it (RFC 7662 §2.2)')

  const revoked = await backend(app, '/oauth/revoke', noJti)
  t.equal(revoked.statusCode, 200, 'RFC 7009 §2.2: answered 200')
  t.equal(await get(app, otherNoJti), 200, 'another jti-less IdP token still works')
  t.equal(await get(app, withJti), 200)
  t.equal(await get(app, noJti), 200, 'revoke acts on our tokens only; POST /admin/revoke {sub} is how an operator refuses an external user')

  const own = await login(app, 'bob')
  t.same((await backend(app, '/oauth/introspect', own.access_token)).json().active, true, 'our own tokens are still introspected')
})
