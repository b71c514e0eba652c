import { createPrivateKey, createPublicKey, type KeyObject, type JsonWebKey } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Algorithm, GatewayConfig } from '../config/schema.js'
import type { KeyPath } from '../config/yaml-source.js'
import { weakSecretReason } from './secret-strength.js'

// Key material for access tokens, loaded once per config. Asymmetric keys come
// from PEM files listed in `tokens.keys`: the first signs, all verify, each by
// its kid. An HS256 secret must be at least 32 bytes (RFC 7518 §3.2) and not
// guessable (secret-strength.ts).

export const MIN_HS256_SECRET_BYTES = 32
const MIN_RSA_BITS = 2048

export interface VerifyKey {
  kid: string | undefined
  /** PEM (asymmetric) or the shared secret (HS256), as fast-jwt takes it. */
  key: string
  jwk: (JsonWebKey & { kid: string, alg: string, use: 'sig' }) | undefined
}

export interface TokenKeys {
  algorithm: Algorithm
  signing: { kid: string | undefined, key: string }
  verifying: VerifyKey[]
}

type Report = (path: KeyPath, message: string) => void

const EXPECTED_KEY: Record<Exclude<Algorithm, 'HS256'>, { type: string, curve?: string, label: string }> = {
  RS256: { type: 'rsa', label: `an RSA key of at least ${MIN_RSA_BITS} bits` },
  ES256: { type: 'ec', curve: 'prime256v1', label: 'an EC P-256 key' },
  EdDSA: { type: 'ed25519', label: 'an Ed25519 key' }
}

/** Loads and checks the keys; returns null after reporting every problem found. */
export function loadTokenKeys (tokens: GatewayConfig['tokens'], baseDir: string, report: Report): TokenKeys | null {
  const { algorithm } = tokens
  if (algorithm === 'HS256') {
    const secret = tokens.secret ?? ''
    if (Buffer.byteLength(secret, 'utf8') < MIN_HS256_SECRET_BYTES) {
      report(['tokens', 'secret'], `must be at least ${MIN_HS256_SECRET_BYTES} bytes for HS256 (got ${Buffer.byteLength(secret, 'utf8')})`)
      return null
    }
    const weak = weakSecretReason(secret)
    if (weak !== null) {
      report(['tokens', 'secret'], `${weak}; generate one with: openssl rand -base64 32`)
      return null
    }
    if (tokens.keys !== undefined && tokens.keys.length > 0) {
      report(['tokens', 'keys'], 'is for asymmetric algorithms; HS256 uses tokens.secret')
      return null
    }
    return { algorithm, signing: { kid: undefined, key: secret }, verifying: [{ kid: undefined, key: secret, jwk: undefined }] }
  }

  if (tokens.secret !== undefined && tokens.secret !== '') {
    report(['tokens', 'secret'], `is for HS256 only; ${algorithm} uses tokens.keys`)
  }
  const list = tokens.keys ?? []
  if (list.length === 0) {
    report(['tokens', 'keys'], `must list at least one key for ${algorithm}`)
    return null
  }
  const expected = EXPECTED_KEY[algorithm]
  const seen = new Set<string>()
  const verifying: VerifyKey[] = []
  let signing: TokenKeys['signing'] | null = null
  let ok = true

  list.forEach((entry, i) => {
    const at = (field: string): KeyPath => ['tokens', 'keys', i, field]
    if (seen.has(entry.kid)) {
      report(at('kid'), `duplicates kid "${entry.kid}"`)
      ok = false
    }
    seen.add(entry.kid)
    if (entry.privateKey === undefined && entry.publicKey === undefined) {
      report(['tokens', 'keys', i], 'needs privateKey or publicKey')
      ok = false
      return
    }
    if (i === 0 && entry.privateKey === undefined) {
      report(at('privateKey'), 'is required on the first key: it signs new tokens')
      ok = false
      return
    }
    let priv: KeyObject | undefined
    let pub: KeyObject | undefined
    try {
      if (entry.privateKey !== undefined) priv = createPrivateKey(readFileSync(resolve(baseDir, entry.privateKey)))
    } catch (err) {
      report(at('privateKey'), `cannot be loaded as a private key: ${describeLoadError(err)}`)
      ok = false
      return
    }
    try {
      if (entry.publicKey !== undefined) pub = createPublicKey(readFileSync(resolve(baseDir, entry.publicKey)))
    } catch (err) {
      report(at('publicKey'), `cannot be loaded as a public key: ${describeLoadError(err)}`)
      ok = false
      return
    }
    const derived = priv !== undefined ? createPublicKey(priv) : undefined
    if (pub !== undefined && derived !== undefined && !samePublicKey(pub, derived)) {
      report(at('publicKey'), 'does not match privateKey')
      ok = false
      return
    }
    const publicKey = (pub ?? derived) as KeyObject
    const problem = keyMismatch(publicKey, algorithm)
    if (problem !== null) {
      report(at(entry.privateKey !== undefined ? 'privateKey' : 'publicKey'), `must be ${expected.label} for ${algorithm}, got ${problem}`)
      ok = false
      return
    }
    const jwk = { ...publicKey.export({ format: 'jwk' }), kid: entry.kid, alg: algorithm, use: 'sig' as const }
    verifying.push({ kid: entry.kid, key: publicKey.export({ format: 'pem', type: 'spki' }).toString(), jwk })
    if (i === 0 && priv !== undefined) signing = { kid: entry.kid, key: priv.export({ format: 'pem', type: 'pkcs8' }).toString() }
  })

  return ok && signing !== null ? { algorithm, signing, verifying } : null
}

function keyMismatch (key: KeyObject, algorithm: Exclude<Algorithm, 'HS256'>): string | null {
  const expected = EXPECTED_KEY[algorithm]
  const type = key.asymmetricKeyType ?? 'unknown'
  if (type !== expected.type) return `a ${type} key`
  const details = key.asymmetricKeyDetails ?? {}
  if (expected.curve !== undefined && details.namedCurve !== expected.curve) return `curve ${details.namedCurve ?? 'unknown'}`
  if (type === 'rsa' && (details.modulusLength ?? 0) < MIN_RSA_BITS) return `${details.modulusLength ?? 0} bits`
  return null
}

function samePublicKey (a: KeyObject, b: KeyObject): boolean {
  return a.export({ format: 'der', type: 'spki' }).equals(b.export({ format: 'der', type: 'spki' }))
}

function describeLoadError (err: unknown): string {
  const e = err as NodeJS.ErrnoException
  if (e.code === 'ENOENT') return 'file not found'
  if (e.code === 'EACCES') return 'permission denied'
  return 'not a PEM key'
}
