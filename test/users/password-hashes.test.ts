import t from 'tap'
import { hashKind, needsRehash, verifyAnyHash } from '../../src/users/password-hashes.js'
import { scryptPhc } from '../helpers/postgres.js'

// The scrypt PHC form we document, and hashes we must refuse to work on.

t.test('scrypt in the documented PHC form verifies, with or without base64 padding', async (t) => {
  const hash = scryptPhc('pw-1', 12)
  t.equal(hashKind(hash), 'scrypt')
  t.ok(needsRehash(hash))
  t.ok(await verifyAnyHash(hash, 'pw-1'))
  t.notOk(await verifyAnyHash(hash, 'pw-2'))
  const [, , params, salt, key] = hash.split('$')
  const padded = `$scrypt$${params}$${salt}==$${key}=`
  t.ok(await verifyAnyHash(padded, 'pw-1'))
})

t.test('a stored hash cannot make a login expensive, and unknown formats never verify', async (t) => {
  const costly = scryptPhc('pw', 12).replace('ln=12', 'ln=30')
  t.notOk(await verifyAnyHash(costly, 'pw'), 'ln above 20 is refused without hashing')
  t.notOk(await verifyAnyHash('plaintext-password', 'plaintext-password'), 'a plain-text column is not a hash')
  t.notOk(await verifyAnyHash('$1$abc$def', 'x'), 'md5-crypt is not read')
  t.notOk(await verifyAnyHash('$2b$04$short', 'x'), 'a truncated bcrypt hash is a mismatch, not an error')
})
