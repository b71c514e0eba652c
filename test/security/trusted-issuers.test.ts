import t, { type Test } from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import { setTimeout as sleep } from 'node:timers/promises'
import { login, startGateway, testConfig } from '../helpers/gateway.js'
import { buildGateway } from '../../src/build-gateway.js'
import { startUpstream, type TestUpstream } from '../helpers/upstream.js'
import { startIdp, type TestIdp } from '../helpers/idp.js'
import { waitFor } from '../helpers/wait-for.js'
import type { FastifyInstance } from 'fastify'

// Tokens from an outside identity provider: accepted only on routes that list
// the issuer, verified only with keys from its JWKS, and refused when they try
// to pass for another issuer, use another algorithm, or were revoked.

async function gateway (t: Test, idp: TestIdp, up: TestUpstream, extra: Record<string, unknown> = {}): Promise<FastifyInstance> {
  const { app } = await startGateway(t, {
    tokens: {
      trustedIssuers: [{ issuer: idp.issuer, discovery: true, audience: 'api', algorithms: ['ES256'], typ: 'JWT', jwksMinRefetch: '1s', claims: { roles: 'groups' }, ...extra }]
    },
    routes: [
      { prefix: '/ext', upstream: up.url, issuers: ['tokengate', idp.issuer] },
      { prefix: '/own', upstream: up.url }
    ]
  })
  return app
}

const get = async (app: FastifyInstance, url: string, token: string): Promise<number> =>
  (await app.inject({ url, headers: { authorization: `Bearer ${token}` } })).statusCode

t.test('an IdP token is accepted on a route listing its issuer and refused elsewhere; identity headers come from mapped claims', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  const token = idp.mint({ groups: ['ops'], email: 'e@example.com', scope: 'orders:read' })
  t.equal(await get(app, '/ext/a', token), 200)
  t.equal(up.seen[0].headers['x-user-id'], 'ext-user-1')
  t.equal(up.seen[0].headers['x-user-roles'], 'ops')
  t.equal(up.seen[0].headers['x-user-email'], 'e@example.com')
  t.equal(await get(app, '/own/a', token), 401)
  t.equal(up.seen.length, 1, 'the refused request never reached the upstream')
  const own = await login(app, 'bob')
  t.equal(await get(app, '/ext/a', own.access_token), 200, 'our own tokens still pass on the route that lists both')
})

t.test('forged and off-policy IdP tokens are refused', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  t.equal(await get(app, '/ext/a', idp.mint({ iss: 'tokengate', aud: 'api' })), 401, 'IdP key claiming our issuer')
  t.equal(await get(app, '/own/a', idp.mint({ iss: 'tokengate', aud: 'api' })), 401)
  t.equal(await get(app, '/ext/a', idp.mint({ iss: 'https://other.example' })), 401, 'IdP key claiming another issuer')
  t.equal(await get(app, '/ext/a', idp.mint({ aud: 'someone-else' })), 401, 'wrong audience')
  t.equal(await get(app, '/ext/a', idp.mint({ exp: Math.floor(Date.now() / 1000) - 3600 })), 401, 'expired')
  t.equal(await get(app, '/ext/a', idp.mint({ sub: 'a\r\nX-User-Id: admin' })), 401, 'header injection in sub')
  const [, body, sig] = idp.mint({}).split('.')
  const jku = Buffer.from(JSON.stringify({ alg: 'ES256', typ: 'JWT', kid: 'attacker', jku: 'http://127.0.0.1:1/keys' })).toString('base64url')
  t.equal(await get(app, '/ext/a', `${jku}.${body}.${sig}`), 401, 'jku is never followed')
  t.equal(up.seen.length, 0)
})

t.test('a validly signed token in an algorithm outside the issuer\'s list is refused, though its key is in the JWKS', async (t) => {
  const idp = await startIdp(t, 'api', { rsa: true })
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up, { algorithms: ['RS256'] })
  t.equal(await get(app, '/ext/a', idp.mint({}, { alg: 'RS256' })), 200, 'RS256 with the RSA key: the pinned algorithm')
  t.equal(await get(app, '/ext/a', idp.mint({})), 401, 'ES256 with the JWKS\'s EC key, a good signature, but not pinned')
  t.equal(up.seen.length, 1)
  const issuer = idp.issuer.replace(/[.]/g, '\\.')
  t.match((await app.inject('/metrics')).body, new RegExp(`tokengate_trusted_issuer_tokens_total\\{issuer="${issuer}",result="refused",reason="alg"\\} 1\\n`))
})

