import t from 'tap'
import type { AccessClaims } from '../../src/tokens/access-token.js'
import { compileIdentityHeaders, headerSafe, normaliseHeaderName } from '../../src/proxy/identity-headers.js'

// The header plan as plain logic: what an upstream is told about the caller,
// and that nothing a client sends can pass for it.

const claims: AccessClaims = Object.freeze({
  iss: 'tokengate', aud: 'api', sub: 'u-1', sid: 's-1', jti: 'j-1', iat: 0, exp: 1,
  scope: 'orders:read orders:write', roles: ['admin', 'user'], username: 'alice', email: 'alice@example.com', name: 'Zoë Ünal'
})
const facts = { requestId: 'req-1', forwardedFor: '203.0.113.7', forwardedProto: 'https', forwardedHost: 'gw.example.com' }
const writer = compileIdentityHeaders({ 'X-User-Id': 'sub', 'X-User-Roles': 'roles', 'X-User-Scope': 'scope', 'X-User-Name': 'name' }, ['tg_refresh'])

t.test('identity headers come from the claims, lower-cased, with values made header-safe', async (t) => {
  const out = writer.upstreamHeaders({ accept: 'text/plain' }, claims, facts)
  t.match(out, {
    accept: 'text/plain',
    'x-user-id': 'u-1',
    'x-user-roles': 'admin,user',
    'x-user-scope': 'orders:read orders:write',
    'x-user-name': 'Zo%C3%AB %C3%9Cnal',
    'x-request-id': 'req-1',
    'x-forwarded-for': '203.0.113.7',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'gw.example.com'
  })
  t.same(writer.identityHeaderNames, ['x-user-id', 'x-user-roles', 'x-user-scope', 'x-user-name'])
})

t.test('a client cannot send an identity or forwarding header, in any case or with _ for -', async (t) => {
  const out = writer.upstreamHeaders({
    'x-user-id': 'u-evil', X_USER_ROLES: 'admin', 'x_user_scope': 'all', 'x-forwarded-for': '10.0.0.1', 'x-real-ip': '10.0.0.2',
    forwarded: 'for=10.0.0.3', 'x-request-id': 'mine', 'x-http-method-override': 'DELETE', 'proxy-authorization': 'Basic x'
  }, null, facts)
  t.notOk('X_USER_ROLES' in out)
  t.notOk('x_user_scope' in out)
  t.notOk('x-user-id' in out, 'no identity without a token')
  t.notOk('x-real-ip' in out)
  t.notOk('forwarded' in out)
  t.notOk('x-http-method-override' in out)
  t.notOk('proxy-authorization' in out)
  t.equal(out['x-forwarded-for'], '203.0.113.7', 'ours, not the client\'s')
  t.equal(out['x-request-id'], 'req-1')
})

t.test('hop-by-hop headers and those Connection names are dropped; the gateway\'s cookie is kept from the upstream', async (t) => {
  const out = writer.upstreamHeaders({ connection: 'keep-alive, X-Secret', 'x-secret': '1', 'keep-alive': 'timeout=5', te: 'trailers', cookie: 'a=1; tg_refresh=abc; b=2' }, claims, facts)
  t.notOk('connection' in out)
  t.notOk('x-secret' in out, 'named by Connection')
  t.notOk('keep-alive' in out)
  t.notOk('te' in out)
  t.equal(out.cookie, 'a=1; b=2')
  t.notOk('cookie' in writer.upstreamHeaders({ cookie: 'tg_refresh=abc' }, claims, facts), 'no cookie header left when only ours was sent')
})

t.test('a token\'s identity headers are computed once and reused', async (t) => {
  const first = writer.upstreamHeaders({}, claims, facts)
  const second = writer.upstreamHeaders({}, claims, { ...facts, requestId: 'req-2' })
  t.equal(first['x-user-id'], second['x-user-id'])
  t.equal(second['x-request-id'], 'req-2', 'per-request facts are per request')
})

t.test('normaliseHeaderName and headerSafe', async (t) => {
  t.equal(normaliseHeaderName('X_User_Id'), 'x-user-id')
  t.equal(headerSafe('plain value'), 'plain value')
  t.equal(headerSafe('100%'), '100%25', '% itself is encoded, so the value is unambiguous')
  t.equal(headerSafe('café'), 'caf%C3%A9')
})
