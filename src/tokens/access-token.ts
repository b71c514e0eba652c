import { randomUUID } from 'node:crypto'
import { createDecoder, createSigner, createVerifier, TokenError, type Algorithm as JwtAlgorithm } from 'fast-jwt'
import type { TokenKeys } from './token-keys.js'
import type { TrustedIssuer, TrustedIssuers } from './trusted-issuers.js'

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

/**
 * The signature layer under AccessTokens. In the gateway it is @fastify/jwt
 * (plugins/tokens.ts): one registration signs our tokens and assertions, and
 * its request verifier checks signatures with the key `keyFor` picks. Alone
 * (unit tests, the bench's token minting) there is no Fastify instance to
 * register it on, so `fastJwtLayer` calls fast-jwt, the library under
 * @fastify/jwt, with the same options.
 */
export interface JwtLayer {
  /** Signs with the current key, `typ` in the header (at+jwt unless told). */
  sign (payload: Record<string, unknown>, typ?: string): string
  /**
   * Checks the signature (with the key `keyFor` picks from the decoded
   * header and payload), exp and nbf; returns the payload. `context` is the
   * request being served, when there is one.
   */
  verify (token: string, context: unknown): unknown
}

/** What fast-jwt checks, the same under @fastify/jwt and alone; issuer, audience, typ and claims are ours (after the signature). */
export function verifierOptions (algorithms: readonly string[], clockSkewMs: number): { algorithms: JwtAlgorithm[], clockTolerance: number, requiredClaims: string[], cache: false } {
  // Our own cache sits in front (see `AccessTokens.verified`).
  return { algorithms: [...new Set(algorithms)] as JwtAlgorithm[], clockTolerance: clockSkewMs, requiredClaims: ['iss', 'aud', 'sub', 'exp'], cache: false }
}

/** The layer without a Fastify instance: fast-jwt directly, one verifier per key. */
export function fastJwtLayer (keys: TokenKeys, options: { clockSkewMs: number, algorithms: readonly string[], keyFor: KeyFor }): JwtLayer {
  const signers = new Map<string, (payload: Record<string, unknown>) => string>()
  const verifiers = new Map<string, (token: string) => unknown>()
  const decode = createDecoder({ complete: true })
  const common = verifierOptions(options.algorithms, options.clockSkewMs)
  return {
    sign (payload, typ = ACCESS_TOKEN_TYP) {
      let sign = signers.get(typ)
      if (sign === undefined) {
        sign = createSigner({ key: keys.signing.key, algorithm: keys.algorithm, header: { alg: keys.algorithm, typ }, ...(keys.signing.kid === undefined ? {} : { kid: keys.signing.kid }) })
        signers.set(typ, sign)
      }
      return sign(payload)
    },
    verify (token) {
      const decoded = decode(token) as { header: Record<string, unknown>, payload: Record<string, unknown> }
      const key = options.keyFor(decoded.header, decoded.payload)
      let verify = verifiers.get(key)
      if (verify === undefined) {
        verify = createVerifier({ ...common, key })
        verifiers.set(key, verify)
      }
      return verify(token)
    }
  }
}

export type KeyFor = (header: Record<string, unknown>, payload: Record<string, unknown>) => string

export class AccessTokens {
  private readonly keys: ReadonlyMap<string | undefined, string>
  private readonly options: AccessTokenOptions
  readonly algorithm: TokenKeys['algorithm']
  /** Outside issuers; null when none is configured, so our own tokens take the same path as before. */
  private readonly external: TrustedIssuers | null
  private layer: JwtLayer

  constructor (keys: TokenKeys, options: AccessTokenOptions, external: TrustedIssuers | null = null) {
    this.options = options
    this.external = external !== null && external.size > 0 ? external : null
    this.algorithm = keys.algorithm
    this.keys = new Map(keys.verifying.map((k) => [k.kid, k.key]))
    this.layer = fastJwtLayer(keys, { clockSkewMs: options.clockSkewMs, algorithms: this.algorithms, keyFor: this.keyFor })
  }

  /** Every algorithm a token may be signed with: ours and each trusted issuer's. */
  get algorithms (): string[] {
    return [this.algorithm, ...(this.external === null ? [] : [...this.external.byIssuer.values()].flatMap((i) => i.algorithms))]
  }

  /** The layer in use (plugins/tokens.ts keeps the fast-jwt one for verifying outside a request). */
  get currentLayer (): JwtLayer {
    return this.layer
  }

  /** Puts @fastify/jwt under these tokens (plugins/tokens.ts). */
  useLayer (layer: JwtLayer): void {
    this.layer = layer
  }

  /** Signs a payload with the current key (the identity assertion's `typ` differs from ours). */
  sign (payload: Record<string, unknown>, typ: string): string {
    return this.layer.sign(payload, typ)
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

  get issuer (): string {
    return this.options.issuer
  }

  /** How many verified tokens are cached now (for tests and metrics). */
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
    return { token: this.layer.sign(payload, ACCESS_TOKEN_TYP), jti, exp: iat + expiresIn, expiresIn }
  }

