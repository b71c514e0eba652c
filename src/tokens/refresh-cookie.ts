import type { GatewayConfig } from '../config/schema.js'

// Where the refresh token lives in a browser: an HTTP-only cookie scoped to
// the auth endpoints only, never sent to a proxied route. When secure, the
// `__Secure-` prefix makes browsers refuse it from plain http or from a
// sub-domain; `__Host-` would force Path=/, which would send it everywhere.

export const REFRESH_COOKIE_PATH = '/auth'

export interface RefreshCookie {
  name: string
  options: {
    httpOnly: true
    secure: boolean
    sameSite: 'strict'
    path: string
    maxAge?: number
  }
}

export function refreshCookie (cookie: GatewayConfig['auth']['cookie']): RefreshCookie {
  return {
    name: cookie.secure ? `__Secure-${cookie.name}` : cookie.name,
    options: { httpOnly: true, secure: cookie.secure, sameSite: 'strict', path: REFRESH_COOKIE_PATH }
  }
}

/** Every name the gateway's cookie can have, so none of them ever reaches an upstream. */
export function gatewayCookieNames (cookie: GatewayConfig['auth']['cookie']): string[] {
  return [cookie.name, `__Secure-${cookie.name}`, `__Host-${cookie.name}`]
}
