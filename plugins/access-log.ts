import fp from 'fastify-plugin'
import { levels } from 'pino'
import type { FastifyInstance } from 'fastify'
import { UNMATCHED_ROUTE } from '../src/ops/gateway-metrics.js'
import { redactUrl } from '../src/ops/logger.js'
import { accessLineWriter } from '../src/ops/access-line.js'

// One access line per request, written when the answer is done: what ops
// search by (route, status, latency, upstream, user id) and nothing that is a
// credential. Fastify's own "incoming request"/"request completed" pair is off
// (buildGateway sets disableRequestLogging). The line carries the request id
// (reqId) like every other line of that request; routes with logLevel warn
// (/healthz, /readyz, /metrics) stay quiet.

/** Longest URL an access line keeps: a client chooses it, so it is bounded. */
export const MAX_LOGGED_URL = 512

const INFO = levels.values.info

async function accessLogPlugin (fastify: FastifyInstance): Promise<void> {
  // Built by hand from fields that hold no credential (the URL is redacted,
  // the rest is config, status, timing and the user id), so without the
  // process logger's redaction, which walked every line it wrote (about 4 µs
  // of the 7 µs a line took through pino). Every other line keeps it.
  const writeLine = accessLineWriter(fastify.log)
  fastify.addHook('onResponse', function accessLog (request, reply, done) {
    // the request's own logger carries the route's level (warn on /healthz …)
    if ((levels.values[request.log.level] ?? Infinity) > INFO) return done()
    const config = request.routeOptions.config
    writeLine({
      reqId: request.id,
      route: config.routePrefix ?? config.url ?? UNMATCHED_ROUTE,
      method: request.method,
      url: redactUrl(request.url.slice(0, MAX_LOGGED_URL)),
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 100) / 100,
      // undefined fields are left out of the line, as pino leaves them out
      upstream: config.upstream,
      user: request.identity?.sub
    })
    done()
  })
}

export default fp(accessLogPlugin, { name: 'tokengate-access-log', fastify: '5.x', dependencies: ['tokengate-authenticate'] })
