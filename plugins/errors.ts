import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { ERR_NOT_FOUND, errorSpec } from '../src/errors.js'
import { isClientAbort, sendError, toGatewayError } from '../src/error-response.js'

// The one error handler: everything thrown on a route becomes our JSON body (src/error-response.ts).

/** The innermost message of a chain of causes, for a one-line log without a stack. */
function rootMessage (error: Error): string {
  let current = error
  for (let depth = 0; depth < 5 && current.cause instanceof Error; depth++) current = current.cause
  return current.message
}

async function errorsPlugin (fastify: FastifyInstance): Promise<void> {
  fastify.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const mapped = toGatewayError(error)
    const status = mapped.statusCode ?? 500
    if (isClientAbort(error)) {
      // The client hung up mid-body: nobody reads the answer, and it is no fault of ours.
      request.log.info({ code: mapped.code, cause: 'client aborted the request' }, 'request refused')
    } else if (errorSpec(mapped.code)?.outage === true) {
      // Expected while a dependency is down; the outage itself is logged when it starts and ends.
      request.log.warn({ code: mapped.code, cause: rootMessage(error) }, 'request refused during an outage')
    } else if (status >= 500) {
      request.log.error({ err: error, code: mapped.code }, 'request failed')
    } else {
      request.log.info({ code: mapped.code, cause: error.code ?? error.name }, 'request refused')
    }
    return sendError(reply, mapped)
  })

  fastify.setNotFoundHandler((request, reply) => {
    return sendError(reply, new ERR_NOT_FOUND(request.method, request.url.split('?', 1)[0].slice(0, 256)))
  })
}

export default fp(errorsPlugin, { name: 'tokengate-errors', fastify: '5.x' })
