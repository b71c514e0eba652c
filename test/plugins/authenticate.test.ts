import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream, type TestUpstream } from '../helpers/upstream.js'

// plugins/authenticate.ts on its own: each route's policy (required,
// optional, scopes all required, any one role) decides who passes, with the
// right 401/403 and challenge, and a refused request reaches no upstream.
// alice: role admin, scopes orders:read orders:write; bob: role user, orders:read.

async function gateway (t: Parameters<typeof startGateway>[0]): Promise<{ app: FastifyInstance, up: TestUpstream }> {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, {
    identity: { headers: { 'x-user-id': 'sub' } },
    routes: [
      { prefix: '/any', upstream: up.url },
      { prefix: '/write', upstream: up.url, scopes: ['orders:read', 'orders:write'] },
      { prefix: '/ops', upstream: up.url, roles: ['admin', 'operator'] },
      { prefix: '/maybe', upstream: up.url, auth: 'optional' }
    ]
  })
  return { app, up }
}

const get = (app: FastifyInstance, url: string, authorization?: string): Promise<LightMyRequestResponse> =>
  app.inject({ method: 'GET', url, headers: authorization === undefined ? {} : { authorization } })

t.test('required: no token is 401 TG_TOKEN_MISSING with a bare challenge; a token passes with its identity', async (t) => {
  const { app, up } = await gateway(t)
  const none = await get(app, '/any/x')
  t.equal(none.statusCode, 401)
  t.match(none.json(), { code: 'TG_TOKEN_MISSING', error: 'invalid_request' })
  t.equal(none.headers['www-authenticate'], 'Bearer realm="tokengate"')
  t.equal((await get(app, '/any/x', 'Basic YWxpY2U6eA==')).json().code, 'TG_TOKEN_INVALID', 'another scheme is not a bearer token')
  t.equal(up.seen.length, 0)

  const { access_token: token } = await login(app, 'bob')
  t.equal((await get(app, '/any/x', `Bearer ${token}`)).statusCode, 200)
  t.equal(up.seen[0].headers['x-user-id'], 'u-2')
})

t.test('a malformed or forged token is 401 TG_TOKEN_INVALID with an error challenge, forwarded nowhere', async (t) => {
  const { app, up } = await gateway(t)
  for (const value of ['Bearer ', 'Bearer not.a.jwt', 'Bearer a b']) {
    const res = await get(app, '/any/x', value)
    t.equal(res.statusCode, 401, value)
    t.equal(res.json().code, 'TG_TOKEN_INVALID', value)
    t.match(res.headers['www-authenticate'], /error="invalid_token"/, value)
  }
  t.equal(up.seen.length, 0)
})

t.test('scopes: every one is required, else 403 TG_INSUFFICIENT_SCOPE', async (t) => {
  const { app, up } = await gateway(t)
  const bob = (await login(app, 'bob')).access_token
  const alice = (await login(app, 'alice')).access_token
  const refused = await get(app, '/write/x', `Bearer ${bob}`)
  t.equal(refused.statusCode, 403)
  t.match(refused.json(), { code: 'TG_INSUFFICIENT_SCOPE', error: 'insufficient_scope' })
  t.match(refused.headers['www-authenticate'], /error="insufficient_scope"/)
  t.equal(up.seen.length, 0)
  t.equal((await get(app, '/write/x', `Bearer ${alice}`)).statusCode, 200)
  t.equal((await get(app, '/write/x', `Bearer ${bob}`)).statusCode, 403, 'the verdict is the same on a second request (cached per token)')
})

t.test('roles: any one suffices', async (t) => {
  const { app } = await gateway(t)
  t.equal((await get(app, '/ops/x', `Bearer ${(await login(app, 'alice')).access_token}`)).statusCode, 200)
  t.equal((await get(app, '/ops/x', `Bearer ${(await login(app, 'bob')).access_token}`)).json().code, 'TG_INSUFFICIENT_SCOPE')
})

t.test('optional: no token passes without identity; a bad token is still refused', async (t) => {
  const { app, up } = await gateway(t)
  const anonymous = await get(app, '/maybe/x', undefined)
  t.equal(anonymous.statusCode, 200)
  t.notOk('x-user-id' in up.seen[0].headers, 'no identity, and none the client could send')
  t.equal((await get(app, '/maybe/x', 'Bearer forged')).json().code, 'TG_TOKEN_INVALID')
  const { access_token: token } = await login(app, 'alice')
  t.equal((await get(app, '/maybe/x', `Bearer ${token}`)).statusCode, 200)
  t.equal(up.seen.at(-1)?.headers['x-user-id'], 'u-1')
})

t.test('a token of an ended session is 401 TG_TOKEN_REVOKED', async (t) => {
  const { app } = await gateway(t)
  const { access_token: token } = await login(app, 'bob')
  t.equal((await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${token}` } })).statusCode, 204)
  const res = await get(app, '/any/x', `Bearer ${token}`)
  t.equal(res.statusCode, 401)
  t.equal(res.json().code, 'TG_TOKEN_REVOKED')
})
