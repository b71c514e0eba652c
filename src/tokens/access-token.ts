import { randomUUID } from 'node:crypto'
import { createSigner, createVerifier, TokenError } from 'fast-jwt'
import type { TokenKeys } from './token-keys.js'
import type { TrustedIssuers } from './trusted-issuers.js'

// Access tokens are JWTs per RFC 9068. Verification is deliberately narrower
// than a general JWT library: one algorithm (the configured one), our own keys
// chosen by kid, `typ: at+jwt`, our issuer and audience, and every claim the
// gateway relies on present with the right type. Nothing in a token's header
// can choose a key (jku, jwk, x5u, x5c are never read).

export const ACCESS_TOKEN_TYP = 'at+jwt'
/** Longer tokens are refused before any parsing: ours are well under 2 KiB. */
export const MAX_TOKEN_LENGTH = 8192
/** Verified tokens kept, each with its claims: about 1 KiB apiece, so about 10 MiB at most. */
export const VERIFIED_CACHE_SIZE = 10_000

export interface AccessClaims {
  iss: string
  aud: string | string[]
  sub: string
  sid: string
  jti: string
  iat: number
  exp: number
  nbf?: number
  scope: string
  roles: string[]
  username: string
  email?: string
  name?: string
}

export interface IssueInput {
  sub: string
  sid: string
  username: string
  email?: string
  name?: string
  roles: readonly string[]
  scopes: readonly string[]
  /** A machine client's token (client_credentials) names the client (RFC 9068 §2.2). */
  clientId?: string
  /** Overrides the configured lifetime (a client's own accessTtl). */
  ttlMs?: number
}

export interface IssuedAccessToken {
  token: string
  jti: string
  /** seconds since the epoch */
  exp: number
  expiresIn: number
}

export type RejectReason = 'malformed' | 'expired' | 'invalid'

/** Why a token was refused; `detail` is for logs only, never for the client. */
export class TokenRejected extends Error {
  readonly reason: RejectReason
  constructor (reason: RejectReason, detail: string) {
    super(detail)
    this.name = 'TokenRejected'
    this.reason = reason
  }
}

export interface AccessTokenOptions {
  issuer: string
  audience: string
  accessTtlMs: number
  clockSkewMs: number
}

const SEGMENT = '[A-Za-z0-9_-]+'
const COMPACT_JWS = new RegExp(`^${SEGMENT}\\.${SEGMENT}\\.${SEGMENT}$`)
const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
const CONTROL_CHAR = /[\x00-\x1f\x7f]/ // eslint-disable-line no-control-regex
const LONE_SURROGATE = /\p{Cs}/u

type Verify = (token: string) => unknown

export class AccessTokens {
  private readonly sign_: (payload: Record<string, unknown>) => string
  private readonly verifiers: Map<string | undefined, Verify>
  private readonly options: AccessTokenOptions
  readonly algorithm: TokenKeys['algorithm']
  /** Outside issuers; null when none is configured, so our own tokens take the same path as before. */
  private readonly external: TrustedIssuers | null

  constructor (keys: TokenKeys, options: AccessTokenOptions, external: TrustedIssuers | null = null) {
    this.options = options
    this.external = external !== null && external.size > 0 ? external : null
    this.algorithm = keys.algorithm
    this.sign_ = createSigner({
      key: keys.signing.key,
      algorithm: keys.algorithm,
      header: { alg: keys.algorithm, typ: ACCESS_TOKEN_TYP },
      ...(keys.signing.kid === undefined ? {} : { kid: keys.signing.kid })
    })
    this.verifiers = new Map(keys.verifying.map((k) => [k.kid, createVerifier({
      key: k.key,
      algorithms: [keys.algorithm],
      allowedIss: options.issuer,
      allowedAud: options.audience,
      checkTyp: ACCESS_TOKEN_TYP,
      requiredClaims: ['iss', 'aud', 'sub', 'sid', 'jti', 'iat', 'exp'],
      clockTolerance: options.clockSkewMs,
      // Our own cache sits in front (see `verified`).
      cache: false
    })]))
  }

  /**
   * Tokens that passed every check, keyed on the whole token string, with
   * their parsed claims: a hit costs a hash of the string and an expiry
   * check, where a miss costs a signature check (ES256 about 75 µs). Only
   * exact bytes hit, and a hit never skips the denylist (checked by the
   * caller on every request). Bounded: the oldest entry goes when it is full,
   * so a flood of distinct valid tokens cannot grow memory.
   */
  private readonly verified = new Map<string, AccessClaims>()

  /** How many verified tokens are cached now (for tests and metrics). */
  get issuer (): string {
    return this.options.issuer
  }

  get cachedTokens (): number {
    return this.verified.size
  }

  issue (input: IssueInput, now = Date.now()): IssuedAccessToken {
    const iat = Math.floor(now / 1000)
    const expiresIn = Math.floor((input.ttlMs ?? this.options.accessTtlMs) / 1000)
    const jti = randomUUID()
    const payload: Record<string, unknown> = {
      iss: this.options.issuer,
      aud: this.options.audience,
      sub: input.sub,
      sid: input.sid,
      jti,
      iat,
      exp: iat + expiresIn,
      scope: input.scopes.join(' '),
      roles: [...input.roles],
      username: input.username
    }
    if (input.email !== undefined) payload.email = input.email
    if (input.name !== undefined) payload.name = input.name
    if (input.clientId !== undefined) payload.client_id = input.clientId
    return { token: this.sign_(payload), jti, exp: iat + expiresIn, expiresIn }
  }

