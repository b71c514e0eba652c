import type { FastifyRequest } from 'fastify'
import type { TokenRejected } from './access-token.js'
import { ERR_TOKEN_EXPIRED, ERR_TOKEN_INVALID } from '../errors.js'

// RFC 6750 §2.1: `Bearer` (any case), one or more spaces, a b64token.
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*) *$/i

/** The bearer token of a request: undefined when none was sent, null when the header is not a bearer token. */
export function bearerToken (request: FastifyRequest): string | null | undefined {
  const header = request.headers.authorization
  if (header === undefined || header === '') return undefined
  const match = BEARER.exec(header)
  return match === null ? null : match[1]
}

/** The error a client sees for a refused access token: expired ones are told apart, so clients know to refresh. */
export function rejectionError (rejection: TokenRejected): Error {
  return rejection.reason === 'expired' ? new ERR_TOKEN_EXPIRED() : new ERR_TOKEN_INVALID()
}
