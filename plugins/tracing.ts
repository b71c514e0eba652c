import fp from 'fastify-plugin'
import type { Span } from '@opentelemetry/api'
import type { FastifyInstance } from 'fastify'
import type { TracingConfig } from '../src/config/schema.js'
import { GatewayTracing, tracingEnabled } from '../src/ops/tracing.js'

// Tracing for proxied routes: a server span from onRequest to onResponse.
// With tracing off this plugin registers no hook at all, so the hot path does
// no tracing work; the forwarder checks `fastify.tracing` once per attempt.

declare module 'fastify' {
  interface FastifyInstance {
    /** null when tracing is off */
    tracing: GatewayTracing | null
  }
  interface FastifyRequest {
    /** the request's server span while tracing is on; null otherwise */
    serverSpan: Span | null
  }
}

export interface TracingPluginOptions {
  config: TracingConfig
}

async function tracingPlugin (fastify: FastifyInstance, { config }: TracingPluginOptions): Promise<void> {
  if (!tracingEnabled(config)) {
    fastify.decorate('tracing', null)
    fastify.decorateRequest('serverSpan', null)
    return
  }
  const tracing = new GatewayTracing(config)
  fastify.decorate('tracing', tracing)
  fastify.decorateRequest('serverSpan', null)
  fastify.addHook('onRequest', async (request) => {
    // Only proxied requests are traced: the gateway's own endpoints are not a hop.
    const route = request.routeOptions.config.routePrefix
    if (route !== undefined) request.serverSpan = tracing.startServer(request.method, route, request.headers)
  })
  fastify.addHook('onResponse', async (request, reply) => {
    const span = request.serverSpan
    if (span === null) return
    request.serverSpan = null
    tracing.endServer(span, reply.statusCode, request.identity?.sub)
  })
  fastify.addHook('onClose', () => tracing.close())
}

export default fp(tracingPlugin, { name: 'tokengate-tracing', fastify: '5.x' })
