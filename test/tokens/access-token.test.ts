import { generateKeyPairSync, sign as cryptoSign } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { AccessTokens, TokenRejected, VERIFIED_CACHE_SIZE } from '../../src/tokens/access-token.js'
import { loadConfig } from '../../src/config/load-config.js'
import { writeTestConfig } from '../helpers/gateway.js'

// Access tokens for every supported algorithm, key rotation by kid, and the
// narrow verification that refuses anything we did not sign as configured.

const OPTIONS = { issuer: 'tokengate', audience: 'api', accessTtlMs: 60_000, clockSkewMs: 0 }
const INPUT = { sub: 'u-1', sid: 's-1', username: 'alice', roles: ['admin'], scopes: ['a', 'b'] }

function b64 (value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

async function tokensFor (algorithm: string, keys: Array<{ kid: string, type: 'rsa' | 'ec' | 'ed25519', pub?: boolean }>): Promise<{ tokens: AccessTokens, files: Record<string, string> }> {
  const { dir } = await writeTestConfig()
  const files: Record<string, string> = {}
  const entries = keys.map(({ kid, type, pub }) => {
    const pair = type === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519')
    const file = join(dir, `${kid}.pem`)
    writeFileSync(file, pub === true ? pair.publicKey.export({ format: 'pem', type: 'spki' }) : pair.privateKey.export({ format: 'pem', type: 'pkcs8' }))
    files[kid] = file
    return pub === true ? `    - { kid: ${kid}, publicKey: ${file} }` : `    - { kid: ${kid}, privateKey: ${file} }`
  })
  const file = join(dir, 'alg.yaml')
  writeFileSync(file, `tokens:\n  algorithm: ${algorithm}\n  keys:\n${entries.join('\n')}\nauth: { users: { file: ./users.yaml } }\n`)
  return { tokens: new AccessTokens(loadConfig(file, {}).keys, OPTIONS), files }
}

for (const [algorithm, type] of [['RS256', 'rsa'], ['ES256', 'ec'], ['EdDSA', 'ed25519']] as const) {
  t.test(`${algorithm}: issue and verify; header carries kid and typ at+jwt`, async (t) => {
    const { tokens } = await tokensFor(algorithm, [{ kid: 'k1', type }])
    const { token, jti } = tokens.issue(INPUT)
    const header = JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString())
    t.same(header, { alg: algorithm, typ: 'at+jwt', kid: 'k1' })
    const claims = tokens.verify(token)
    t.match(claims, { iss: 'tokengate', aud: 'api', sub: 'u-1', sid: 's-1', jti, scope: 'a b', roles: ['admin'] })
  })
}

t.test('HS256 with a 32-byte secret', async (t) => {
  const { dir } = await writeTestConfig()
  const file = join(dir, 'hs.yaml')
  writeFileSync(file, `tokens: { algorithm: HS256, secret: "q3Zr8vK2mX9pL4tW7nB1cF6hJ0sD5gY8aE2uR4iO9kM=" }\nauth: { users: { file: ./users.yaml } }\n`)
  const tokens = new AccessTokens(loadConfig(file, {}).keys, OPTIONS)
  t.equal(tokens.verify(tokens.issue(INPUT).token).sub, 'u-1')
})

t.test('key rotation: the first key signs, every configured key verifies by kid', async (t) => {
  const old = await tokensFor('ES256', [{ kid: 'old', type: 'ec' }])
  const oldToken = old.tokens.issue(INPUT).token
  const { dir } = await writeTestConfig()
  const rotated = join(dir, 'rotated.yaml')
  const pub = join(dir, 'old.pub.pem')
  const { createPublicKey } = await import('node:crypto')
  const { readFileSync } = await import('node:fs')
  writeFileSync(pub, createPublicKey(readFileSync(old.files.old)).export({ format: 'pem', type: 'spki' }))
  writeFileSync(rotated, `tokens:\n  algorithm: ES256\n  keys:\n    - { kid: new, privateKey: ./signing.pem }\n    - { kid: old, publicKey: ${pub} }\nauth: { users: { file: ./users.yaml } }\n`)
  const tokens = new AccessTokens(loadConfig(rotated, {}).keys, OPTIONS)
  t.equal(tokens.verify(oldToken).sub, 'u-1', 'a token signed with the old key still verifies')
  const fresh = tokens.issue(INPUT).token
  t.equal(JSON.parse(Buffer.from(fresh.split('.')[0], 'base64url').toString()).kid, 'new')
  t.throws(() => old.tokens.verify(fresh), TokenRejected, 'the old-only config does not know kid "new"')
})

