import t from 'tap'
import { startGateway, testConfig } from '../helpers/gateway.js'
import { startIdp } from '../helpers/idp.js'
import { startUpstream } from '../helpers/upstream.js'
import { buildGateway } from '../../src/build-gateway.js'

t.test('/.well-known/jwks.json publishes the public keys, never a private part', async (t) => {
  const { app } = await startGateway(t)
  const res = await app.inject({ url: '/.well-known/jwks.json' })
  t.equal(res.statusCode, 200)
  const { keys } = res.json() as { keys: Array<Record<string, string>> }
  t.equal(keys.length, 1)
  t.match(keys[0], { kid: 'test-1', alg: 'ES256', use: 'sig', kty: 'EC', crv: 'P-256' })
  t.equal(keys[0].d, undefined, 'no private key material')
})

t.test('HS256 publishes no key at all', async (t) => {
  const { app } = await startGateway(t, { tokens: { algorithm: 'HS256', keys: [], secret: 'q3Zr8vK2mX9pL4tW7nB1cF6hJ0sD5gY8aE2uR4iO9kM=' } })
  t.same((await app.inject({ url: '/.well-known/jwks.json' })).json(), { keys: [] })
})

t.test('@fastify/jwt signs our tokens and its request verifier checks them, own and an IdP\'s', async (t) => {
  const idp = await startIdp(t)
  const up = await startUpstream(t)
  const loaded = await testConfig({
    tokens: { trustedIssuers: [{ issuer: idp.issuer, jwksUri: idp.jwksUri, audience: 'api', algorithms: ['ES256'] }] },
    routes: [{ prefix: '/api', upstream: up.url, issuers: ['tokengate', idp.issuer] }]
  })
  const app = await buildGateway(loaded)
  t.teardown(() => app.close())
  // @fastify/jwt's request verifier sets request.user to the verified payload.
  const verifiedBy = new Map<string, unknown>()
  app.addHook('onResponse', async (request) => { verifiedBy.set(request.url, (request.user as { sub?: string } | null)?.sub) })
  await app.ready()

  const token = app.jwt.sign({ iss: 'tokengate', aud: 'api', sub: 'u-9', sid: 's-9', jti: 'j-9', scope: '', roles: [], username: 'nine', exp: Math.floor(Date.now() / 1000) + 60 })
  t.match(app.jwt.decode<{ header: Record<string, unknown> }>(token), { header: { alg: 'ES256', typ: 'at+jwt', kid: 'test-1' } })
  const auth = (tk: string): Record<string, string> => ({ authorization: `Bearer ${tk}` })
  t.equal((await app.inject({ url: '/api/own', headers: auth(token) })).statusCode, 200, 'a token @fastify/jwt signed passes')
  t.equal(verifiedBy.get('/api/own'), 'u-9')
  t.equal((await app.inject({ url: '/api/idp', headers: auth(idp.mint({ sub: 'ext-9' })) })).statusCode, 200)
  t.equal(verifiedBy.get('/api/idp'), 'ext-9')
  t.equal((await app.inject({ url: '/api/again', headers: auth(token) })).statusCode, 200)
  t.equal(verifiedBy.get('/api/again'), undefined, 'a cached token is not verified again')
})
