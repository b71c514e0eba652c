import { scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto'
import bcrypt from 'bcryptjs'
import { verifyPassword } from './password.js'

// The hash formats a user database may already hold. Each is verified by a
// well-kept implementation; only argon2id is what we write (see password.ts).
//
// scrypt has no single standard string form; we read the PHC one:
//   $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt, base64 without padding>$<hash, base64 without padding>
// The derived key is as long as the stored hash.

export type HashKind = 'argon2id' | 'argon2i' | 'bcrypt' | 'scrypt' | 'unknown'

const SCRYPT_PHC = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/
/** Refuses parameters that would let a stored hash make one login cost seconds or gigabytes. */
const SCRYPT_MAX_LN = 20
const SCRYPT_MAX_R = 32
const SCRYPT_MAX_P = 16

export function hashKind (hash: string): HashKind {
  if (hash.startsWith('$argon2id$')) return 'argon2id'
  if (hash.startsWith('$argon2i$')) return 'argon2i'
  if (/^\$2[aby]\$\d{2}\$/.test(hash)) return 'bcrypt'
  if (hash.startsWith('$scrypt$')) return 'scrypt'
  return 'unknown'
}

/** Whether a verified hash should be replaced by an argon2id one. */
export function needsRehash (hash: string): boolean {
  return hashKind(hash) !== 'argon2id'
}

function scrypt (password: string, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCallback(password, salt, keylen, options, (err, key) => { if (err === null) resolve(key); else reject(err) })
  })
}

async function verifyScrypt (hash: string, password: string): Promise<boolean> {
  const m = SCRYPT_PHC.exec(hash)
  if (m === null) return false
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])]
  if (ln < 1 || ln > SCRYPT_MAX_LN || r < 1 || r > SCRYPT_MAX_R || p < 1 || p > SCRYPT_MAX_P) return false
  const salt = Buffer.from(m[4], 'base64')
  const expected = Buffer.from(m[5], 'base64')
  if (expected.length < 16) return false
  const N = 2 ** ln
  const key = await scrypt(password, salt, expected.length, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 })
  return timingSafeEqual(key, expected)
}

/** True when `password` matches `hash` in any format we read; false for a mismatch or a hash we cannot read. */
export async function verifyAnyHash (hash: string, password: string): Promise<boolean> {
  try {
    switch (hashKind(hash)) {
      case 'argon2id':
      case 'argon2i':
        return await verifyPassword(hash, password)
      case 'bcrypt':
        // bcryptjs reads $2a$ and $2b$; $2y$ (PHP's) is the same algorithm under another name.
        return await bcrypt.compare(password, hash.replace(/^\$2y\$/, '$2b$'))
      case 'scrypt':
        return await verifyScrypt(hash, password)
      default:
        return false
    }
  } catch {
    return false
  }
}
