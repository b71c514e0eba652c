import t from 'tap'
import {
  generateRefreshToken,
  hashRefreshToken,
  isWellFormedRefreshToken,
  openSuccessor,
  REFRESH_TOKEN_LENGTH,
  sealSuccessor,
  sidOfRefresh
} from '../../src/tokens/refresh-token.js'

const SID = 'sEsSiOn_id-0123456789A'
const generate = (): string => generateRefreshToken(SID)

t.test('a refresh token is its session id, a dot and 32 random bytes in 43 base64url characters', async (t) => {
  const tokens = new Set(Array.from({ length: 100 }, generate))
  t.equal(tokens.size, 100, 'no repeats')
  for (const token of tokens) {
    const [sid, secret] = token.split('.')
    t.equal(sid, SID)
    t.equal(secret?.length, REFRESH_TOKEN_LENGTH)
    t.equal(Buffer.from(secret ?? '', 'base64url').length, 32)
    t.ok(isWellFormedRefreshToken(token))
    t.equal(sidOfRefresh(token), SID)
  }
  for (const bad of ['', 'a.b', 'x'.repeat(65), 'a}b', 'a{b']) t.throws(() => generateRefreshToken(bad), TypeError, `sid ${JSON.stringify(bad)}`)
})

t.test('the handle is the sid and the hex SHA-256 of the whole token; a pre-sid token hashes bare', async (t) => {
  t.equal(hashRefreshToken('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  const token = generate()
  t.equal(hashRefreshToken(token), hashRefreshToken(token))
  t.match(hashRefreshToken(token), new RegExp(`^${SID}\\.[0-9a-f]{64}$`))
  t.equal(sidOfRefresh(hashRefreshToken(token)), SID, 'the handle leads to the session')
  t.not(hashRefreshToken(token), hashRefreshToken(generate()))
  const legacy = 'A'.repeat(43)
  t.ok(isWellFormedRefreshToken(legacy), 'a token issued before the sid was carried is still well formed')
  t.match(hashRefreshToken(legacy), /^[0-9a-f]{64}$/)
  t.equal(sidOfRefresh(legacy), null)
  t.equal(sidOfRefresh(hashRefreshToken(legacy)), null, 'and names no session')
})

t.test('only <sid>.<43 base64url characters> (or the bare 43 of old) is well formed', async (t) => {
  const good = generate()
  const secret = good.slice(SID.length + 1)
  for (const bad of [undefined, null, 43, {}, '', good.slice(0, -1), `${good}A`, `${good.slice(0, -1)}+`, `${good.slice(0, -1)}=`,
    `${good} `, `${good}\n`, `.${secret}`, `${'x'.repeat(65)}.${secret}`, `a.b.${secret}`, `a{b}.${secret}`, secret.slice(1)]) {
    t.notOk(isWellFormedRefreshToken(bad), JSON.stringify(bad) ?? String(bad))
  }
})

t.test('a sealed successor opens only with the token it was sealed for', async (t) => {
  const presented = generate()
  const successor = generate()
  const sealed = sealSuccessor(presented, successor)
  t.match(sealed, /^[A-Za-z0-9_-]+$/)
  t.notOk(sealed.includes(successor))
  t.equal(openSuccessor(presented, sealed), successor)
  t.not(sealSuccessor(presented, successor), sealed, 'a fresh IV every time')
  t.equal(openSuccessor(generate(), sealed), null, 'another token cannot open it')
})

t.test('any tampering makes openSuccessor return null', async (t) => {
  const presented = generate()
  const sealed = sealSuccessor(presented, generate())
  const raw = Buffer.from(sealed, 'base64url')
  for (let i = 0; i < raw.length; i++) {
    const flipped = Buffer.from(raw)
    flipped[i] = (flipped[i] ?? 0) ^ 1
    t.equal(openSuccessor(presented, flipped.toString('base64url')), null, `byte ${i}`)
  }
  t.equal(openSuccessor(presented, raw.subarray(0, raw.length - 1).toString('base64url')), null, 'truncated')
  t.equal(openSuccessor(presented, raw.subarray(0, 28).toString('base64url')), null, 'no ciphertext')
  t.equal(openSuccessor(presented, ''), null, 'empty')
  t.equal(openSuccessor(presented, `${sealed}!`), null, 'not base64url')
})
