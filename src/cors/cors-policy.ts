import type { FastifyCorsOptions } from '@fastify/cors'
import { parseDuration } from '../config/duration.js'
import { HTTP_METHODS, type CorsConfig, type GatewayConfig, type RouteConfig } from '../config/schema.js'
import { compileOrigins, originEntryProblem, type OriginMatcher } from './cors-origins.js'

// The top-level `cors` block and each route's `cors` override become one
// @fastify/cors option set per route, computed once at start: a request only
// pays for a Set look-up of its Origin.

type Report = (path: Array<string | number>, message: string) => void

const DEFAULT_METHODS = HTTP_METHODS.filter((m) => m !== 'OPTIONS')

/** The gateway's own endpoints that a browser app calls (login, refresh, logout, sessions). */
const GATEWAY_METHODS = ['GET', 'HEAD', 'POST', 'DELETE']

/** Every CORS problem of a config, each at its key: `*` with credentials, unsafe or malformed origins. */
export function checkCors (config: GatewayConfig, report: Report): void {
  const top = config.cors
  if (top !== undefined) checkBlock(top.origins, top.credentials, ['cors'], report)
  config.routes.forEach((route, i) => {
    const own = route.cors
    if (own === undefined || own === false) return
    const origins = own.origins ?? top?.origins
    if (origins === undefined) {
      report(['routes', i, 'cors'], 'needs origins: there is no top-level cors.origins to inherit')
      return
    }
    checkBlock(own.origins ?? [], own.credentials ?? top?.credentials ?? false, ['routes', i, 'cors'], report, origins)
  })
}

function checkBlock (own: readonly string[], credentials: boolean, at: Array<string | number>, report: Report, effective: readonly string[] = own): void {
  own.forEach((entry, j) => {
    const problem = originEntryProblem(entry)
    if (problem !== null) report([...at, 'origins', j], problem)
  })
  if (credentials && effective.includes('*')) {
    const j = own.indexOf('*')
    report(j === -1 ? [...at, 'credentials'] : [...at, 'origins', j], 'may not be "*" with credentials: true: every site on the web could read answers made with the user\'s cookies')
  }
}

/** The resolved policy of one place (the gateway's own endpoints, or one route). */
export interface CorsPolicy {
  allowed: OriginMatcher
  options: FastifyCorsOptions
}

function policyOf (block: CorsConfig, methods: readonly string[]): CorsPolicy {
  const allowed = compileOrigins(block.origins)
  return {
    allowed,
    options: {
      // false for an unlisted origin turns CORS off for that request: no
      // Access-Control-* header at all, and its preflight is not answered.
      origin: (origin, cb) => { cb(null, origin !== undefined && allowed(origin)) },
      credentials: block.credentials,
      maxAge: Math.floor(parseDuration(block.maxAge) / 1000),
      allowedHeaders: block.allowHeaders,
      exposedHeaders: block.exposeHeaders,
      methods: [...methods]
    }
  }
}

/** The top-level policy (for the gateway's own endpoints and unmatched paths); null when cors is unset. */
export function gatewayCorsPolicy (config: GatewayConfig): CorsPolicy | null {
  return config.cors === undefined ? null : policyOf(config.cors, GATEWAY_METHODS)
}

/**
 * One route's policy: null when CORS is off there (top-level unset and no
 * override, or `cors: false`), so the plugin adds no headers on that route.
 */
export function routeCorsPolicy (config: GatewayConfig, route: RouteConfig): CorsPolicy | null {
  if (route.cors === false) return null
  const top = config.cors
  if (route.cors === undefined && top === undefined) return null
  const own = route.cors ?? {}
  const block: CorsConfig = {
    origins: own.origins ?? top?.origins ?? [],
    credentials: own.credentials ?? top?.credentials ?? false,
    maxAge: own.maxAge ?? top?.maxAge ?? '10m',
    allowHeaders: own.allowHeaders ?? top?.allowHeaders ?? ['Authorization', 'Content-Type'],
    exposeHeaders: own.exposeHeaders ?? top?.exposeHeaders ?? ['WWW-Authenticate', 'X-Request-Id', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset', 'Retry-After']
  }
  return policyOf(block, route.methods ?? DEFAULT_METHODS)
}

/** Whether CORS is on anywhere: when it is not, the plugin registers nothing. */
export function corsInUse (config: GatewayConfig): boolean {
  return config.cors !== undefined || config.routes.some((r) => r.cors !== undefined && r.cors !== false)
}
