import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream, type TestUpstream } from '../helpers/upstream.js'
import { startIdp, type TestIdp } from '../helpers/idp.js'

// A revoked IdP token must not work again when its denylist entry expires.
// Entries used to live accessTtl + skew (15.5 min here), while IdPs issue
// tokens for 60-90 min (Entra ID) or 24 h (Auth0): revoked by sub or jti,
// such a token came back. Now an issuer's maxTokenLifetime bounds exp - iat
// and sub and jti entries live that long; the tests look at the entries and
// at the mirror at a later time rather than wait.

const HOUR = 3600

async function gateway (t: Test, idp: TestIdp, up: TestUpstream, issuer: Record<string, unknown> = {}): Promise<FastifyInstance> {
  const { app } = await startGateway(t, {
    tokens: {
      accessTtl: '15m',
      clockSkew: '30s',
      trustedIssuers: [{ issuer: idp.issuer, discovery: true, audience: 'api', algorithms: ['ES256'], ...issuer }]
    },
    routes: [{ prefix: '/ext', upstream: up.url, issuers: [idp.issuer] }]
  })
  return app
}

const get = async (app: FastifyInstance, token: string): Promise<number> =>
  (await app.inject({ url: '/ext/a', headers: { authorization: `Bearer ${token}` } })).statusCode

async function revoke (app: FastifyInstance, body: Record<string, string>): Promise<void> {
  const admin = await login(app, 'alice')
  const res = await app.inject({ method: 'POST', url: '/admin/revoke', headers: { authorization: `Bearer ${admin.access_token}` }, payload: body })
  if (res.statusCode !== 200) throw new Error(`revoke answered ${res.statusCode}`)
}

t.test('a 1 h IdP token revoked by sub stays refused until it expires, long past accessTtl', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up, { maxTokenLifetime: '2h' })
  const now = Math.floor(Date.now() / 1000)
  const token = idp.mint({ sub: 'ext-long', iat: now - 5, exp: now + HOUR })
  t.equal(await get(app, token), 200)
  await revoke(app, { sub: 'ext-long' })
  t.equal(await get(app, token), 401)

  const claims = app.accessTokens.verify(token)
  const beforeExpiry = (now + HOUR) * 1000 - 1000
  const entry = (await app.store.loadDenylist(beforeExpiry)).find((e) => e.kind === 'sub' && e.value === 'ext-long')
  t.ok(entry !== undefined, 'the store still holds the entry just before the token expires, an hour on')
  t.ok(entry !== undefined && entry.expiresAt >= Date.now() + 2 * HOUR * 1000, 'it lives the issuer\'s maxTokenLifetime (2h), not accessTtl + skew')
  app.denylist.sweep(beforeExpiry)
  t.ok(app.denylist.isRevoked(claims, beforeExpiry), 'the mirror refuses it too at that time, after a sweep')
})

t.test('a revoked jti of an IdP token is kept as long as the issuer\'s tokens can live', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  const now = Math.floor(Date.now() / 1000)
  const token = idp.mint({ sub: 'ext-j', jti: 'idp-jti-1', iat: now, exp: now + 20 * HOUR })
  t.equal(await get(app, token), 200)
  await revoke(app, { jti: 'idp-jti-1' })
  t.equal(await get(app, token), 401)
  const later = (now + 20 * HOUR) * 1000
  const entry = (await app.store.loadDenylist(later)).find((e) => e.kind === 'jti' && e.value === 'idp-jti-1')
  t.ok(entry !== undefined && entry.expiresAt >= Date.now() + 24 * HOUR * 1000, 'kept for the default maxTokenLifetime, 24h')
  t.equal(await get(app, idp.mint({ sub: 'ext-j' })), 200, 'another token of the same user is unaffected')
})

t.test('an IdP token that lives longer than maxTokenLifetime, or whose lifetime cannot be bounded, is refused', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up, { maxTokenLifetime: '1h' })
  const now = Math.floor(Date.now() / 1000)
  t.equal(await get(app, idp.mint({ iat: now, exp: now + HOUR })), 200, 'exactly maxTokenLifetime')
  t.equal(await get(app, idp.mint({ iat: now, exp: now + HOUR + 60 })), 401, 'a minute over')
  t.equal(await get(app, idp.mint({ iat: now - 2 * HOUR, exp: now + 60 })), 401, 'issued for 2h 1m, even with a minute left')
  t.equal(await get(app, idp.mint({ iat: undefined, exp: now + 60 })), 401, 'no iat')
  t.equal(await get(app, idp.mint({ iat: now + 120, exp: now + 600 })), 401, 'iat beyond the clock skew (30s) ahead')
  t.equal(await get(app, idp.mint({ iat: now + 20, exp: now + HOUR })), 200, 'iat within the skew ahead, lifetime counted from now')
  t.equal(await get(app, idp.mint({ iat: now + 20, exp: now + HOUR + 20 })), 401, 'iat within the skew ahead, but more than 1h from now')
  t.equal(up.seen.length, 2)
  const issuer = idp.issuer.replace(/[.]/g, '\\.')
  t.match((await app.inject('/metrics')).body, new RegExp(`tokengate_trusted_issuer_tokens_total\\{issuer="${issuer}",result="refused",reason="lifetime"\\} 5\\n`))
})

t.test('the default maxTokenLifetime is 24h', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  const now = Math.floor(Date.now() / 1000)
  t.equal(await get(app, idp.mint({ iat: now, exp: now + 24 * HOUR })), 200)
  t.equal(await get(app, idp.mint({ iat: now, exp: now + 24 * HOUR + 60 })), 401)
})
