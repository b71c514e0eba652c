import fp from 'fastify-plugin'
import cors, { type FastifyCorsOptions } from '@fastify/cors'
import type { FastifyInstance } from 'fastify'
import type { GatewayConfig } from '../src/config/schema.js'
import { corsInUse, gatewayCorsPolicy } from '../src/cors/cors-policy.js'

// CORS through @fastify/cors, as one onRequest hook registered before rate
// limiting and authentication, so a preflight from a trusted origin is
// answered (204) before any budget is spent or any token is asked for, and
// every later answer (401, 403, 429, 404 and other errors raised in hooks)
// already carries the headers. Each proxied route carries its own resolved
// options in its route config (plugins/proxy-routes.ts); this plugin's own
// options cover the gateway's endpoints and unmatched paths. With `cors`
// unset everywhere nothing is registered: the hot path pays nothing.

declare module 'fastify' {
  interface FastifyContextConfig {
    /** @fastify/cors reads this: false turns CORS off on the route, an object replaces the gateway's options */
    cors?: FastifyCorsOptions | false
  }
}

export interface CorsPluginOptions {
  config: GatewayConfig
}

async function corsPlugin (fastify: FastifyInstance, { config }: CorsPluginOptions): Promise<void> {
  if (!corsInUse(config)) return
  const policy = gatewayCorsPolicy(config)
  await fastify.register(cors, {
    ...(policy === null ? { origin: false } : policy.options),
    hook: 'onRequest',
    // A bare OPTIONS from a trusted origin is answered like a preflight; the
    // library's strict mode would answer it with a text/plain 400 instead of
    // our JSON errors.
    strictPreflight: false,
    preflightContinue: false,
    optionsSuccessStatus: 204,
    hideOptionsRoute: true
  })
}

export default fp(corsPlugin, {
  name: 'tokengate-cors',
  fastify: '5.x'
})
