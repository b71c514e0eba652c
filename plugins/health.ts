import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'

// Liveness says the process answers; readiness says it can do its job: the
// store answers and the denylist mirror can be trusted. A load balancer takes
// an instance out on a failing /readyz, not on /healthz.
async function healthPlugin (fastify: FastifyInstance): Promise<void> {
  fastify.get('/healthz', { logLevel: 'warn' }, async () => ({ status: 'ok' }))

  fastify.get('/readyz', { logLevel: 'warn' }, async (_request, reply) => {
    const checks: Record<string, string> = { store: 'ok', denylist: 'ok' }
    try {
      await fastify.store.ping()
    } catch {
      checks.store = 'unavailable'
    }
    if (!fastify.denylist.isTrusted(Date.now())) checks.denylist = 'stale'
    // An outside issuer whose keys never arrived cannot verify its tokens.
    const cold = fastify.trustedIssuers.notReady()
    if (cold.length > 0) checks.trustedIssuers = `no keys: ${cold.join(', ')}`
    const ready = checks.store === 'ok' && checks.denylist === 'ok' && cold.length === 0
    return reply.code(ready ? 200 : 503).send({ status: ready ? 'ready' : 'not ready', checks })
  })
}

export default fp(healthPlugin, { name: 'tokengate-health', fastify: '5.x', dependencies: ['tokengate-store', 'tokengate-tokens'] })
