import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'

// The id itself is chosen by `genReqId` (src/ops/request-id.ts) when the request
// arrives; this returns it to the client so support can find the logs.
async function requestIdPlugin (fastify: FastifyInstance): Promise<void> {
  // Callback style: nothing here waits, so no promise per request.
  fastify.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id)
    done()
  })
}

export default fp(requestIdPlugin, { name: 'tokengate-request-id', fastify: '5.x' })
