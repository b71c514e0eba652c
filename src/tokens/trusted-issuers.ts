import { createPublicKey, type JsonWebKey } from 'node:crypto'
import { createRemoteJWKSet, customFetch, type RemoteJWKSet } from 'jose'
import type { IssuerRefusalReason, IssuerSeries } from '../ops/gateway-metrics.js'
import { audienceIncludes, TokenRejected, type AccessClaims, type RejectReason } from './access-token.js'
import type { TrustedIssuerConfig } from '../config/schema.js'

// Tokens from an outside identity provider. Keys come only from the issuer's
// configured JWKS (or the one its discovery document names), never from a
// token's header (jku, x5u, jwk, x5c are not read). Keys are fetched in the
// background so verification stays synchronous, like our own: a token with a
// kid we have not seen is refused at once and asks for a re-fetch, which runs
// at most once per `jwksMinRefetch`, so a flood of random kids cannot make us
// hammer the IdP.
//
// jose's remote JWK set does the fetching (timeout, no redirects, 200 only,
// a well-formed key set, concurrent reloads shared); we only call its
// reload() and read its keys. What it cannot give is kept here:
// - when to fetch: its cooldown counts from the last *successful* fetch, so
//   while the IdP fails every unknown kid would try again; our interval
//   counts attempts. And its getKey fetches on a token's path when its cache
//   is stale, where ours stays synchronous with keys fetched in the background.
// - refreshing on the JWKS's Cache-Control (read through its fetch hook).
// - discovery with the issuer check of OpenID Connect Discovery §4.3.
// get-jwks was the other candidate: it fetches per unknown kid with no
// interval at all and forgets keys an outage outlasts (2 × ttl), so it could
// give neither property.

/** How long an outside token may live (exp - iat) unless its issuer's config says: Entra ID issues 60-90 min, Auth0 24 h by default. */
export const DEFAULT_MAX_TOKEN_LIFETIME = '24h'

/** An issuer's maxTokenLifetime in milliseconds. */
export function maxTokenLifetimeMs (config: TrustedIssuerConfig, parse: (d: string) => number): number {
  return parse(config.maxTokenLifetime ?? DEFAULT_MAX_TOKEN_LIFETIME)
}

export interface IssuerOptions {
  clockSkewMs: number
  maxLifetimeMs: number
  refreshMs: number
  minRefetchMs: number
  fetchTimeoutMs?: number
}

/** Why an issuer's token was refused, as /metrics counts it (a fixed set: no label comes from a token). */
export type IssuerRefusal = IssuerRefusalReason

export interface IssuerStats {
  fetches: number
  fetchFailures: number
  verified: number
  rejected: number
  refused: Map<IssuerRefusal, number>
}

/** A refusal that remembers its metrics reason. */
class IssuerRejected extends TokenRejected {
  readonly refusal: IssuerRefusal
  constructor (reason: RejectReason, refusal: IssuerRefusal, detail: string) {
    super(reason, detail)
    this.refusal = refusal
  }
}

const SAFE = /^[^\x00-\x1f\x7f]*$/ // eslint-disable-line no-control-regex
const LONE_SURROGATE = /\p{Cs}/u

function safe (value: unknown, max = 256): value is string {
  return typeof value === 'string' && value.length <= max && SAFE.test(value) && !LONE_SURROGATE.test(value)
}

export class TrustedIssuer {
  readonly issuer: string
  readonly stats: IssuerStats = { fetches: 0, fetchFailures: 0, verified: 0, rejected: 0, refused: new Map() }
  /** /metrics, when the gateway has them (plugins/tokens.ts). */
  observer: IssuerSeries | null = null
  private readonly config: TrustedIssuerConfig
  private readonly options: IssuerOptions
  /** kid → public key (PEM, as @fastify/jwt caches one verifier per key string). */
  private keys = new Map<string, string>()
  private lastFetch = 0
  private inFlight: Promise<void> | null = null
  private timer: NodeJS.Timeout | null = null
  private closed = false
  /** The key set's fetcher, once the JWKS location is known (from config or the discovery document). */
  private remote: RemoteJWKSet | undefined
  /** max-age of the last JWKS answer, seconds; null when it sent none */
  private maxAge: number | null = null

  constructor (config: TrustedIssuerConfig, options: IssuerOptions) {
    this.issuer = config.issuer
    this.config = config
    this.options = options
  }

  /** True once keys were fetched at least once: cached keys keep serving while the IdP is down. */
  get ready (): boolean {
    return this.keys.size > 0
  }

  /** How many keys are loaded now (for /metrics). */
  get keyCount (): number {
    return this.keys.size
  }

  get algorithms (): readonly string[] {
    return this.config.algorithms
  }

  async start (): Promise<void> {
    await this.refresh()
  }

  close (): void {
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
  }

  /** Fetches the key set once (concurrent callers share one request). */
  refresh (): Promise<void> {
    this.inFlight ??= this.fetchKeys().finally(() => { this.inFlight = null })
    return this.inFlight
  }

