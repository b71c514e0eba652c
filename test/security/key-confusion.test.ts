import { createHmac, createPublicKey, generateKeyPairSync, sign as cryptoSign } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'

// RS/ES → HS key confusion: an attacker signs with HMAC using our public key
// as the secret, in every textual form a library might normalise it to; and
// certificates or URLs in the header that a careless verifier would fetch.

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')

t.test('HS256 signed with our public key, in every textual form, is refused and reaches nothing', async (t) => {
  const up = await startUpstream(t)
  const { app, loaded } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url }] })
  const { access_token: token } = await login(app, 'alice')
  const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()) as Record<string, unknown>
  const pem = createPublicKey(readFileSync(join(loaded.file, '..', 'signing.pem'))).export({ format: 'pem', type: 'spki' }).toString()
  const jwks = (await app.inject({ url: '/.well-known/jwks.json' })).json() as { keys: unknown[] }
  const forms: Record<string, string> = {
    'PEM as served': pem,
    'PEM without trailing newline': pem.trimEnd(),
    'PEM with leading whitespace': `  ${pem}`,
    'PEM with a zero-width space': `\u200b${pem}`,
    'PEM with CRLF line ends': pem.replace(/\n/g, '\r\n'),
    'base64 body only': pem.replace(/-----[^-]+-----|\s/g, ''),
    'JWK from our JWKS': JSON.stringify(jwks.keys[0])
  }
  for (const [name, secret] of Object.entries(forms)) {
    for (const alg of ['HS256', 'HS384', 'HS512']) {
      const input = `${b64({ alg, typ: 'at+jwt', kid: 'test-1' })}.${b64(payload)}`
      const digest = alg === 'HS256' ? 'sha256' : alg === 'HS384' ? 'sha384' : 'sha512'
      const forged = `${input}.${createHmac(digest, secret).update(input).digest('base64url')}`
      const res = await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${forged}` } })
      t.equal(res.statusCode, 401, `${alg} with ${name}`)
    }
  }
  t.equal(up.seen.length, 0)
})

t.test('x5c, x5u and jku in the header are never used to find a key', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url }] })
  const { access_token: token } = await login(app, 'alice')
  const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()) as Record<string, unknown>
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const der = publicKey.export({ format: 'der', type: 'spki' }).toString('base64')
  for (const extra of [{ x5c: [der] }, { x5u: 'http://127.0.0.1:1/cert.pem' }, { jku: 'http://127.0.0.1:1/jwks.json' }, { jwk: publicKey.export({ format: 'jwk' }) }]) {
    const input = `${b64({ alg: 'ES256', typ: 'at+jwt', ...extra })}.${b64(payload)}`
    const forged = `${input}.${cryptoSign('sha256', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`
    const res = await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${forged}` } })
    t.equal(res.statusCode, 401, Object.keys(extra)[0])
  }
  t.equal(up.seen.length, 0)
})