t.test('refused: alg none, other algorithms, unknown kid, wrong iss/aud/typ, expired, missing claims', async (t) => {
  const { tokens, files } = await tokensFor('ES256', [{ kid: 'k1', type: 'ec' }])
  const { readFileSync } = await import('node:fs')
  const key = readFileSync(files.k1)
  const now = Math.floor(Date.now() / 1000)
  const good = { iss: 'tokengate', aud: 'api', sub: 'u', sid: 's', jti: 'j', iat: now, exp: now + 60, scope: '', roles: [], username: 'u' }
  const es256 = (header: object, payload: object): string => {
    const input = `${b64(header)}.${b64(payload)}`
    return `${input}.${cryptoSign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`
  }
  const h = { alg: 'ES256', typ: 'at+jwt', kid: 'k1' }
  t.equal(tokens.verify(es256(h, good)).sub, 'u', 'the control token verifies')
  const cases: Array<[string, string, string]> = [
    ['alg none', `${b64({ alg: 'none', typ: 'at+jwt' })}.${b64(good)}.`, 'malformed'],
    ['alg NoNe', `${b64({ alg: 'NoNe', typ: 'at+jwt' })}.${b64(good)}.AA`, 'invalid'],
    ['unknown kid', es256({ ...h, kid: 'k2' }, good), 'invalid'],
    ['kid path injection', es256({ ...h, kid: '../../dev/null' }, good), 'invalid'],
    ['typ JWT', es256({ ...h, typ: 'JWT' }, good), 'invalid'],
    ['no typ', es256({ alg: 'ES256', kid: 'k1' }, good), 'invalid'],
    ['wrong iss', es256(h, { ...good, iss: 'evil' }), 'invalid'],
    ['array iss', es256(h, { ...good, iss: ['tokengate'] }), 'invalid'],
    ['wrong aud', es256(h, { ...good, aud: 'other' }), 'invalid'],
    ['expired', es256(h, { ...good, exp: now - 10 }), 'expired'],
    ['exp as string', es256(h, { ...good, exp: String(now + 60) }), 'invalid'],
    ['no exp', es256(h, { ...good, exp: undefined }), 'invalid'],
    ['future nbf', es256(h, { ...good, nbf: now + 600 }), 'invalid'],
    ['no sid', es256(h, { ...good, sid: undefined }), 'invalid'],
    ['CRLF in a claim', es256(h, { ...good, username: 'a\r\nX-User-Id: root' }), 'invalid'],
    ['unknown crit', es256({ ...h, crit: ['exp-x'], 'exp-x': 1 }, good), 'invalid'],
    ['four segments', `${es256(h, good)}.x`, 'malformed'],
    ['oversized', `${b64(h)}.${'A'.repeat(9000)}.sig`, 'malformed']
  ]
  for (const [name, token, reason] of cases) {
    t.throws(() => tokens.verify(token), { name: 'TokenRejected', reason }, name)
  }
  // RS → HS confusion: an HS256 token keyed with our public key is refused by algorithm.
  const pem = readFileSync(files.k1)
  const input = `${b64({ alg: 'HS256', typ: 'at+jwt', kid: 'k1' })}.${b64(good)}`
  const hmac = (await import('node:crypto')).createHmac('sha256', pem).update(input).digest('base64url')
  t.throws(() => tokens.verify(`${input}.${hmac}`), { name: 'TokenRejected', reason: 'invalid' }, 'HS256 with the public key')
})

t.test('verified tokens are cached whole: a hit still expires, and the cache never outgrows its bound', async (t) => {
  const { dir } = await writeTestConfig()
  const file = join(dir, 'hs.yaml')
  writeFileSync(file, `tokens: { algorithm: HS256, secret: "q3Zr8vK2mX9pL4tW7nB1cF6hJ0sD5gY8aE2uR4iO9kM=" }\nauth: { users: { file: ./users.yaml } }\n`)
  const tokens = new AccessTokens(loadConfig(file, {}).keys, { ...OPTIONS, clockSkewMs: 5_000 })
  const issued = tokens.issue(INPUT)
  const first = tokens.verify(issued.token)
  t.equal(tokens.cachedTokens, 1)
  t.equal(tokens.verify(issued.token), first, 'the second verification is the cached claims')
  t.ok(Object.isFrozen(first) && Object.isFrozen(first.roles), 'cached claims cannot be changed by one request for the next')
  // Within the skew past exp the cached token still passes; beyond it, it is expired like an uncached one.
  t.equal(tokens.verify(issued.token, issued.exp * 1000 + 4_000).sub, 'u-1')
  t.throws(() => tokens.verify(issued.token, issued.exp * 1000 + 6_000), { name: 'TokenRejected', reason: 'expired' })
  t.equal(tokens.cachedTokens, 0, 'an expired token leaves the cache')

  // One changed byte is another token: it misses the cache and fails the signature.
  tokens.verify(issued.token)
  const last = issued.token.at(-2) === 'A' ? 'B' : 'A'
  t.throws(() => tokens.verify(`${issued.token.slice(0, -2)}${last}${issued.token.slice(-1)}`), { name: 'TokenRejected' })

  for (let n = 0; n < VERIFIED_CACHE_SIZE + 100; n++) tokens.verify(tokens.issue({ ...INPUT, sub: `u-${n}` }).token)
  t.equal(tokens.cachedTokens, VERIFIED_CACHE_SIZE, 'bounded: the oldest entries made room')
})
