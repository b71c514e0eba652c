import createError from '@fastify/error'

// The one registry of errors a client can see. Codes are stable: clients and
// dashboards match on them, so an entry may be added but never renamed.
// The README's error table is checked against this list by a test.

export const ERR_NOT_FOUND = createError('TG_NOT_FOUND', 'No route for %s %s', 404)
export const ERR_METHOD_NOT_ALLOWED = createError('TG_METHOD_NOT_ALLOWED', 'Method %s is not allowed on this route', 405)
export const ERR_BAD_REQUEST = createError('TG_BAD_REQUEST', 'The request is malformed', 400)
export const ERR_VALIDATION = createError('TG_VALIDATION', 'Invalid request: %s', 400)
export const ERR_BODY_TOO_LARGE = createError('TG_BODY_TOO_LARGE', 'The request body is too large', 413)
export const ERR_UNSUPPORTED_MEDIA_TYPE = createError('TG_UNSUPPORTED_MEDIA_TYPE', 'Unsupported content type', 415)
export const ERR_HEADERS_TOO_LARGE = createError('TG_HEADERS_TOO_LARGE', 'Request headers too large', 431)

export const ERR_TOKEN_MISSING = createError('TG_TOKEN_MISSING', 'Authentication is required', 401)
export const ERR_TOKEN_INVALID = createError('TG_TOKEN_INVALID', 'The access token is invalid', 401)
export const ERR_TOKEN_EXPIRED = createError('TG_TOKEN_EXPIRED', 'The access token has expired', 401)
export const ERR_TOKEN_REVOKED = createError('TG_TOKEN_REVOKED', 'The access token has been revoked', 401)
export const ERR_INSUFFICIENT_SCOPE = createError('TG_INSUFFICIENT_SCOPE', 'The access token lacks the scope or role this route requires', 403)

export const ERR_LOGIN_FAILED = createError('TG_LOGIN_FAILED', 'Invalid username or password', 401)
export const ERR_INVALID_GRANT = createError('TG_INVALID_GRANT', 'The refresh token is invalid, expired or revoked', 401)
export const ERR_CSRF = createError('TG_CSRF', 'Cross-site request refused', 403)
export const ERR_FORBIDDEN = createError('TG_FORBIDDEN', 'You may not do this', 403)
export const ERR_SESSION_NOT_FOUND = createError('TG_SESSION_NOT_FOUND', 'No such session', 404)
export const ERR_RATE_LIMITED = createError('TG_RATE_LIMITED', 'Too many requests, retry in %s', 429)

export const ERR_INTERNAL = createError('TG_INTERNAL', 'Internal error', 500)
export const ERR_UPSTREAM_BAD_GATEWAY = createError('TG_UPSTREAM_BAD_GATEWAY', 'The upstream service failed', 502)
export const ERR_UPSTREAM_UNAVAILABLE = createError('TG_UPSTREAM_UNAVAILABLE', 'The upstream service is unavailable', 503)
export const ERR_UPSTREAM_TIMEOUT = createError('TG_UPSTREAM_TIMEOUT', 'The upstream service did not answer in time', 504)
export const ERR_STORE_UNAVAILABLE = createError('TG_STORE_UNAVAILABLE', 'The session store is unavailable, retry shortly', 503)
export const ERR_SHUTTING_DOWN = createError('TG_SHUTTING_DOWN', 'The gateway is shutting down', 503)

/** Every code above, for the README table test and for the error handler's allow-list. */
export const ERROR_CODES: ReadonlySet<string> = new Set([
  ERR_NOT_FOUND, ERR_METHOD_NOT_ALLOWED, ERR_BAD_REQUEST, ERR_VALIDATION, ERR_BODY_TOO_LARGE,
  ERR_UNSUPPORTED_MEDIA_TYPE, ERR_HEADERS_TOO_LARGE, ERR_TOKEN_MISSING, ERR_TOKEN_INVALID,
  ERR_TOKEN_EXPIRED, ERR_TOKEN_REVOKED, ERR_INSUFFICIENT_SCOPE, ERR_LOGIN_FAILED, ERR_INVALID_GRANT,
  ERR_CSRF, ERR_FORBIDDEN, ERR_SESSION_NOT_FOUND, ERR_RATE_LIMITED, ERR_INTERNAL,
  ERR_UPSTREAM_BAD_GATEWAY, ERR_UPSTREAM_UNAVAILABLE, ERR_UPSTREAM_TIMEOUT, ERR_STORE_UNAVAILABLE,
  ERR_SHUTTING_DOWN
].map((E) => new E().code))
