import { createHmac, createPublicKey, generateKeyPairSync, sign as cryptoSign } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream, type TestUpstream } from '../helpers/upstream.js'

// Forged and malformed access tokens over HTTP, one attack per test: each
// must get 401 with a generic JSON body, reach no upstream, and leave the
// gateway answering.

interface Target { app: FastifyInstance, up: TestUpstream, key: Buffer, good: Record<string, unknown>, header: Record<string, unknown> }

async function target (t: Test): Promise<Target> {
  const up = await startUpstream(t)
  const { app, loaded } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url }] })
  const { access_token: token } = await login(app, 'alice')
  const [h, p] = token.split('.').slice(0, 2).map((s) => JSON.parse(Buffer.from(s, 'base64url').toString()) as Record<string, unknown>)
  const key = readFileSync(join(loaded.file, '..', 'signing.pem'))
  return { app, up, key, good: p, header: h }
}

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')

function es256 (key: Buffer, header: unknown, payload: unknown): string {
  const input = `${b64(header)}.${b64(payload)}`
  return `${input}.${cryptoSign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`
}

async function refused (t: Test, { app, up }: Target, token: string): Promise<void> {
  const res = await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${token}` } })
  t.equal(res.statusCode, 401)
  t.match(res.headers['www-authenticate'], /error="invalid_token"/)
  t.match(res.json(), { statusCode: 401, error: 'invalid_token' })
  t.notMatch(res.body, /FAST_JWT|fast-jwt|signature|stack|\.ts:|\.js:/i, 'no library text in the answer')
  t.equal(up.seen.length, 0, 'the upstream saw nothing')
  t.equal((await app.inject({ url: '/healthz' })).statusCode, 200, 'the gateway still answers')
}

const attacks: Array<[string, (x: Target) => string]> = [
  ['alg none', (x) => `${b64({ ...x.header, alg: 'none' })}.${b64(x.good)}.`],
  ['alg NONE upper case with a signature', (x) => `${b64({ ...x.header, alg: 'NONE' })}.${b64(x.good)}.AAAA`],
  ['alg nOnE mixed case', (x) => `${b64({ ...x.header, alg: 'nOnE' })}.${b64(x.good)}.`],
  ['null signature', (x) => `${b64(x.header)}.${b64(x.good)}.`],
  ['truncated signature', (x) => { const s = es256(x.key, x.header, x.good); return s.slice(0, -10) }],
  ['HMAC with an empty secret', (x) => { const i = `${b64({ ...x.header, alg: 'HS256' })}.${b64(x.good)}`; return `${i}.${createHmac('sha256', '').update(i).digest('base64url')}` }],
  ['HMAC with a common secret', (x) => { const i = `${b64({ ...x.header, alg: 'HS256' })}.${b64(x.good)}`; return `${i}.${createHmac('sha256', 'secret').update(i).digest('base64url')}` }],
  ['ES256 to HS256 key confusion with the public key PEM', (x) => {
    const pem = createPublicKey(x.key).export({ format: 'pem', type: 'spki' }).toString()
    const i = `${b64({ ...x.header, alg: 'HS256' })}.${b64(x.good)}`
    return `${i}.${createHmac('sha256', pem).update(i).digest('base64url')}`
  }],
  ['key confusion with the public key as JWK', (x) => {
    const jwk = JSON.stringify(createPublicKey(x.key).export({ format: 'jwk' }))
    const i = `${b64({ ...x.header, alg: 'HS256' })}.${b64(x.good)}`
    return `${i}.${createHmac('sha256', jwk).update(i).digest('base64url')}`
  }],
  ['embedded jwk of the attacker', (x) => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    return es256(privateKey.export({ format: 'pem', type: 'pkcs8' }) as Buffer, { ...x.header, jwk: publicKey.export({ format: 'jwk' }) }, x.good)
  }],
  ['jku pointing at the attacker', (x) => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    return es256(privateKey.export({ format: 'pem', type: 'pkcs8' }) as Buffer, { ...x.header, jku: 'http://127.0.0.1:1/jwks.json', kid: 'evil' }, x.good)
  }],
  ['kid path traversal', (x) => es256(x.key, { ...x.header, kid: '../../../../dev/null' }, x.good)],
  ['kid SQL injection', (x) => es256(x.key, { ...x.header, kid: "x' UNION SELECT 'key'--" }, x.good)],
  ['kid shell injection', (x) => es256(x.key, { ...x.header, kid: 'k; rm -rf /' }, x.good)],
  ['psychic signature: r = s = 0', (x) => `${b64(x.header)}.${b64(x.good)}.${Buffer.alloc(64).toString('base64url')}`],
  ['claims tampered under a kept signature', (x) => { const [h, , s] = es256(x.key, x.header, x.good).split('.'); return `${h}.${b64({ ...x.good, roles: ['admin', 'root'] })}.${s}` }],
  ['expired', (x) => es256(x.key, x.header, { ...x.good, exp: Math.floor(Date.now() / 1000) - 3600 })],
  ['no exp', (x) => es256(x.key, x.header, { ...x.good, exp: undefined })],
  ['exp as a string', (x) => es256(x.key, x.header, { ...x.good, exp: String(Number(x.good.exp)) })],
  ['future nbf', (x) => es256(x.key, x.header, { ...x.good, nbf: Math.floor(Date.now() / 1000) + 3600 })],
  ['wrong iss', (x) => es256(x.key, x.header, { ...x.good, iss: 'someone-else' })],
  ['array iss', (x) => es256(x.key, x.header, { ...x.good, iss: ['tokengate'] })],
  ['wrong aud', (x) => es256(x.key, x.header, { ...x.good, aud: 'other-api' })],
  ['missing aud', (x) => es256(x.key, x.header, { ...x.good, aud: undefined })],
  ['typ JWT instead of at+jwt', (x) => es256(x.key, { ...x.header, typ: 'JWT' }, x.good)],
  ['missing typ', (x) => es256(x.key, { alg: 'ES256', kid: x.header.kid }, x.good)],
  ['unknown crit', (x) => es256(x.key, { ...x.header, crit: ['x-ext'], 'x-ext': true }, x.good)],
  ['non-canonical base64url signature', (x) => {
    const token = es256(x.key, x.header, x.good)
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    const last = alphabet.indexOf(token[token.length - 1])
    return token.slice(0, -1) + alphabet[last ^ 1]
  }],
  ['two segments', (x) => `${b64(x.header)}.${b64(x.good)}`],
  ['four segments', (x) => `${es256(x.key, x.header, x.good)}.AAAA`],
  ['five segments (JWE shape)', (x) => `${b64(x.header)}.a.b.c.d`],
  ['array payload', (x) => es256(x.key, x.header, [x.good])],
  ['null payload', (x) => es256(x.key, x.header, null)],
  ['oversized token', (x) => es256(x.key, x.header, { ...x.good, pad: 'A'.repeat(10_000) })],
  ['CR/LF in a claim', (x) => es256(x.key, x.header, { ...x.good, username: 'alice\r\nX-User-Roles: admin' })],
  ['control character in a claim', (x) => es256(x.key, x.header, { ...x.good, name: 'a\u0000b' })]
]

for (const [name, forge] of attacks) {
  t.test(name, async (t) => {
    const x = await target(t)
    await refused(t, x, forge(x))
  })
}

t.test('a token in the query string is never read', async (t) => {
  const x = await target(t)
  const { access_token: token } = await login(x.app, 'alice')
  for (const url of [`/api/x?access_token=${token}`, `/api/x?token=${token}`]) {
    const res = await x.app.inject({ url })
    t.equal(res.statusCode, 401, url.split('=')[0])
  }
  t.equal(x.up.seen.length, 0)
})
