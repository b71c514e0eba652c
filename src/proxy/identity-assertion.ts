import { randomUUID } from 'node:crypto'
import type { AccessClaims } from '../tokens/access-token.js'
import type { GatewayConfig, RouteConfig } from '../config/schema.js'
import { parseDuration } from '../config/duration.js'

// A signed statement of who the caller is, for upstreams that should not
// trust the network: identity headers can be sent by anyone who reaches the
// upstream another way, this cannot be forged without the gateway's key.
// It is a short JWT signed with the gateway's current key (asymmetric only),
// verified by upstreams with /.well-known/jwks.json. Made once per token and
// route and cached, so a request pays a Map look-up, not a signature.

/** Explicit typing (RFC 8725 §3.11): an assertion can never pass as one of our access tokens (at+jwt), even with aud = tokens.audience. */
export const ASSERTION_TYP = 'tokengate-assertion+jwt'
export const DEFAULT_ASSERTION_HEADER = 'X-Tokengate-Assertion'
export const DEFAULT_ASSERTION_TTL = '60s'
/** Assertions kept per route: one per live token, as many as the verified-token cache holds. */
export const ASSERTION_CACHE_SIZE = 10_000

export interface AssertionPlan {
  /** lower-case header name */
  header: string
  ttlMs: number
  audience: string
  /** the gateway's tokens.issuer: the assertion's iss, since the gateway signs it */
  issuer: string
}

/** The route's assertion settings (identity.assertion with the route's overrides), or null when it has none. */
export function routeAssertionPlan (config: GatewayConfig, route: RouteConfig): AssertionPlan | null {
  const global = config.identity.assertion
  const own = route.assertion
  if (route.auth === 'none' || own === false || (own === undefined && global === undefined)) return null
  const overrides = typeof own === 'object' ? own : {}
  const first = Array.isArray(route.upstream) ? route.upstream[0] : route.upstream
  return {
    header: (global?.header ?? DEFAULT_ASSERTION_HEADER).toLowerCase(),
    ttlMs: parseDuration(overrides.ttl ?? global?.ttl ?? DEFAULT_ASSERTION_TTL),
    audience: overrides.audience ?? global?.audience ?? new URL(first).origin,
    issuer: config.tokens.issuer
  }
}

/** Header names a client may never send, whether the assertion is on or not. */
export function assertionHeaderNames (config: GatewayConfig): string[] {
  return [...new Set([DEFAULT_ASSERTION_HEADER, config.identity.assertion?.header ?? DEFAULT_ASSERTION_HEADER].map((h) => h.toLowerCase()))]
}

export type SignAssertion = (payload: Record<string, unknown>) => string

interface Made {
  token: string
  /** ms since the epoch; at or after it the next request gets a fresh one */
  renewAt: number
}

/** One route's assertions, cached per verified token (claims are cached and frozen per token). */
export class IdentityAssertions {
  readonly header: string
  private readonly plan: AssertionPlan
  private readonly sign: SignAssertion
  private readonly maxEntries: number
  private readonly onSigned: () => void
  private readonly made = new Map<AccessClaims, Made>()
  /** signatures made (for tests and metrics: a cache hit makes none) */
  signed = 0

  constructor (plan: AssertionPlan, sign: SignAssertion, onSigned: () => void = () => {}, maxEntries = ASSERTION_CACHE_SIZE) {
    this.plan = plan
    this.onSigned = onSigned
    this.header = plan.header
    this.sign = sign
    this.maxEntries = maxEntries
  }

  get size (): number {
    return this.made.size
  }

  for (claims: AccessClaims, now = Date.now()): string {
    const hit = this.made.get(claims)
    if (hit !== undefined && now < hit.renewAt) return hit.token
    const made = this.make(claims, now)
    if (hit !== undefined) this.made.delete(claims)
    else if (this.made.size >= this.maxEntries) this.made.delete(this.made.keys().next().value as AccessClaims)
    this.made.set(claims, made)
    return made.token
  }

  private make (claims: AccessClaims, now: number): Made {
    const iat = Math.floor(now / 1000)
    const ttl = Math.max(1, Math.floor(this.plan.ttlMs / 1000))
    // Never outlives the token it speaks for.
    const capped = claims.exp < iat + ttl
    const exp = capped ? claims.exp : iat + ttl
    const payload: Record<string, unknown> = {
      iss: this.plan.issuer,
      aud: this.plan.audience,
      sub: claims.sub,
      // Its own id, so an upstream can refuse a replayed assertion; the
      // original token's id and issuer ride along for revocation and audit.
      jti: randomUUID(),
      token_jti: claims.jti,
      token_iss: claims.iss,
      scope: claims.scope,
      roles: claims.roles,
      iat,
      exp
    }
    // Tokens of trusted issuers carry no gateway session.
    if (claims.sid !== '') payload.sid = claims.sid
    this.signed++
    this.onSigned()
    // Re-made when half its life is gone, so an upstream always gets at
    // least ttl/2; one capped at the token's exp cannot be extended.
    return { token: this.sign(payload), renewAt: capped ? Infinity : (iat + ttl / 2) * 1000 }
  }
}
