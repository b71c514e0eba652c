import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto'

// Refresh tokens are opaque: 256 random bits, base64url. The store only ever
// sees their SHA-256 hashes. When a token is rotated, its successor is kept
// sealed with a key only the presented token can derive, so a concurrent tab
// presenting the same token inside the grace window can be handed the same
// successor while a dump of the store reveals no usable token.

export const REFRESH_TOKEN_BYTES = 32
export const REFRESH_TOKEN_LENGTH = 43

const WELL_FORMED = /^[A-Za-z0-9_-]{43}$/
const IV_BYTES = 12
const TAG_BYTES = 16
const KEY_BYTES = 32
const HKDF_SALT = Buffer.from('tokengate refresh successor v1')
const HKDF_INFO = Buffer.from('aes-256-gcm key')
/** Binds the ciphertext to its purpose: a sealed blob from elsewhere will not open. */
const AAD = Buffer.from('tokengate:successor:v1')

export function generateRefreshToken (): string {
  return randomBytes(REFRESH_TOKEN_BYTES).toString('base64url')
}

export function hashRefreshToken (token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex')
}

export function isWellFormedRefreshToken (s: unknown): s is string {
  return typeof s === 'string' && WELL_FORMED.test(s)
}

function successorKey (presented: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(presented, 'utf8'), HKDF_SALT, HKDF_INFO, KEY_BYTES))
}

/** base64url(iv ‖ ciphertext ‖ tag) */
export function sealSuccessor (presented: string, successor: string): string {
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv('aes-256-gcm', successorKey(presented), iv)
  cipher.setAAD(AAD)
  const body = Buffer.concat([cipher.update(successor, 'utf8'), cipher.final()])
  return Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url')
}

/** The successor, or null when `sealed` was not sealed for `presented` or was altered. */
export function openSuccessor (presented: string, sealed: string): string | null {
  if (typeof sealed !== 'string' || !/^[A-Za-z0-9_-]+$/.test(sealed)) return null
  const raw = Buffer.from(sealed, 'base64url')
  if (raw.length <= IV_BYTES + TAG_BYTES) return null
  try {
    const decipher = createDecipheriv('aes-256-gcm', successorKey(presented), raw.subarray(0, IV_BYTES))
    decipher.setAAD(AAD)
    decipher.setAuthTag(raw.subarray(raw.length - TAG_BYTES))
    const plain = Buffer.concat([decipher.update(raw.subarray(IV_BYTES, raw.length - TAG_BYTES)), decipher.final()])
    return plain.toString('utf8')
  } catch {
    return null
  }
}
