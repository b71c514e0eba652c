import t from 'tap'
import {
  generateRefreshToken,
  hashRefreshToken,
  isWellFormedRefreshToken,
  openSuccessor,
  REFRESH_TOKEN_LENGTH,
  sealSuccessor
} from '../../src/tokens/refresh-token.js'

t.test('a refresh token is 32 random bytes in 43 base64url characters', async (t) => {
  const tokens = new Set(Array.from({ length: 100 }, generateRefreshToken))
  t.equal(tokens.size, 100, 'no repeats')
  for (const token of tokens) {
    t.equal(token.length, REFRESH_TOKEN_LENGTH)
    t.equal(Buffer.from(token, 'base64url').length, 32)
    t.ok(isWellFormedRefreshToken(token))
  }
})

t.test('the hash is the hex SHA-256 of the token', async (t) => {
  t.equal(hashRefreshToken('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  const token = generateRefreshToken()
  t.equal(hashRefreshToken(token), hashRefreshToken(token))
  t.not(hashRefreshToken(token), hashRefreshToken(generateRefreshToken()))
})

t.test('only exactly 43 base64url characters are well formed', async (t) => {
  const good = generateRefreshToken()
  for (const bad of [undefined, null, 43, {}, '', good.slice(1), `${good}A`, `${good.slice(1)}+`, `${good.slice(1)}=`, `${good.slice(1)} `, `${good.slice(1)}\n`]) {
    t.notOk(isWellFormedRefreshToken(bad), JSON.stringify(bad) ?? String(bad))
  }
})

t.test('a sealed successor opens only with the token it was sealed for', async (t) => {
  const presented = generateRefreshToken()
  const successor = generateRefreshToken()
  const sealed = sealSuccessor(presented, successor)
  t.match(sealed, /^[A-Za-z0-9_-]+$/)
  t.notOk(sealed.includes(successor))
  t.equal(openSuccessor(presented, sealed), successor)
  t.not(sealSuccessor(presented, successor), sealed, 'a fresh IV every time')
  t.equal(openSuccessor(generateRefreshToken(), sealed), null, 'another token cannot open it')
})

t.test('any tampering makes openSuccessor return null', async (t) => {
  const presented = generateRefreshToken()
  const sealed = sealSuccessor(presented, generateRefreshToken())
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
