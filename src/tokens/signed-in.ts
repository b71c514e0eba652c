import type { AccessClaims } from './access-token.js'
import { ERR_TOKEN_MISSING } from '../errors.js'

// On a route whose onRequest hook requires a token, the request's identity
// is set before the handler runs. This says so to the type checker without a
// `!`, and fails closed (401) should a route ever be registered without the
// hook, instead of reading a property of null.

export function signedIn (request: { identity: AccessClaims | null }): AccessClaims {
  if (request.identity === null) throw new ERR_TOKEN_MISSING()
  return request.identity
}
