import createError, { type FastifyErrorConstructor } from '@fastify/error'

// The one registry of errors a client can see. Codes are stable: clients and
// dashboards match on them, so an entry may be added but never renamed.
// Everything else is derived from this object: the error classes, the code
// list the error handler allows through, the OAuth error names, the 401/403
// challenges. test/errors.test.ts checks the README's table against it.

export interface ErrorSpec {
  readonly status: number
  /** `%s` placeholders are filled from the constructor's arguments. */
  readonly message: string
  /** The OAuth 2.0 error name (RFC 6749 §5.2, RFC 6750 §3.1) in the body's `error`; else the HTTP reason. */
  readonly oauth?: string
  /**
   * The `WWW-Authenticate: Bearer` challenge this error carries (RFC 6750 §3):
   * `bare` names no error (no token was presented, or it was not a bearer
   * token that failed); `error` names the OAuth error and describes it.
   */
  readonly challenge?: 'bare' | 'error'
  /**
   * Expected while a dependency is down (a store outage): logged without a
   * stack, since the outage itself is logged once when it starts and ends.
   */
  readonly outage?: boolean
}

export const ERRORS = {
  TG_NOT_FOUND: { status: 404, message: 'No route for %s %s' },
  TG_METHOD_NOT_ALLOWED: { status: 405, message: 'Method %s is not allowed on this route' },
  TG_BAD_REQUEST: { status: 400, message: 'The request is malformed' },
  TG_VALIDATION: { status: 400, message: 'Invalid request: %s' },
  TG_REQUEST_TIMEOUT: { status: 408, message: 'The request took too long to arrive' },
  TG_BODY_TOO_LARGE: { status: 413, message: 'The request body is too large' },
  TG_URI_TOO_LONG: { status: 414, message: 'The request target is too long' },
  TG_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Unsupported content type' },
  TG_HEADERS_TOO_LARGE: { status: 431, message: 'Request headers too large' },

  TG_TOKEN_MISSING: { status: 401, message: 'Authentication is required', oauth: 'invalid_request', challenge: 'bare' },
  TG_TOKEN_INVALID: { status: 401, message: 'The access token is invalid', oauth: 'invalid_token', challenge: 'error' },
  TG_TOKEN_EXPIRED: { status: 401, message: 'The access token has expired', oauth: 'invalid_token', challenge: 'error' },
  TG_TOKEN_REVOKED: { status: 401, message: 'The access token has been revoked', oauth: 'invalid_token', challenge: 'error' },
  TG_INSUFFICIENT_SCOPE: { status: 403, message: 'The access token lacks the scope or role this route requires', oauth: 'insufficient_scope', challenge: 'error' },

  TG_LOGIN_FAILED: { status: 401, message: 'Invalid username or password', challenge: 'bare' },
  TG_INVALID_GRANT: { status: 401, message: 'The refresh token is invalid, expired or revoked', oauth: 'invalid_grant', challenge: 'bare' },
  TG_CSRF: { status: 403, message: 'Cross-site request refused' },
  TG_FORBIDDEN: { status: 403, message: 'You may not do this' },
  TG_SESSION_NOT_FOUND: { status: 404, message: 'No such session' },
  TG_RATE_LIMITED: { status: 429, message: 'Too many requests, retry in %s' },
  TG_INVALID_CLIENT: { status: 401, message: 'Client authentication failed', oauth: 'invalid_client' },
  TG_INVALID_SCOPE: { status: 400, message: 'The requested scope is not allowed for this client', oauth: 'invalid_scope' },
  TG_UNSUPPORTED_GRANT_TYPE: { status: 400, message: 'Only grant_type=client_credentials is supported here', oauth: 'unsupported_grant_type' },
  TG_OAUTH_INVALID_REQUEST: { status: 400, message: 'Invalid request: %s', oauth: 'invalid_request' },
  TG_PASSWORD_CHANGE_UNSUPPORTED: { status: 405, message: 'Passwords cannot be changed here: the user source is read-only (users file, or no passwordUpdateQuery)' },
  TG_PASSWORD_INCORRECT: { status: 403, message: 'The current password is wrong' },

  TG_INTERNAL: { status: 500, message: 'Internal error' },
  TG_UPSTREAM_BAD_GATEWAY: { status: 502, message: 'The upstream service failed' },
  TG_UPSTREAM_UNAVAILABLE: { status: 503, message: 'The upstream service is unavailable' },
  TG_UPSTREAM_TIMEOUT: { status: 504, message: 'The upstream service did not answer in time' },
  TG_STORE_UNAVAILABLE: { status: 503, message: 'The session store is unavailable, retry shortly', outage: true },
  TG_USERS_UNAVAILABLE: { status: 503, message: 'The user database is unavailable, retry shortly', outage: true },
  TG_METRICS_UNAVAILABLE: { status: 503, message: 'The metrics of every worker cannot be collected right now, retry shortly', outage: true },
  TG_SHUTTING_DOWN: { status: 503, message: 'The gateway is shutting down' }
} as const satisfies Record<string, ErrorSpec>