t.test('a token whose typ is not the one its issuer is configured with is refused', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  t.equal(await get(app, '/ext/a', idp.mint({}, { typ: 'JWT' })), 200, 'the configured typ')
  t.equal(await get(app, '/ext/a', idp.mint({}, { typ: 'at+jwt' })), 401, 'another typ')
  t.equal(await get(app, '/ext/a', idp.mint({}, { typ: 'id_token+jwt' })), 401)
  t.equal(up.seen.length, 1)
})

t.test('a token not yet valid (nbf) is refused beyond the clock skew and accepted within it', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  const now = Math.floor(Date.now() / 1000)
  t.equal(await get(app, '/ext/a', idp.mint({ nbf: now + 300 })), 401, 'nbf 5 min ahead, skew 30s')
  t.equal(await get(app, '/ext/a', idp.mint({ nbf: now + 10 })), 200, 'nbf 10s ahead: an IdP clock a little fast')
  t.equal(up.seen.length, 1)
})

t.test('with two trusted IdPs, a token signed by A claiming B\'s issuer is refused', async (t) => {
  const a = await startIdp(t)
  const b = await startIdp(t)
  const up = await startUpstream(t)
  const { app } = await startGateway(t, {
    tokens: {
      trustedIssuers: [a, b].map((idp) => ({ issuer: idp.issuer, discovery: true, audience: 'api', algorithms: ['ES256'], typ: 'JWT' }))
    },
    routes: [{ prefix: '/ext', upstream: up.url, issuers: [a.issuer, b.issuer] }]
  })
  t.equal(await get(app, '/ext/a', a.mint({})), 200, 'A\'s own token')
  t.equal(await get(app, '/ext/a', b.mint({})), 200, 'B\'s own token')
  t.equal(await get(app, '/ext/a', a.mint({ iss: b.issuer })), 401, 'A\'s key and kid, B\'s issuer: A\'s kid is not among B\'s keys')
  t.equal(await get(app, '/ext/a', a.mint({ iss: b.issuer }, { kid: b.kid })), 401, 'A\'s key under B\'s kid: B\'s key does not verify it')
  t.equal(up.seen.length, 2)
})

t.test('revoking an external token by jti refuses that token only', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  const token = idp.mint({ sub: 'ext-9', jti: 'idp-jti-9' })
  const sibling = idp.mint({ sub: 'ext-9', jti: 'idp-jti-10' })
  t.equal(await get(app, '/ext/a', token), 200)
  const admin = await login(app, 'alice')
  const res = await app.inject({ method: 'POST', url: '/admin/revoke', headers: { authorization: `Bearer ${admin.access_token}` }, payload: { jti: 'idp-jti-9' } })
  t.equal(res.statusCode, 200)
  t.equal(await get(app, '/ext/a', token), 401, 'the revoked token')
  t.equal(await get(app, '/ext/a', sibling), 200, 'another token of the same user')
})

t.test('an IdP token is verified once: a repeated request is served from the verified-token cache', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await buildGateway(await testConfig({
    tokens: { trustedIssuers: [{ issuer: idp.issuer, jwksUri: idp.jwksUri, audience: 'api', algorithms: ['ES256'] }] },
    routes: [{ prefix: '/ext', upstream: up.url, issuers: [idp.issuer] }]
  }))
  t.teardown(() => app.close())
  // @fastify/jwt's request verifier sets request.user; a cache hit never reaches it (as tokens.test.ts checks for ours).
  const verified = new Map<string, unknown>()
  app.addHook('onResponse', async (request) => { verified.set(request.url, (request.user as { sub?: string } | null)?.sub) })
  await app.ready()
  const token = idp.mint({ sub: 'ext-cached' })
  const cached = app.accessTokens.cachedTokens
  t.equal(await get(app, '/ext/first', token), 200)
  t.equal(verified.get('/ext/first'), 'ext-cached', 'the first request verified the signature')
  t.equal(app.accessTokens.cachedTokens, cached + 1)
  t.equal(await get(app, '/ext/second', token), 200)
  t.equal(verified.get('/ext/second'), undefined, 'the second did not verify again')
  t.equal(up.seen.at(-1)?.headers['x-user-id'], 'ext-cached', 'and carried the same identity')
  const issuer = idp.issuer.replace(/[.]/g, '\\.')
  t.match((await app.inject('/metrics')).body, new RegExp(`tokengate_trusted_issuer_tokens_total\\{issuer="${issuer}",result="accepted",reason=""\\} 1\\n`), 'one verification counted')
})

