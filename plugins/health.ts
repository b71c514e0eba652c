import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'

// Liveness says the process answers; readiness says it can do its job: the
// store answers and the denylist mirror can be trusted. A load balancer takes
// an instance out on a failing /readyz, not on /healthz.

const Liveness = Type.Object({ status: Type.Literal('ok') })

const Readiness = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('not ready')]),
  checks: Type.Object({
    store: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
    denylist: Type.Union([Type.Literal('ok'), Type.Literal('stale')]),
    users: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
    // Present only when an outside issuer's keys never arrived: names it.
    trustedIssuers: Type.Optional(Type.String())
  })
})

// typed from the schemas as plugins/auth-routes.ts explains
async function healthPlugin (instance: FastifyInstance): Promise<void> {
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>()

  fastify.get('/healthz', { logLevel: 'warn', schema: { response: { 200: Liveness } } }, async () => ({ status: 'ok' as const }))

  fastify.get('/readyz', { logLevel: 'warn', schema: { response: { 200: Readiness, 503: Readiness } } }, async (_request, reply) => {
    let store: 'ok' | 'unavailable' = 'ok'
    try {
      await fastify.store.ping()
    } catch {
      store = 'unavailable'
    }
    const denylist = fastify.denylist.isTrusted(Date.now()) ? 'ok' : 'stale'
    let users: 'ok' | 'unavailable' = 'ok'
    try {
      await fastify.userSource.ping()
    } catch {
      users = 'unavailable'
    }
    // An outside issuer whose keys never arrived cannot verify its tokens.
    const cold = fastify.trustedIssuers.notReady()
    const ready = store === 'ok' && denylist === 'ok' && users === 'ok' && cold.length === 0
    return reply.code(ready ? 200 : 503).send({
      status: ready ? 'ready' : 'not ready',
      checks: { store, denylist, users, ...(cold.length === 0 ? {} : { trustedIssuers: `no keys: ${cold.join(', ')}` }) }
    })
  })
}

export default fp(healthPlugin, { name: 'tokengate-health', fastify: '5.x', dependencies: ['tokengate-store', 'tokengate-user-source', 'tokengate-tokens'] })