  private schedule (ms: number): void {
    if (this.closed) return
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = setTimeout(() => { void this.refresh() }, ms)
    this.timer.unref()
  }

  private async jwksUri (signal: AbortSignal): Promise<string> {
    if (this.config.jwksUri !== undefined) return this.config.jwksUri
    const res = await fetch(`${this.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`, { signal })
    if (!res.ok) throw new Error(`discovery answered ${res.status}`)
    const doc = await res.json() as { issuer?: unknown, jwks_uri?: unknown }
    // OpenID Connect Discovery §4.3: the document must name the same issuer.
    if (doc.issuer !== this.issuer || typeof doc.jwks_uri !== 'string') throw new Error('discovery document names another issuer or no jwks_uri')
    return doc.jwks_uri
  }

  private async fetchKeys (): Promise<void> {
    this.lastFetch = Date.now()
    this.stats.fetches++
    let next = this.options.refreshMs
    try {
      const timeout = this.options.fetchTimeoutMs ?? 5000
      this.remote ??= createRemoteJWKSet(new URL(await this.jwksUri(AbortSignal.timeout(timeout))), {
        timeoutDuration: timeout,
        [customFetch]: async (url, init) => {
          // One retry: a pooled keep-alive socket the IdP already closed gives
          // ECONNRESET on first use, which says nothing about the IdP.
          const res = await fetch(url, init).catch(async () => await fetch(url, init))
          const maxAge = /max-age=(\d+)/.exec(res.headers.get('cache-control') ?? '')
          this.maxAge = maxAge === null ? null : Number(maxAge[1])
          return res
        }
      })
      await this.remote.reload()
      if (this.config.jwksRefresh === undefined && this.maxAge !== null) next = Math.max(this.options.minRefetchMs, this.maxAge * 1000)
      const body = this.remote.jwks() ?? { keys: [] }
      const keys = new Map<string, string>()
      for (const jwk of body.keys as Array<JsonWebKey & { kid?: unknown, use?: unknown }>) {
        if (typeof jwk.kid !== 'string' || (jwk.use !== undefined && jwk.use !== 'sig') || jwk.kty === 'oct') continue
        try {
          keys.set(jwk.kid, createPublicKey({ key: jwk, format: 'jwk' }).export({ format: 'pem', type: 'spki' }).toString())
        } catch {
          continue
        }
      }
      // An empty answer never wipes keys we have: the IdP may be half down.
      if (keys.size > 0) this.keys = keys
      this.observer?.fetched()
    } catch {
      this.stats.fetchFailures++
      this.observer?.fetchFailed()
      next = Math.min(next, Math.max(this.options.minRefetchMs, 1000))
    }
    this.schedule(next)
  }

  /**
   * The key for a token that names this issuer: its alg must be in the
   * issuer's list and its kid one of the issuer's JWKS keys. Nothing else in
   * the header is read (no jku, x5u, jwk, x5c).
   */
  keyFor (header: Record<string, unknown>): string {
    if (typeof header.alg !== 'string' || !(this.config.algorithms as string[]).includes(header.alg)) {
      throw new IssuerRejected('invalid', 'alg', `alg ${String(header.alg)} is not allowed for ${this.issuer}`)
    }
    if (typeof header.kid !== 'string') throw new IssuerRejected('invalid', 'no_kid', 'external token has no kid')
    const key = this.keys.get(header.kid)
    if (key === undefined) {
      // Maybe the IdP rotated: ask again, but not more than once per interval.
      if (Date.now() - this.lastFetch >= this.options.minRefetchMs) void this.refresh()
      throw this.ready
        ? new IssuerRejected('invalid', 'unknown_kid', 'unknown kid')
        : new IssuerRejected('invalid', 'not_ready', `no keys yet for ${this.issuer}`)
    }
    return key
  }

  /** `checkSignature` verifies with `keyFor`'s key (through @fastify/jwt); the rest of this issuer's checks follow. */
  verify (checkSignature: () => Record<string, unknown>, header: Record<string, unknown>): AccessClaims {
    try {
      this.keyFor(header)
      let payload: Record<string, unknown>
      try {
        payload = checkSignature()
      } catch (err) {
        if (err instanceof IssuerRejected) throw err
        const rejected = err as TokenRejected
        throw new IssuerRejected(rejected.reason, rejected.reason === 'expired' ? 'expired' : 'signature', rejected.message)
      }
      if (this.config.typ !== undefined && header.typ !== this.config.typ) throw new IssuerRejected('invalid', 'typ', `typ ${String(header.typ)} is not ${this.config.typ}`)
      if (payload.iss !== this.issuer) throw new IssuerRejected('invalid', 'claims', 'iss differs')
      if (!audienceIncludes(payload.aud, this.config.audience)) throw new IssuerRejected('invalid', 'audience', 'aud is not ours')
      const claims = this.mapClaims(payload)
      this.checkLifetime(payload.iat, claims.exp, Date.now())
      this.stats.verified++
      this.observer?.accepted()
      return claims
    } catch (err) {
      this.stats.rejected++
      const refusal = err instanceof IssuerRejected ? err.refusal : 'claims'
      this.stats.refused.set(refusal, (this.stats.refused.get(refusal) ?? 0) + 1)
      this.observer?.refused(refusal)
      throw err
    }
  }

