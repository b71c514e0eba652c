import { hash, verify, Algorithm } from '@node-rs/argon2'

// argon2id with OWASP's minimum (m=19456 KiB, t=2, p=1).
export const ARGON2_OPTIONS = { algorithm: Algorithm.Argon2id, memoryCost: 19456, timeCost: 2, parallelism: 1 } as const

/** Passwords longer than this are refused before hashing: hashing cost must not be the attacker's to choose. */
export const MAX_PASSWORD_BYTES = 1024

export function hashPassword (password: string): Promise<string> {
  return hash(password, ARGON2_OPTIONS)
}

export async function verifyPassword (passwordHash: string, password: string): Promise<boolean> {
  try {
    return await verify(passwordHash, password)
  } catch {
    return false
  }
}

// An unknown username is checked against this hash, so it costs what a wrong
// password costs and the two answers cannot be told apart by timing.
let dummyHash: Promise<string> | undefined
export function dummyPasswordHash (): Promise<string> {
  dummyHash ??= hashPassword('tokengate-dummy-password-for-unknown-users')
  return dummyHash
}
