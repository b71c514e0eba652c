import { STATUS_CODES } from 'node:http'
import fp from 'fastify-plugin'
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import {
  ERROR_CODES, ERR_BAD_REQUEST, ERR_BODY_TOO_LARGE, ERR_INTERNAL, ERR_NOT_FOUND, ERR_STORE_UNAVAILABLE,
  ERR_UNSUPPORTED_MEDIA_TYPE, ERR_UPSTREAM_BAD_GATEWAY, ERR_UPSTREAM_TIMEOUT, ERR_UPSTREAM_UNAVAILABLE, ERR_VALIDATION
} from '../src/errors.js'
import { StoreUnavailableError } from '../src/store/session-store.js'

// Every answer the gateway makes itself is `{statusCode, code, error, message}`.
// A client never sees a library's message, a stack, or an upstream's address:
// anything not in our registry is replaced by a generic error of the same class
// and the original is logged with the request id.

/** The OAuth 2.0 error names (RFC 6749 §5.2, RFC 6750 §3.1) clients branch on. */
const OAUTH_ERROR: Record<string, string> = {
  TG_TOKEN_MISSING: 'invalid_request',
  TG_TOKEN_INVALID: 'invalid_token',
  TG_TOKEN_EXPIRED: 'invalid_token',
  TG_TOKEN_REVOKED: 'invalid_token',
  TG_INSUFFICIENT_SCOPE: 'insufficient_scope',
  TG_INVALID_GRANT: 'invalid_grant'
}

const REALM = 'tokengate'

export interface ErrorBody {
  statusCode: number
  code: string
  error: string
  message: string
}

/** Maps anything thrown inside the gateway to one of our registered errors. */
export function toGatewayError (error: FastifyError | Error): FastifyError {
  const e = error as FastifyError
  if (e.code !== undefined && ERROR_CODES.has(e.code)) return e
  // reply-from wraps what undici threw; our own error (a body cut at its
  // limit) or a refused connection may be underneath.
  const inner = rootCause(error)
  if (inner !== error) {
    if (inner.code !== undefined && ERROR_CODES.has(inner.code)) return inner
    if (inner.code === 'ECONNREFUSED') return new ERR_UPSTREAM_UNAVAILABLE({ cause: error })
  }
  if (error instanceof StoreUnavailableError) return new ERR_STORE_UNAVAILABLE({ cause: error })
  if (e.validation !== undefined) return new ERR_VALIDATION(e.message)
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new ERR_BODY_TOO_LARGE()
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new ERR_UNSUPPORTED_MEDIA_TYPE()
    case 'FST_REPLY_FROM_SERVICE_UNAVAILABLE': return new ERR_UPSTREAM_UNAVAILABLE({ cause: error })
    case 'FST_REPLY_FROM_GATEWAY_TIMEOUT':
    case 'FST_REPLY_FROM_TIMEOUT':
    case 'FST_REPLY_FROM_HTTP_REQUEST_TIMEOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
      return new ERR_UPSTREAM_TIMEOUT({ cause: error })
    case 'FST_REPLY_FROM_BAD_GATEWAY':
    case 'FST_REPLY_FROM_INTERNAL_SERVER_ERROR':
    case 'ECONNRESET':
    case 'UND_ERR_SOCKET':
      return new ERR_UPSTREAM_BAD_GATEWAY({ cause: error })
  }
  const status = e.statusCode ?? 500
  if (status === 413) return new ERR_BODY_TOO_LARGE()
  if (status === 415) return new ERR_UNSUPPORTED_MEDIA_TYPE()
  if (status >= 400 && status < 500) return new ERR_BAD_REQUEST()
  return new ERR_INTERNAL({ cause: error })
}

function rootCause (error: Error): FastifyError {
  let current = error as FastifyError
  for (let depth = 0; depth < 5 && current.cause instanceof Error; depth++) current = current.cause as FastifyError
  // undici reports a refused connection as an AggregateError (IPv4 and IPv6 attempts)
  if (current instanceof AggregateError && current.errors.length > 0) return current.errors[0] as FastifyError
  return current
}

export function errorBody (error: FastifyError): ErrorBody {
  const statusCode = error.statusCode ?? 500
  return {
    statusCode,
    code: error.code,
    error: OAUTH_ERROR[error.code] ?? STATUS_CODES[statusCode] ?? 'Error',
    message: error.message
  }
}

export function sendError (reply: FastifyReply, error: FastifyError): FastifyReply {
  const body = errorBody(error)
  if (body.statusCode === 401 || error.code === 'TG_INSUFFICIENT_SCOPE') {
    // RFC 6750 §3: no error attribute when the request carried no token.
    const oauth = OAUTH_ERROR[error.code]
    const challenge = error.code === 'TG_TOKEN_MISSING' || error.code === 'TG_LOGIN_FAILED' || error.code === 'TG_INVALID_GRANT'
      ? `Bearer realm="${REALM}"`
      : `Bearer realm="${REALM}", error="${oauth ?? 'invalid_token'}", error_description="${body.message}"`
    reply.header('www-authenticate', challenge)
  }
  if (body.statusCode === 503 && !reply.hasHeader('retry-after')) reply.header('retry-after', '1')
  return reply.code(body.statusCode).type('application/json; charset=utf-8').send(body)
}

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