  /**
   * A revocation by sub or jti is kept maxTokenLifetime (+ skew, see
   * Revoker), so a token that could live longer would work again once its
   * entry expires. The bound is on exp - iat, and iat is required: a sub
   * entry refuses tokens issued before the revocation, and exp - iat <= max
   * makes each of them expire by revocation + max, whenever it is presented.
   * exp - now alone would not do: a token minted for 30 days and kept unused
   * passes it on day 29, long after any entry is gone. Where iat is ahead of
   * now (an IdP clock ahead, within the skew) exp - now is the stricter, so
   * the lifetime counts from the earlier of the two; beyond the skew such a
   * token is refused, as it would slip past a sub entry (its iat looks newer
   * than the revocation).
   */
  private checkLifetime (iat: unknown, exp: number, nowMs: number): void {
    // mapClaims has checked that an iat present is a finite number.
    if (typeof iat !== 'number') throw new IssuerRejected('invalid', 'lifetime', 'no iat: its lifetime cannot be bounded')
    if (iat * 1000 > nowMs + this.options.clockSkewMs) throw new IssuerRejected('invalid', 'lifetime', 'iat is in the future')
    const lifetimeMs = exp * 1000 - Math.min(iat * 1000, nowMs)
    if (lifetimeMs > this.options.maxLifetimeMs) throw new IssuerRejected('invalid', 'lifetime', `lives ${Math.round(lifetimeMs / 1000)}s, more than maxTokenLifetime`)
  }

  /** The IdP's claims under our names, with the same type and header-safety checks ours get. */
  private mapClaims (c: Record<string, unknown>): AccessClaims {
    const names = this.config.claims ?? {}
    const pick = (ours: keyof NonNullable<TrustedIssuerConfig['claims']>, fallback: string): unknown => c[names[ours] ?? fallback]
    const problems: string[] = []
    const sub = pick('sub', 'sub')
    if (!safe(sub) || sub === '') problems.push('sub')
    let scope = pick('scope', 'scope') ?? ''
    if (Array.isArray(scope) && scope.every((s) => typeof s === 'string')) scope = scope.join(' ')
    if (!safe(scope, 1024)) problems.push('scope')
    const roles = pick('roles', 'roles') ?? []
    if (!Array.isArray(roles) || !roles.every((r) => safe(r, 128) && !r.includes(','))) problems.push('roles')
    const username = pick('username', 'preferred_username') ?? sub
    if (!safe(username)) problems.push('username')
    const email = pick('email', 'email')
    const name = pick('name', 'name')
    if (email !== undefined && !safe(email)) problems.push('email')
    if (name !== undefined && !safe(name)) problems.push('name')
    const jti = c.jti ?? ''
    if (!safe(jti)) problems.push('jti')
    for (const n of ['exp', 'iat'] as const) if (c[n] !== undefined && (typeof c[n] !== 'number' || !Number.isFinite(c[n]))) problems.push(n)
    if (problems.length > 0) throw new IssuerRejected('invalid', 'claims', `bad claims: ${problems.join(', ')}`)
    const claims: AccessClaims = {
      iss: this.issuer,
      aud: c.aud as string | string[],
      sub: sub as string,
      // IdP tokens carry no gateway session: sid is empty and never matches a revoked sid.
      sid: '',
      jti: jti as string,
      // Required by checkLifetime, which refuses the token when it is absent.
      iat: c.iat as number,
      exp: c.exp as number,
      scope: scope as string,
      roles: Object.freeze([...(roles as string[])]) as string[],
      username: username as string,
      ...(email === undefined ? {} : { email: email as string }),
      ...(name === undefined ? {} : { name: name as string })
    }
    return Object.freeze(claims)
  }
}

/** Every configured outside issuer, looked up by the token's `iss`. */
export class TrustedIssuers {
  readonly byIssuer = new Map<string, TrustedIssuer>()

  constructor (configs: readonly TrustedIssuerConfig[], defaults: { clockSkewMs: number }, parse: (d: string) => number) {
    for (const c of configs) {
      this.byIssuer.set(c.issuer, new TrustedIssuer(c, {
        clockSkewMs: defaults.clockSkewMs,
        maxLifetimeMs: maxTokenLifetimeMs(c, parse),
        refreshMs: parse(c.jwksRefresh ?? '10m'),
        minRefetchMs: parse(c.jwksMinRefetch ?? '30s')
      }))
    }
  }

  get size (): number {
    return this.byIssuer.size
  }

  /** Fetches every issuer's keys once; an IdP that is down does not stop the gateway starting. */
  async start (): Promise<void> {
    await Promise.all([...this.byIssuer.values()].map((i) => i.start()))
  }

  close (): void {
    for (const i of this.byIssuer.values()) i.close()
  }

  notReady (): string[] {
    return [...this.byIssuer.values()].filter((i) => !i.ready).map((i) => i.issuer)
  }
}
