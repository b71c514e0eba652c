import { createHash, timingSafeEqual } from 'node:crypto'
import { BlockList, isIPv4 } from 'node:net'
import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyReply, FastifyRequest, onResponseHookHandler, RouteOptions } from 'fastify'
import { parseCidr } from '../src/config/load-config.js'
import type { MetricsConfig } from '../src/config/schema.js'
import { SupervisorUnavailableError } from '../src/cluster-ipc.js'
import { ERR_FORBIDDEN, ERR_METRICS_UNAVAILABLE, ERR_TOKEN_INVALID, ERR_TOKEN_MISSING } from '../src/errors.js'
import { GatewayMetrics, UNMATCHED_ROUTE, type RouteSeries } from '../src/ops/gateway-metrics.js'
import { bearerToken } from '../src/tokens/bearer-token.js'

// Prometheus metrics: GET /metrics, and the bookkeeping behind it. Each route
// gets its own onResponse hook, closed over its series when it is registered,
// so a request costs two prebuilt-label updates and no lookups by URL. The
// route label is the proxied route's prefix or the endpoint's own path.

declare module 'fastify' {
  interface FastifyInstance {
    metrics: GatewayMetrics
  }
  interface FastifyContextConfig {
    /** the series a route's requests are counted under */
    metricsSeries?: RouteSeries
  }
}

export interface MetricsPluginOptions {
  config: MetricsConfig
  /** A registry the caller owns, kept across hot reloads; otherwise a fresh one. */
  metrics?: GatewayMetrics
}

export const METRICS_PATH = '/metrics'

function digest (text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

/** Who may scrape: the configured addresses and bearer token, checked before any work. */
function compileAccess (config: MetricsConfig): ((request: FastifyRequest) => void) | null {
  const allow = config.allow === undefined ? null : new BlockList()
  for (const entry of config.allow ?? []) {
    const cidr = parseCidr(entry)
    if (cidr !== null) allow?.addSubnet(cidr.address, cidr.prefix, cidr.family)
  }
  const expected = config.bearerToken === undefined ? null : digest(config.bearerToken)
  if (allow === null && expected === null) return null
  return function checkScraper (request) {
    if (allow !== null) {
      const ip = request.ip.startsWith('::ffff:') && isIPv4(request.ip.slice(7)) ? request.ip.slice(7) : request.ip
      if (!allow.check(ip, isIPv4(ip) ? 'ipv4' : 'ipv6')) throw new ERR_FORBIDDEN()
    }
    if (expected !== null) {
      const token = bearerToken(request)
      if (token === undefined) throw new ERR_TOKEN_MISSING()
      // Compared as digests: equal lengths, and no timing hint about the token.
      if (token === null || !timingSafeEqual(digest(token), expected)) throw new ERR_TOKEN_INVALID()
    }
  }
}

function hooksOf (value: RouteOptions['onResponse']): onResponseHookHandler[] {
  if (value === undefined) return []
  return Array.isArray(value) ? [...value] : [value as onResponseHookHandler]
}

async function metricsPlugin (fastify: FastifyInstance, opts: MetricsPluginOptions): Promise<void> {
  const metrics = opts.metrics ?? new GatewayMetrics()
  fastify.decorate('metrics', metrics)
  if (!opts.config.enabled) return

  fastify.addHook('onRoute', (route) => {
    const label = route.config?.routePrefix ?? route.url ?? route.path
    const series = metrics.route(label)
    route.config = { ...route.config, metricsSeries: series }
    const count: onResponseHookHandler = function countRequest (request: FastifyRequest, reply: FastifyReply, done: () => void) {
      series.observe(request.method, reply.statusCode, reply.elapsedTime / 1000)
      done()
    }
    route.onResponse = [...hooksOf(route.onResponse), count]
  })

  // Requests no route matched (404s, including those the router refuses).
  const unmatched = metrics.route(UNMATCHED_ROUTE)
  fastify.addHook('onResponse', function countUnmatched (request, reply, done) {
    if (request.is404) unmatched.observe(request.method, reply.statusCode, reply.elapsedTime / 1000)
    done()
  })

  const access = compileAccess(opts.config)
  fastify.get(METRICS_PATH, {
    // Scraped every few seconds: not worth an access-log line each time.
    logLevel: 'warn',
    ...(access === null ? {} : { onRequest: async (request: FastifyRequest) => access(request) })
  }, async (_request, reply) => {
    let text: string
    try {
      text = await metrics.text()
    } catch (err) {
      // with workers, the sum comes from the supervisor: no answer in time
      // is an outage the scraper retries, not a bug of ours
      if (err instanceof SupervisorUnavailableError) {
        reply.log.warn({ err }, 'metrics of every worker could not be collected')
        throw new ERR_METRICS_UNAVAILABLE()
      }
      throw err
    }
    return reply.header('cache-control', 'no-store').type(metrics.contentType).send(text)
  })
}

export default fp(metricsPlugin, { name: 'tokengate-metrics', fastify: '5.x' })
