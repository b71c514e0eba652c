import type { IncomingHttpHeaders } from 'node:http'
import type { AccessClaims } from '../tokens/access-token.js'
import type { IdentityClaim } from '../config/schema.js'
import { connectionTokens, HOP_BY_HOP_HEADERS } from './hop-by-hop.js'

// What reaches an upstream about the caller is decided here and only here.
// Upstreams trust these headers, so a client must never be able to send one:
// every client header whose name could be read as one of ours (any case, `_`
// for `-`) is dropped, on every route, before ours are set.

/** Headers a client may never set: upstream frameworks read them as routing or identity facts. */
const ALWAYS_STRIPPED = [
  'forwarded', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port',
  'x-forwarded-prefix', 'x-forwarded-server', 'x-real-ip', 'x-client-ip', 'true-client-ip',
  'x-original-url', 'x-rewrite-url', 'x-original-uri', 'x-original-method',
  'x-http-method-override', 'x-http-method', 'x-method-override',
  'x-request-id',
  // hop-by-hop headers; undici refuses some of them and the rest mean nothing upstream
  ...HOP_BY_HOP_HEADERS, 'proxy-authorization', 'http2-settings',
  // Node's server has already answered 100 Continue to the client; undici refuses the header
  'expect'
]

export function normaliseHeaderName (name: string): string {
  const lower = name.toLowerCase()
  return lower.includes('_') ? lower.replace(/_/g, '-') : lower
}

export interface ForwardFacts {
  requestId: string
  forwardedFor: string
  forwardedProto: string
  forwardedHost: string
}

export interface IdentityHeaderWriter {
  /** Request headers for the upstream: client headers cleaned, then ours set. */
  upstreamHeaders (incoming: IncomingHttpHeaders, identity: AccessClaims | null, facts: ForwardFacts): Record<string, string | string[]>
  /** The configured identity header names, lower-case (for tests and the security suite). */
  readonly identityHeaderNames: readonly string[]
}

/**
 * Compiles the header plan once per config: which names are stripped, which
 * identity headers are set from which claim, and which cookies are the
 * gateway's own (never forwarded).
 */
export function compileIdentityHeaders (headers: Record<string, IdentityClaim>, gatewayCookieNames: readonly string[], alsoStripped: readonly string[] = []): IdentityHeaderWriter {
  const identity = Object.entries(headers).map(([name, claim]) => [name.toLowerCase(), claim] as const)
  // alsoStripped: the signed assertion's header names, dropped even where the assertion is off.
  const stripped = new Set([...ALWAYS_STRIPPED, ...identity.map(([name]) => name), ...alsoStripped.map(normaliseHeaderName)])
  const ownCookies = new Set(gatewayCookieNames)
  // Claims are cached and frozen per token (src/tokens/access-token.ts), so the
  // identity headers of a token are computed on its first request only.
  const identityOf = new WeakMap<AccessClaims, ReadonlyArray<readonly [string, string]>>()
  const identityHeaders = (claims: AccessClaims): ReadonlyArray<readonly [string, string]> => {
    let pairs = identityOf.get(claims)
    if (pairs === undefined) {
      pairs = identity.flatMap(([name, claim]) => {
        const value = claimValue(claims, claim)
        return value === undefined ? [] : [[name, value] as const]
      })
      identityOf.set(claims, pairs)
    }
    return pairs
  }

  return {
    identityHeaderNames: identity.map(([name]) => name),
    upstreamHeaders (incoming, claims, facts) {
      const connectionNamed = new Set(connectionTokens(incoming.connection).map(normaliseHeaderName))
      const out: Record<string, string | string[]> = {}
      for (const name in incoming) {
        const value = incoming[name]
        if (value === undefined) continue
        const normal = normaliseHeaderName(name)
        if (stripped.has(normal) || connectionNamed.has(normal)) continue
        if (normal === 'cookie') {
          const kept = withoutCookies(Array.isArray(value) ? value.join('; ') : value, ownCookies)
          if (kept !== '') out.cookie = kept
          continue
        }
        out[name] = value
      }
      if (claims !== null) {
        for (const [name, value] of identityHeaders(claims)) out[name] = value
      }
      out['x-request-id'] = facts.requestId
      out['x-forwarded-for'] = facts.forwardedFor
      out['x-forwarded-proto'] = facts.forwardedProto
      out['x-forwarded-host'] = facts.forwardedHost
      return out
    }
  }
}

function claimValue (claims: AccessClaims, claim: IdentityClaim): string | undefined {
  switch (claim) {
    case 'roles': return claims.roles.join(',')
    case 'scope': return claims.scope
    default: {
      const value = claims[claim]
      return typeof value === 'string' ? headerSafe(value) : undefined
    }
  }
}

/**
 * Header values must be visible ASCII. Claims are already free of control
 * characters (checked at verification); anything outside ASCII, and `%`
 * itself, is percent-encoded as UTF-8 so the value arrives unambiguous.
 */
export function headerSafe (value: string): string {
  return /^[\x20-\x24\x26-\x7e]*$/.test(value) ? value : value.replace(/[^\x20-\x24\x26-\x7e]/gu, (ch) => encodeURIComponent(ch))
}

function withoutCookies (header: string, names: ReadonlySet<string>): string {
  if (names.size === 0) return header
  return header.split(';').filter((pair) => {
    const eq = pair.indexOf('=')
    const name = (eq === -1 ? pair : pair.slice(0, eq)).trim()
    return !names.has(name)
  }).map((p) => p.trim()).join('; ')
}
