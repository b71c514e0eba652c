import { STATUS_CODES } from 'node:http'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import {
  ERROR_CODES, ERR_BAD_REQUEST, ERR_BODY_TOO_LARGE, ERR_INTERNAL, ERR_STORE_UNAVAILABLE,
  ERR_UNSUPPORTED_MEDIA_TYPE, ERR_UPSTREAM_BAD_GATEWAY, ERR_UPSTREAM_TIMEOUT, ERR_UPSTREAM_UNAVAILABLE, ERR_VALIDATION,
  errorSpec
} from './errors.js'
import { StoreUnavailableError } from './sessions/session-store.js'

// Every answer the gateway makes itself is `{statusCode, code, error, message}`.
// A client never sees a library's message, a stack, or an upstream's address:
// anything not in our registry is replaced by a generic error of the same class
// and the original is logged with the request id.

const REALM = 'tokengate'

export interface ErrorBody {
  statusCode: number
  code: string
  error: string
  message: string
}

/** What went wrong on the way to an upstream, by the code Node or undici gives it. */
const UPSTREAM_ERRORS: Record<string, new (options?: { cause: unknown }) => FastifyError> = {
  ECONNREFUSED: ERR_UPSTREAM_UNAVAILABLE,
  ENOTFOUND: ERR_UPSTREAM_UNAVAILABLE,
  EAI_AGAIN: ERR_UPSTREAM_UNAVAILABLE,
  EHOSTUNREACH: ERR_UPSTREAM_UNAVAILABLE,
  ENETUNREACH: ERR_UPSTREAM_UNAVAILABLE,
  UND_ERR_HEADERS_TIMEOUT: ERR_UPSTREAM_TIMEOUT,
  UND_ERR_BODY_TIMEOUT: ERR_UPSTREAM_TIMEOUT,
  UND_ERR_CONNECT_TIMEOUT: ERR_UPSTREAM_TIMEOUT,
  ETIMEDOUT: ERR_UPSTREAM_TIMEOUT,
  ECONNRESET: ERR_UPSTREAM_BAD_GATEWAY,
  EPIPE: ERR_UPSTREAM_BAD_GATEWAY,
  UND_ERR_SOCKET: ERR_UPSTREAM_BAD_GATEWAY,
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: ERR_UPSTREAM_BAD_GATEWAY,
  // an answer Node would not write: a header value or status the upstream got wrong
  ERR_INVALID_CHAR: ERR_UPSTREAM_BAD_GATEWAY,
  ERR_HTTP_INVALID_HEADER_VALUE: ERR_UPSTREAM_BAD_GATEWAY,
  ERR_HTTP_INVALID_STATUS_CODE: ERR_UPSTREAM_BAD_GATEWAY
}

/**
 * Node's IncomingMessage reports a client that hung up mid-body as ECONNRESET
 * with the message "aborted": the client's doing, not an upstream's, though
 * it shares the code with an upstream resetting its socket.
 */
export function isClientAbort (error: Error): boolean {
  return (error as FastifyError).code === 'ECONNRESET' && error.message === 'aborted'
}

/** Maps anything thrown inside the gateway to one of our registered errors. */
export function toGatewayError (error: FastifyError | Error): FastifyError {
  const e = error as FastifyError
  if (e.code !== undefined && ERROR_CODES.has(e.code)) return e
  if (isClientAbort(error)) return new ERR_BAD_REQUEST()
  // Our own error (a body cut at its limit) or a refused connection may be
  // underneath what undici reports.
  const inner = rootCause(error)
  if (inner.code !== undefined && ERROR_CODES.has(inner.code)) return inner
  // An answer that is not HTTP: undici's HTTPParserError carries no code.
  const notHttp = inner.name === 'HTTPParserError' || inner.code?.startsWith('HPE_') === true
  const upstream = UPSTREAM_ERRORS[e.code] ?? UPSTREAM_ERRORS[inner.code] ?? (notHttp ? ERR_UPSTREAM_BAD_GATEWAY : undefined)
  if (upstream !== undefined) return new upstream({ cause: error })
  if (error instanceof StoreUnavailableError) return new ERR_STORE_UNAVAILABLE({ cause: error })
  if (e.validation !== undefined) return new ERR_VALIDATION(e.message)
  switch (e.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new ERR_BODY_TOO_LARGE()
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new ERR_UNSUPPORTED_MEDIA_TYPE()
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
    error: errorSpec(error.code)?.oauth ?? STATUS_CODES[statusCode] ?? 'Error',
    message: error.message
  }
}

/** The `WWW-Authenticate` value an error carries, if its registry entry names a challenge. */
export function bearerChallenge (error: FastifyError): string | undefined {
  const spec = errorSpec(error.code)
  if (spec?.challenge === undefined) return undefined
  // RFC 6750 §3: no error attribute when the request carried no token.
  if (spec.challenge === 'bare') return `Bearer realm="${REALM}"`
  return `Bearer realm="${REALM}", error="${spec.oauth ?? 'invalid_token'}", error_description="${error.message}"`
}

/**
 * Fastify's `frameworkErrors` option: errors its router raises before any
 * route (a path that does not decode, such as `/x/%zz`) get our body too.
 */
export function answerFrameworkError (error: FastifyError, _request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const mapped = toGatewayError(error)
  reply.log.info({ code: mapped.code, cause: error.code }, 'request refused')
  return sendError(reply, mapped)
}

export function sendError (reply: FastifyReply, error: FastifyError): FastifyReply {
  const body = errorBody(error)
  const challenge = bearerChallenge(error)
  if (challenge !== undefined) reply.header('www-authenticate', challenge)
  if (body.statusCode === 503 && !reply.hasHeader('retry-after')) reply.header('retry-after', '1')
  return reply.code(body.statusCode).type('application/json; charset=utf-8').send(body)
}
