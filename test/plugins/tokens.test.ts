import t from 'tap'
import { startGateway } from '../helpers/gateway.js'

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