t.test('revoking an external user by sub refuses their tokens', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  // Issued a little earlier, as real tokens are: revocation by sub has one-second resolution.
  const token = idp.mint({ sub: 'ext-7', iat: Math.floor(Date.now() / 1000) - 5 })
  t.equal(await get(app, '/ext/a', token), 200)
  const admin = await login(app, 'alice')
  const res = await app.inject({ method: 'POST', url: '/admin/revoke', headers: { authorization: `Bearer ${admin.access_token}` }, payload: { sub: 'ext-7' } })
  t.ok(res.statusCode < 300, `revoke answered ${res.statusCode}`)
  t.equal(await get(app, '/ext/a', token), 401)
})

t.test('an external token issued in the same second as the revocation of its user is refused too (no session covers it)', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  const admin = await login(app, 'alice')
  // start early in a second, so minting and revoking fall in the same one
  await sleep(1000 - (Date.now() % 1000) + 20)
  const second = Math.floor(Date.now() / 1000)
  const token = idp.mint({ sub: 'ext-8', iat: second })
  t.equal(await get(app, '/ext/a', token), 200, 'served before the revocation')
  const res = await app.inject({ method: 'POST', url: '/admin/revoke', headers: { authorization: `Bearer ${admin.access_token}` }, payload: { sub: 'ext-8' } })
  t.ok(res.statusCode < 300, `revoke answered ${res.statusCode}`)
  t.equal(await get(app, '/ext/a', token), 401, 'refused after it')
  await sleep(1000 - (Date.now() % 1000) + 20)
  t.equal(await get(app, '/ext/a', idp.mint({ sub: 'ext-8', iat: Math.floor(Date.now() / 1000) })), 200, 'one the IdP issues in a later second works')
})

t.test('after the IdP rotates, the new key is refused until the re-fetch, then accepted; random kids fetch at most once per interval', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  t.equal(await get(app, '/ext/a', idp.mint({})), 200)
  await sleep(1100)
  idp.rotate()
  const fresh = idp.mint({})
  const before = idp.jwksRequests
  t.equal(await get(app, '/ext/a', fresh), 401, 'unseen kid: refused, re-fetch started')
  const started = Date.now()
  for (let i = 0; i < 1000; i++) t.equal(await get(app, '/ext/a', idp.mint({}, { kid: `random-${i}` })), 401)
  // On a loaded machine the re-fetch may still be on its way: wait for it (bounded).
  for (let i = 0; i < 50 && idp.jwksRequests === before; i++) await sleep(100)
  await sleep(200)
  // jwksMinRefetch is 1s here: one fetch per started second of the burst at most.
  const intervals = Math.ceil((Date.now() - started) / 1000) + 1
  const fetched = idp.jwksRequests - before
  t.ok(fetched >= 1 && fetched <= intervals, `1 000 random kids over ${intervals} interval(s) caused ${fetched} JWKS fetch(es)`)
  t.equal(await get(app, '/ext/a', fresh), 200, 'accepted after the re-fetch')
})

t.test('IdP down: warm keys keep serving; cold gateway refuses and is not ready', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const warm = await gateway(t, idp, up)
  idp.down = true
  t.equal(await get(warm, '/ext/a', idp.mint({})), 200, 'cached keys serve while the IdP is down')
  t.equal((await warm.inject('/readyz')).statusCode, 200)

  const cold = await gateway(t, idp, up)
  t.equal(await get(cold, '/ext/a', idp.mint({})), 401)
  const ready = await cold.inject('/readyz')
  t.equal(ready.statusCode, 503)
  t.match(ready.json(), { checks: { trustedIssuers: new RegExp(idp.issuer.replace(/[.]/g, '\\.')) } })
  const own = await login(cold, 'bob')
  t.equal(await get(cold, '/own/a', own.access_token), 200, 'our own tokens are unaffected')

  idp.down = false
  await sleep(1200)
  t.equal(await get(cold, '/ext/a', idp.mint({})), 200, 'recovers by itself once the IdP is back')
})

