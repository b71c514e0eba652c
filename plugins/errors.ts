import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ERR_NOT_FOUND } from '../src/errors.js'
import { sendError, toGatewayError } from '../src/error-response.js'

// The one error handler: everything thrown on a route becomes our JSON body (src/error-response.ts).

async function errorsPlugin (fastify: FastifyInstance): Promise<void> {
  fastify.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const mapped = toGatewayError(error)
    const status = mapped.statusCode ?? 500
    if (status >= 500) request.log.error({ err: error, code: mapped.code }, 'request failed')
    else request.log.info({ code: mapped.code, cause: error.code ?? error.name }, 'request refused')
    return sendError(reply, mapped)
  })

  fastify.setNotFoundHandler((request, reply) => {
    return sendError(reply, new ERR_NOT_FOUND(request.method, request.url.split('?', 1)[0].slice(0, 256)))
  })
}

export default fp(errorsPlugin, { name: 'tokengate-errors', fastify: '5.x' })
