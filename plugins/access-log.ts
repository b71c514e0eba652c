import fp from 'fastify-plugin'
import { levels } from 'pino'
import type { FastifyInstance, FastifyReply, FastifyRequest, onResponseHookHandler, RouteOptions } from 'fastify'
import { UNMATCHED_ROUTE } from '../src/ops/gateway-metrics.js'
import { redactUrl } from '../src/ops/logger.js'
import { accessLineWriter, type AccessLine } from '../src/ops/access-line.js'

// One access line per request, written when the answer is done: what ops
// search by (route, status, latency, upstream, user id) and nothing that is a
// credential. Fastify's own "incoming request"/"request completed" pair is off
// (buildGateway's logController). The line carries the request id (reqId)
// like every other line of that request.
//
// Each route gets its own onResponse hook, made when the route is added, as
// plugins/metrics.ts counts: the route's label and upstream are in the line
// already, so a request does not build Fastify's routeOptions object to find
// them. A route whose log level is above info (/healthz, /readyz, /metrics)
// or whose config says `accessLog: false`, or every route when LOG_LEVEL is
// above info, gets no hook at all. Requests no route
// matched are logged by one hook for the not-found handler.

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: no access line for this route's requests (routes[].accessLog) */
    accessLog?: boolean
  }
}

/** Longest URL an access line keeps: a client chooses it, so it is bounded. */
export const MAX_LOGGED_URL = 512

const INFO = levels.values.info

function hooksOf (value: RouteOptions['onResponse']): onResponseHookHandler[] {
  if (value === undefined) return []
  return Array.isArray(value) ? [...value] : [value as onResponseHookHandler]
}

function write (line: AccessLine, request: FastifyRequest, reply: FastifyReply): void {
  line(request.id, request.method, redactUrl(request.url.slice(0, MAX_LOGGED_URL)), reply.statusCode, reply.elapsedTime, request.identity?.sub)
}

async function accessLogPlugin (fastify: FastifyInstance): Promise<void> {
  // Built by hand from fields that hold no credential (the URL is redacted,
  // the rest is config, status, timing and the user id), so without the
  // process logger's redaction, which walked every line it wrote.
  const lineFor = accessLineWriter(fastify.log)
  // An empty route level inherits the gateway's (LOG_LEVEL), which a reload
  // does not change.
  const quiet = (level: string | undefined): boolean => (levels.values[level === undefined || level === '' ? fastify.log.level : level] ?? Infinity) > INFO

  fastify.addHook('onRoute', (route) => {
    if (quiet(route.logLevel) || route.config?.accessLog === false) return
    const line = lineFor(route.config?.routePrefix ?? route.url ?? route.path, route.config?.upstream)
    const accessLog: onResponseHookHandler = function accessLog (request, reply, done) {
      write(line, request, reply)
      done()
    }
    route.onResponse = [...hooksOf(route.onResponse), accessLog]
  })

  const unmatched = lineFor(UNMATCHED_ROUTE, undefined)
  fastify.addHook('onResponse', function accessLogUnmatched (request, reply, done) {
    if (request.is404 && (levels.values[request.log.level] ?? Infinity) <= INFO) write(unmatched, request, reply)
    done()
  })
}

export default fp(accessLogPlugin, { name: 'tokengate-access-log', fastify: '5.x' })
