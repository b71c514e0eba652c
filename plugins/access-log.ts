import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { UNMATCHED_ROUTE } from '../src/ops/gateway-metrics.js'
import { redactUrl } from '../src/ops/logger.js'

// One access line per request, written when the answer is done: what ops
// search by (route, status, latency, upstream, user id) and nothing that is a
// credential. Fastify's own "incoming request"/"request completed" pair is off
// (buildGateway sets disableRequestLogging). The line goes through the
// request's child logger, so it carries the request id like every other line
// of that request; routes with logLevel warn (/healthz, /readyz, /metrics)
// stay quiet.

/** Longest URL an access line keeps: a client chooses it, so it is bounded. */
export const MAX_LOGGED_URL = 512

async function accessLogPlugin (fastify: FastifyInstance): Promise<void> {
  fastify.addHook('onResponse', function accessLog (request, reply, done) {
    const config = request.routeOptions.config
    request.log.info({
      route: config.routePrefix ?? config.url ?? UNMATCHED_ROUTE,
      method: request.method,
      url: redactUrl(request.url.slice(0, MAX_LOGGED_URL)),
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 100) / 100,
      ...(config.upstream === undefined ? {} : { upstream: config.upstream }),
      ...(request.identity === null ? {} : { user: request.identity.sub })
    }, 'request completed')
    done()
  })
}

export default fp(accessLogPlugin, { name: 'tokengate-access-log', fastify: '5.x', dependencies: ['tokengate-authenticate'] })
