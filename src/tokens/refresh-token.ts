import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto'

// Refresh tokens are opaque: `<sid>.<secret>`, the secret 256 random bits in
// base64url. The session id in front is no secret (every access token of the
// session carries it as `sid`); it is there so that the store finds the
// token's session without a lookup of its own — on Redis Cluster, the slot of
// everything of that session (see redis-scripts.ts). The store only ever sees
// a handle made of the sid and the token's SHA-256 hash.
//
// Tokens issued before the sid was carried (the bare 43-character secret) are
// still well formed: their handle is the bare hash, which the embedded SQLite
// store still finds; the Redis store, whose layout changed with them, refuses
// them (invalid_grant: log in again). When a token is rotated, its successor is kept
// sealed with a key only the presented token can derive, so a concurrent tab
// presenting the same token inside the grace window can be handed the same
// successor while a dump of the store reveals no usable token.

export const REFRESH_TOKEN_BYTES = 32
export const REFRESH_TOKEN_LENGTH = 43

/** The longest session id a token may carry (ours are 22 characters, client-credential ones 19). */
export const MAX_SID_LENGTH = 64
const SECRET = /^[A-Za-z0-9_-]{43}$/
const WITH_SID = /^([A-Za-z0-9_-]{1,64})\.([A-Za-z0-9_-]{43})$/
const HANDLE_WITH_SID = /^([A-Za-z0-9_-]{1,64})\.[0-9a-f]{64}$/
const IV_BYTES = 12
const TAG_BYTES = 16
const KEY_BYTES = 32
const HKDF_SALT = Buffer.from('tokengate refresh successor v1')
const HKDF_INFO = Buffer.from('aes-256-gcm key')
/** Binds the ciphertext to its purpose: a sealed blob from elsewhere will not open. */
const AAD = Buffer.from('tokengate:successor:v1')

/** A session id a token can carry: base64url characters only, so it can never break the token's or a key's shape. */
export function isTokenSid (sid: string): boolean {
  return sid.length >= 1 && sid.length <= MAX_SID_LENGTH && /^[A-Za-z0-9_-]+$/.test(sid)
}

/** A fresh refresh token of session `sid`. */
export function generateRefreshToken (sid: string): string {
  if (!isTokenSid(sid)) throw new TypeError('a refresh token carries a base64url session id of 1 to 64 characters')
  return `${sid}.${randomBytes(REFRESH_TOKEN_BYTES).toString('base64url')}`
}

/**
 * What the store keeps and looks the token up by: `<sid>.<hex SHA-256 of the
 * whole token>`, or, for a token from before the sid was carried, the bare
 * hex SHA-256.
 */
export function hashRefreshToken (token: string): string {
  const digest = createHash('sha256').update(token, 'utf8').digest('hex')
  const m = WITH_SID.exec(token)
  return m === null ? digest : `${m[1]}.${digest}`
}

/** The session a token (or its handle) names; null for a pre-sid token, which names none. */
export function sidOfRefresh (tokenOrHandle: string): string | null {
  return WITH_SID.exec(tokenOrHandle)?.[1] ?? HANDLE_WITH_SID.exec(tokenOrHandle)?.[1] ?? null
}

export function isWellFormedRefreshToken (s: unknown): s is string {
  return typeof s === 'string' && (WITH_SID.test(s) || SECRET.test(s))
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