t.test('a key in the token header (jwk, x5c, x5u) is never used, even with the IdP\'s kid', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  const attacker = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const pem = attacker.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString()
  const jwk = attacker.publicKey.export({ format: 'jwk' })
  const now = Math.floor(Date.now() / 1000)
  const claims = { iss: idp.issuer, aud: 'api', sub: 'ext-user-1', iat: now, exp: now + 300 }
  const headers: Array<[string, Record<string, unknown>]> = [
    ['jwk with the IdP kid', { kid: idp.kid, jwk }],
    ['jwk and no kid', { jwk }],
    ['x5c', { kid: idp.kid, x5c: ['MIIB'] }],
    ['x5u', { kid: 'attacker', x5u: 'http://127.0.0.1:1/cert.pem' }]
  ]
  for (const [name, extra] of headers) {
    const token = createSigner({ key: pem, algorithm: 'ES256', header: { alg: 'ES256', typ: 'JWT', ...extra } })(claims)
    t.equal(await get(app, '/ext/a', token), 401, name)
  }
  t.equal(up.seen.length, 0)
})

t.test('per-issuer metrics: labelled by the configured issuer only, so made-up issuers add no series', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  t.equal(await get(app, '/ext/a', idp.mint({})), 200)
  const [, body, sig] = idp.mint({}).split('.')
  const hs = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT', kid: idp.kid })).toString('base64url')
  t.equal(await get(app, '/ext/a', `${hs}.${body}.${sig}`), 401)
  t.equal(await get(app, '/ext/a', idp.mint({}, { kid: 'unknown' })), 401)
  for (let i = 0; i < 50; i++) t.equal(await get(app, '/ext/a', idp.mint({ iss: `https://made-up-${i}.example` })), 401)
  const text = (await app.inject('/metrics')).body
  const issuer = idp.issuer.replace(/[.]/g, '\\.')
  t.match(text, new RegExp(`tokengate_trusted_issuer_tokens_total\\{issuer="${issuer}",result="accepted",reason=""\\} 1\\n`))
  t.match(text, new RegExp(`tokengate_trusted_issuer_tokens_total\\{issuer="${issuer}",result="refused",reason="alg"\\} 1\\n`))
  t.match(text, new RegExp(`tokengate_trusted_issuer_tokens_total\\{issuer="${issuer}",result="refused",reason="unknown_kid"\\} 1\\n`))
  t.match(text, new RegExp(`tokengate_trusted_issuer_keys\\{issuer="${issuer}"\\} 1\\n`))
  t.match(text, new RegExp(`tokengate_trusted_issuer_jwks_fetches_total\\{issuer="${issuer}",result="ok"\\} [1-9]`))
  t.notMatch(text, /made-up/, 'no series from a token\'s iss')

  idp.down = true
  const cold = await gateway(t, idp, up)
  const coldText = (await cold.inject('/metrics')).body
  t.match(coldText, new RegExp(`tokengate_trusted_issuer_keys\\{issuer="${issuer}"\\} 0\\n`), 'not ready: no keys')
  t.match(coldText, new RegExp(`tokengate_trusted_issuer_jwks_fetches_total\\{issuer="${issuer}",result="failed"\\} [1-9]`))
})

t.test('the JWKS is refreshed on its Cache-Control max-age without any token asking', async (t) => {
  const idp = await startIdp(t)
  idp.cacheControl = 'public, max-age=1'
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  idp.rotate()
  const before = idp.jwksRequests
  await waitFor('the scheduled re-fetch', () => idp.jwksRequests > before)
  await waitFor('the re-fetch to land', async () => await get(app, '/ext/a', idp.mint({})) === 200)
  t.pass('a key published after start is accepted once the JWKS is refreshed on schedule')
})

t.test('a JWKS that redirects elsewhere is not followed', async (t) => {
  const idp = await startIdp(t)
  const attacker = await startIdp(t)
  idp.redirectJwksTo = attacker.jwksUri
  const up = await startUpstream(t)
  const app = await gateway(t, idp, up)
  t.equal(await get(app, '/ext/a', attacker.mint({ iss: idp.issuer }, { kid: idp.kid })), 401, 'the attacker\'s key was never loaded')
  t.equal(attacker.jwksRequests, 0)
  t.equal((await app.inject('/readyz')).statusCode, 503, 'the issuer has no keys')
})