export type ErrorCode = keyof typeof ERRORS

/** Every registered code, for the error handler's allow-list. */
export const ERROR_CODES: ReadonlySet<string> = new Set(Object.keys(ERRORS))

/** The registry entry of a code, or undefined for a code that is not ours. */
export function errorSpec (code: string): ErrorSpec | undefined {
  return ERROR_CODES.has(code) ? ERRORS[code as ErrorCode] : undefined
}

function define (code: ErrorCode): FastifyErrorConstructor {
  const spec: ErrorSpec = ERRORS[code]
  return createError(code, spec.message, spec.status)
}

export const ERR_NOT_FOUND = define('TG_NOT_FOUND')
export const ERR_METHOD_NOT_ALLOWED = define('TG_METHOD_NOT_ALLOWED')
export const ERR_BAD_REQUEST = define('TG_BAD_REQUEST')
export const ERR_VALIDATION = define('TG_VALIDATION')
export const ERR_REQUEST_TIMEOUT = define('TG_REQUEST_TIMEOUT')
export const ERR_BODY_TOO_LARGE = define('TG_BODY_TOO_LARGE')
export const ERR_URI_TOO_LONG = define('TG_URI_TOO_LONG')
export const ERR_UNSUPPORTED_MEDIA_TYPE = define('TG_UNSUPPORTED_MEDIA_TYPE')
export const ERR_HEADERS_TOO_LARGE = define('TG_HEADERS_TOO_LARGE')

export const ERR_TOKEN_MISSING = define('TG_TOKEN_MISSING')
export const ERR_TOKEN_INVALID = define('TG_TOKEN_INVALID')
export const ERR_TOKEN_EXPIRED = define('TG_TOKEN_EXPIRED')
export const ERR_TOKEN_REVOKED = define('TG_TOKEN_REVOKED')
export const ERR_INSUFFICIENT_SCOPE = define('TG_INSUFFICIENT_SCOPE')

export const ERR_LOGIN_FAILED = define('TG_LOGIN_FAILED')
export const ERR_INVALID_GRANT = define('TG_INVALID_GRANT')
export const ERR_CSRF = define('TG_CSRF')
export const ERR_FORBIDDEN = define('TG_FORBIDDEN')
export const ERR_SESSION_NOT_FOUND = define('TG_SESSION_NOT_FOUND')
export const ERR_RATE_LIMITED = define('TG_RATE_LIMITED')
export const ERR_INVALID_CLIENT = define('TG_INVALID_CLIENT')
export const ERR_INVALID_SCOPE = define('TG_INVALID_SCOPE')
export const ERR_UNSUPPORTED_GRANT_TYPE = define('TG_UNSUPPORTED_GRANT_TYPE')
export const ERR_OAUTH_INVALID_REQUEST = define('TG_OAUTH_INVALID_REQUEST')
export const ERR_PASSWORD_CHANGE_UNSUPPORTED = define('TG_PASSWORD_CHANGE_UNSUPPORTED')
export const ERR_PASSWORD_INCORRECT = define('TG_PASSWORD_INCORRECT')

export const ERR_INTERNAL = define('TG_INTERNAL')
export const ERR_UPSTREAM_BAD_GATEWAY = define('TG_UPSTREAM_BAD_GATEWAY')
export const ERR_UPSTREAM_UNAVAILABLE = define('TG_UPSTREAM_UNAVAILABLE')
export const ERR_UPSTREAM_TIMEOUT = define('TG_UPSTREAM_TIMEOUT')
export const ERR_STORE_UNAVAILABLE = define('TG_STORE_UNAVAILABLE')
export const ERR_USERS_UNAVAILABLE = define('TG_USERS_UNAVAILABLE')
export const ERR_METRICS_UNAVAILABLE = define('TG_METRICS_UNAVAILABLE')
export const ERR_SHUTTING_DOWN = define('TG_SHUTTING_DOWN')