  /** `context`: the request being served, so the check runs through @fastify/jwt's request verifier. */
  verify (token: string, now = Date.now(), context?: unknown): AccessClaims {
    const cached = this.verified.get(token)
    if (cached !== undefined) {
      if (now <= cached.exp * 1000 + this.options.clockSkewMs) return cached
      this.verified.delete(token)
      throw new TokenRejected('expired', 'jwt expired')
    }
    const claims = this.verifyUncached(token, context)
    if (this.verified.size >= VERIFIED_CACHE_SIZE) this.verified.delete(this.verified.keys().next().value as string)
    this.verified.set(token, claims)
    return claims
  }

  /**
   * One of the gateway's own tokens, or TokenRejected: what the session
   * endpoints (logout, introspection, revocation) act on. An outside
   * issuer's token names no session of ours (its sid is '', its jti may be
   * ''), and ending "its session" would deny what every such token shares.
   */
  verifyOwn (token: string, now = Date.now(), context?: unknown): AccessClaims {
    const claims = this.verify(token, now, context)
    if (claims.iss !== this.options.issuer) throw new TokenRejected('invalid', `a token of ${claims.iss} names no session of this gateway`)
    return claims
  }

  /**
   * The key a token is checked with, from its unverified header and
   * payload: the unverified iss only picks whose keys to try; after the
   * signature, iss is checked exactly (`verifyUncached`), so a token signed
   * by one IdP but claiming another issuer (or ours) fails. The kid only
   * selects among that issuer's configured keys. @fastify/jwt's secret
   * callback (plugins/tokens.ts). Throws TokenRejected.
   */
  readonly keyFor: KeyFor = (header, payload) => {
    const issuer = this.externalIssuer(payload)
    if (issuer !== undefined) return issuer.keyFor(header)
    if (header.alg !== this.algorithm) throw new TokenRejected('invalid', `alg ${String(header.alg)} is not ${this.algorithm}`)
    if (header.kid !== undefined && typeof header.kid !== 'string') throw new TokenRejected('invalid', 'kid is not a string')
    const key = header.kid === undefined && this.keys.size === 1
      ? this.keys.values().next().value
      : this.keys.get(header.kid as string | undefined)
    if (key === undefined) throw new TokenRejected('invalid', 'unknown kid')
    return key
  }

  private externalIssuer (payload: Record<string, unknown>): TrustedIssuer | undefined {
    if (this.external === null) return undefined
    return typeof payload.iss === 'string' && payload.iss !== this.options.issuer ? this.external.byIssuer.get(payload.iss) : undefined
  }

  private verifyUncached (token: string, context: unknown): AccessClaims {
    if (token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) throw new TokenRejected('malformed', 'not a compact JWS')
    const dot = token.indexOf('.')
    const header = parseSegment(token.slice(0, dot))
    if (header === null) throw new TokenRejected('malformed', 'header is not a JSON object')
    if (!token.split('.').every(isCanonicalBase64url)) throw new TokenRejected('malformed', 'non-canonical base64url')
    const unverified = parseSegment(token.slice(dot + 1, token.indexOf('.', dot + 1)))
    if (unverified === null) throw new TokenRejected('malformed', 'payload is not a JSON object')
    const issuer = this.externalIssuer(unverified)
    if (issuer !== undefined) return issuer.verify(() => this.checkSignature(token, context), header)
    // Fail fast, before any key is used (keyFor checks it again).
    this.keyFor(header, unverified)
    const payload = this.checkSignature(token, context)
    if (header.typ !== ACCESS_TOKEN_TYP) throw new TokenRejected('invalid', `typ ${String(header.typ)} is not ${ACCESS_TOKEN_TYP}`)
    if (payload.iss !== this.options.issuer) throw new TokenRejected('invalid', 'iss is not ours')
    if (!audienceIncludes(payload.aud, this.options.audience)) throw new TokenRejected('invalid', 'aud is not ours')
    return checkClaims(payload)
  }

  private checkSignature (token: string, context: unknown): Record<string, unknown> {
    let payload: unknown
    try {
      payload = this.layer.verify(token, context)
    } catch (err) {
      throw toRejection(err)
    }
    if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) throw new TokenRejected('invalid', 'payload is not an object')
    return payload as Record<string, unknown>
  }
}

/** fast-jwt's and @fastify/jwt's errors as ours; ours (from keyFor) pass through. */
export function toRejection (err: unknown): TokenRejected {
  if (err instanceof TokenRejected) return err
  const code = (err as { code?: unknown }).code
  if (code === TokenError.codes.expired || code === 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED') return new TokenRejected('expired', 'jwt expired')
  return new TokenRejected('invalid', err instanceof Error ? `${String(code ?? '')} ${err.message}` : 'verification failed')
}

export function audienceIncludes (aud: unknown, expected: string): boolean {
  return aud === expected || (Array.isArray(aud) && aud.includes(expected))
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
