import type { IncomingHttpHeaders } from 'node:http'
import type { GatewayConfig } from '../config/schema.js'
import { ERR_CSRF } from '../errors.js'

// A cookie rides along with any request the browser makes, including one a
// foreign page triggers: only our own origins may use the refresh cookie.
// The trusted origins are computed once from config, here, so that every
// endpoint that looks at a browser's Origin (the cookie endpoints, CORS)
// trusts the same ones.

/** What the check needs of a request (Fastify's request has all of it). */
export interface BrowserRequest {
  headers: IncomingHttpHeaders
  protocol: string
  host: string
}

/** An origin in its serialised form (lower-case, default port dropped); null when it is none. */
export function originOf (text: string): string | null {
  try {
    const origin = new URL(text).origin
    return origin === 'null' ? null : origin
  } catch {
    return null
  }
}

/** `auth.allowedOrigins` plus the origin of `server.publicUrl`, in serialised form. */
export function trustedBrowserOrigins (config: Pick<GatewayConfig, 'auth' | 'server'>): ReadonlySet<string> {
  const origins = new Set<string>()
  for (const entry of config.auth.allowedOrigins) {
    origins.add(entry)
    // browsers send Origin serialised (lower-case, no default port)
    const serialised = originOf(entry)
    if (serialised !== null) origins.add(serialised)
  }
  if (config.server.publicUrl !== undefined) origins.add(new URL(config.server.publicUrl).origin)
  return origins
}

/**
 * Throws TG_CSRF unless the request comes from a trusted origin or the
 * gateway's own (the origin it was addressed to): a browser that says
 * `Sec-Fetch-Site: cross-site`, or sends no Origin at all, is refused.
 */
export function checkBrowserOrigin (request: BrowserRequest, trusted: ReadonlySet<string>): void {
  if (request.headers['sec-fetch-site'] === 'cross-site') throw new ERR_CSRF()
  const origin = request.headers.origin
  if (origin === undefined) throw new ERR_CSRF()
  if (trusted.has(origin)) return
  const own = originOf(`${request.protocol}://${request.host}`)
  if (own !== null && originOf(origin) === own) return
  throw new ERR_CSRF()
}