  verify (token: string, now = Date.now()): AccessClaims {
    const cached = this.verified.get(token)
    if (cached !== undefined) {
      if (now <= cached.exp * 1000 + this.options.clockSkewMs) return cached
      this.verified.delete(token)
      throw new TokenRejected('expired', 'jwt expired')
    }
    const claims = this.verifyUncached(token)
    if (this.verified.size >= VERIFIED_CACHE_SIZE) this.verified.delete(this.verified.keys().next().value as string)
    this.verified.set(token, claims)
    return claims
  }

  private verifyUncached (token: string): AccessClaims {
    if (token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) throw new TokenRejected('malformed', 'not a compact JWS')
    const dot = token.indexOf('.')
    const header = parseSegment(token.slice(0, dot))
    if (header === null) throw new TokenRejected('malformed', 'header is not a JSON object')
    if (this.external !== null) {
      // The unverified iss only picks whose keys to try; that issuer's
      // verifier then pins iss exactly, so a token signed by one IdP but
      // claiming another issuer (or ours) fails its signature check.
      const payload = parseSegment(token.slice(dot + 1, token.indexOf('.', dot + 1)))
      const issuer = typeof payload?.iss === 'string' && payload.iss !== this.options.issuer ? this.external.byIssuer.get(payload.iss) : undefined
      if (issuer !== undefined) {
        if (!token.split('.').every(isCanonicalBase64url)) throw new TokenRejected('malformed', 'non-canonical base64url')
        return issuer.verify(token, header)
      }
    }
    if (header.alg !== this.algorithm) throw new TokenRejected('invalid', `alg ${String(header.alg)} is not ${this.algorithm}`)
    if (header.kid !== undefined && typeof header.kid !== 'string') throw new TokenRejected('invalid', 'kid is not a string')
    const verify = header.kid === undefined && this.verifiers.size === 1
      ? this.verifiers.values().next().value
      : this.verifiers.get(header.kid as string | undefined)
    if (verify === undefined) throw new TokenRejected('invalid', 'unknown kid')
    if (!token.split('.').every(isCanonicalBase64url)) throw new TokenRejected('malformed', 'non-canonical base64url')

    let payload: unknown
    try {
      payload = verify(token)
    } catch (err) {
      if (err instanceof TokenError && err.code === TokenError.codes.expired) throw new TokenRejected('expired', err.message)
      throw new TokenRejected('invalid', err instanceof Error ? `${(err as TokenError).code ?? ''} ${err.message}` : 'verification failed')
    }
    return checkClaims(payload)
  }
}

function parseSegment (segment: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
    return value !== null && typeof value === 'object' && !Array.isArray(value) ? value as Record<string, unknown> : null
  } catch {
    return null
  }
}

/**
 * base64url has several spellings of the same bytes when the last character
 * carries unused bits. Only the canonical one is accepted, so a token has a
 * single spelling; revocation never depends on it (it is keyed on claims).
 */
export function isCanonicalBase64url (segment: string): boolean {
  const rem = segment.length % 4
  if (rem === 1) return false
  if (rem === 0) return true
  const last = B64URL.indexOf(segment[segment.length - 1])
  return rem === 2 ? (last & 0x0f) === 0 : (last & 0x03) === 0
}

function isSafeString (value: unknown, max = 1024): value is string {
  // Claims become upstream header values: no control characters (CR/LF would
  // split headers) and no lone surrogates (they cannot be encoded).
  return typeof value === 'string' && value.length <= max && !CONTROL_CHAR.test(value) && !LONE_SURROGATE.test(value)
}

function checkClaims (payload: unknown): AccessClaims {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) throw new TokenRejected('invalid', 'payload is not an object')
  const c = payload as Record<string, unknown>
  const problems: string[] = []
  for (const name of ['iss', 'sub', 'sid', 'jti', 'username'] as const) if (!isSafeString(c[name], 256) || c[name] === '') problems.push(name)
  if (!isSafeString(c.scope ?? '')) problems.push('scope')
  if (!Array.isArray(c.roles) || !c.roles.every((r) => isSafeString(r, 128) && !r.includes(','))) problems.push('roles')
  for (const name of ['email', 'name'] as const) if (c[name] !== undefined && !isSafeString(c[name], 256)) problems.push(name)
  for (const name of ['iat', 'exp'] as const) if (typeof c[name] !== 'number' || !Number.isFinite(c[name])) problems.push(name)
  if (problems.length > 0) throw new TokenRejected('invalid', `bad claims: ${problems.join(', ')}`)
  if (c.scope === undefined) c.scope = ''
  // Shared by every request that presents the same token (see `verified`).
  Object.freeze(c.roles)
  return Object.freeze(c) as unknown as AccessClaims
}
