import { randomBytes } from 'node:crypto'
import t from 'tap'
import { weakSecretReason } from '../../src/tokens/secret-strength.js'

// What the README and the start-up error tell operators to run must pass
// every time, not most times; guessable secrets must still be refused.

t.test('every generated 32-byte secret passes, in base64, base64url and hex', async (t) => {
  for (const encoding of ['base64', 'base64url', 'hex'] as const) {
    const refused: string[] = []
    for (let i = 0; i < 1000; i++) {
      const secret = randomBytes(32).toString(encoding)
      if (weakSecretReason(secret) !== null) refused.push(`${secret}: ${String(weakSecretReason(secret))}`)
    }
    t.same(refused, [], `openssl rand -${encoding === 'hex' ? 'hex' : 'base64'} 32 (${encoding})`)
  }
})

t.test('a random password-manager style value of 32 characters passes', async (t) => {
  t.equal(weakSecretReason('Zq3v9XkP2mW7rT4yB8nD1sF6hJ0cL5aE'), null)
})

t.test('guessable secrets of 32 bytes or more are refused', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['a'.repeat(40), /distinct characters/],
    ['abcabcabcabcabcabcabcabcabcabcabcabc', /distinct characters/],
    ['change-me-change-me-change-me-change-me', /distinct characters|repeated/],
    ['your-256-bit-secret-your-256-bit-secret', /repeated/],
    ['0123456789abcdef0123456789abcdef', /repeated/],
    ['my-super-secret-jwt-signing-key-12345678', /guessable/],
    ['ThisIsMyVerySecretKeyForJwtSigning2024!', /guessable/],
    ['correct-horse-battery-staple-xyz1', /guessable/],
    ['supersecretkeythatnobodywillguess123', /guessable/],
    ['qwertyuiopasdfghjklzxcvbnm123456', /guessable/]
  ]
  for (const [secret, why] of cases) t.match(weakSecretReason(secret), why, secret)
})

t.test('a long secret is judged in linear time (no backtracking regex over it)', async (t) => {
  t.equal(weakSecretReason(randomBytes(4096).toString('base64')), null)
})
