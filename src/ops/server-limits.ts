import type { ServerOptions } from 'node:http'
import type { GatewayConfig } from '../config/schema.js'
import { parseDuration } from '../config/duration.js'

// The HTTP server's limits, set explicitly rather than left to Node's
// defaults, in one place: buildGateway gives them to Fastify's server, and
// the process's own listening server (src/gateway-host.ts) takes them too.

/** Node checks request and header timeouts on this interval (30 s by default), so a slow client could outlive them by that much. */
export const CONNECTIONS_CHECKING_INTERVAL_MS = 1000
/** Without server.headersTimeout: this, or requestTimeout when that is shorter. */
export const DEFAULT_HEADERS_TIMEOUT_MS = 30_000

export interface ServerLimits {
  requestTimeout: number
  headersTimeout: number
  keepAliveTimeout: number
  maxHeaderSize: number
  connectionsCheckingInterval: number
}

export function serverLimits (server: GatewayConfig['server']): ServerLimits {
  const requestTimeout = parseDuration(server.requestTimeout)
  const headersTimeout = server.headersTimeout === undefined
    ? (requestTimeout > 0 ? Math.min(DEFAULT_HEADERS_TIMEOUT_MS, requestTimeout) : DEFAULT_HEADERS_TIMEOUT_MS)
    : parseDuration(server.headersTimeout)
  return {
    requestTimeout,
    headersTimeout,
    keepAliveTimeout: parseDuration(server.keepAliveTimeout),
    maxHeaderSize: server.maxHeaderSize,
    connectionsCheckingInterval: CONNECTIONS_CHECKING_INTERVAL_MS
  }
}

/** Options for `http.createServer`: those that can only be given at creation, and the timeouts. */
export function httpServerOptions (limits: ServerLimits): ServerOptions {
  return {
    maxHeaderSize: limits.maxHeaderSize,
    connectionsCheckingInterval: limits.connectionsCheckingInterval,
    requestTimeout: limits.requestTimeout,
    headersTimeout: limits.headersTimeout,
    keepAliveTimeout: limits.keepAliveTimeout
  }
}
