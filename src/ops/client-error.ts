import { STATUS_CODES } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyBaseLogger, FastifyError } from 'fastify'
import { errorBody } from '../error-response.js'
import {
  ERR_BAD_REQUEST, ERR_HEADERS_TOO_LARGE, ERR_REQUEST_TIMEOUT, ERR_URI_TOO_LONG
} from '../errors.js'

// Errors Node's HTTP parser raises before a request exists (`clientError`):
// no route, no error handler, only the socket. Fastify's default writes a
// body of its own shape; this answers with ours and a TG_ code, the same way
// every other refusal does, and logs at debug: these are the client's
// mistakes (or scanners), not the gateway's.

/** Node's parse errors carry the bytes it was reading when it gave up (a Buffer, whatever Fastify's types say). */
interface ParserError extends Error {
  code?: string
  rawPacket?: unknown
}

/** The request line (method, target, version) ends at the first CRLF; past the limit, the target alone is over it. */
function requestLineOverflowed (err: ParserError, maxHeaderSize: number): boolean {
  if (!Buffer.isBuffer(err.rawPacket)) return false
  const eol = err.rawPacket.indexOf('\r\n')
  return eol === -1 || eol >= maxHeaderSize
}

/** Our registered error for a parser error code. */
export function clientErrorFor (err: ParserError, maxHeaderSize: number): FastifyError {
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return new ERR_REQUEST_TIMEOUT()
    case 'HPE_HEADER_OVERFLOW':
      return requestLineOverflowed(err, maxHeaderSize) ? new ERR_URI_TOO_LONG() : new ERR_HEADERS_TOO_LARGE()
    default:
      return new ERR_BAD_REQUEST()
  }
}

/** The raw HTTP/1.1 answer for `error`; the connection is closed after it, as Node does. */
export function clientErrorResponse (error: FastifyError): string {
  const status = error.statusCode ?? 400
  const body = JSON.stringify(errorBody(error))
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
}

/** A `clientErrorHandler` for Fastify's options (`this` is the Fastify instance), for a server with that header limit. */
export function clientErrorHandler (maxHeaderSize: number): (this: { log: FastifyBaseLogger }, err: ParserError, socket: Socket) => void {
  return function answerClientError (err, socket) {
    // A reset connection is gone: nothing to answer, nothing worth a log line.
    if (err.code === 'ECONNRESET' || socket.destroyed) return
    const error = clientErrorFor(err, maxHeaderSize)
    this.log.debug({ code: error.code, cause: err.code ?? err.name }, 'malformed request refused')
    if (socket.writable) socket.write(clientErrorResponse(error))
    socket.destroy()
  }
}
