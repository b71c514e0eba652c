import type WebSocket from 'ws'
import type { DenyEntry } from '../sessions/session-store.js'

// Every proxied WebSocket remembers the access token it was opened with, so
// the socket ends when that token does: revoked (logout, logout-all, reuse,
// admin by jti/sid/sub; learnt through the denylist mirror on whichever
// instance holds the socket) or expired. Both sides are closed with 1008
// (policy violation) and a reason that names no token, user or session.

/** What the registry needs of a token. */
export interface SocketClaims {
  jti: string
  sid: string
  sub: string
  /** seconds since the epoch */
  iat: number
  /** seconds since the epoch */
  exp: number
}

/** route_changed: the gateway holding the socket closed (a reload replaced it, or shutdown) */
export type SocketCloseReason = 'revoked' | 'expired' | 'route_changed'

export const POLICY_VIOLATION = 1008
/** The close reason clients see; the same words whatever ended the session. */
export const SESSION_ENDED = 'session ended'

interface Held {
  claims: SocketClaims
  sockets: WebSocket[]
  timer: NodeJS.Timeout | null
}

export interface WebSocketSessionsOptions {
  closeOnExpiry: boolean
  /** told once per closed link, for metrics */
  onClosed?: (reason: SocketCloseReason) => void
}

export class WebSocketSessions {
  readonly #opts: WebSocketSessionsOptions
  readonly #held = new Set<Held>()

  constructor (opts: WebSocketSessionsOptions) {
    this.#opts = opts
  }

  get size (): number {
    return this.#held.size
  }

  /** Tracks one proxied link (client side and upstream side) until either side closes. */
  add (claims: SocketClaims, sockets: WebSocket[], now = Date.now()): void {
    const held: Held = { claims, sockets, timer: null }
    this.#held.add(held)
    if (this.#opts.closeOnExpiry) {
      // setTimeout takes at most 2^31-1 ms; a token living longer is re-checked then.
      const arm = (): void => {
        const left = claims.exp * 1000 - Date.now()
        if (left <= 0) { this.#close(held, 'expired'); return }
        held.timer = setTimeout(arm, Math.min(left, 2 ** 31 - 1))
        held.timer.unref()
      }
      if (claims.exp * 1000 <= now) { this.#close(held, 'expired'); return }
      arm()
    }
    for (const socket of sockets) socket.once('close', () => this.#forget(held))
  }

  /** Closes every link whose token a denylist entry matches, as authenticate would refuse it. */
  revoke (entry: DenyEntry): void {
    for (const held of this.#held) {
      const c = held.claims
      const matches = entry.kind === 'jti'
        ? c.jti === entry.value
        : entry.kind === 'sid'
          ? c.sid === entry.value
          : c.sub === entry.value && c.iat < entry.before
      if (matches) this.#close(held, 'revoked')
    }
  }

  /** Closes every link: the gateway that applied the routes' policies is going away. */
  closeAll (reason: SocketCloseReason): void {
    for (const held of this.#held) this.#close(held, reason)
  }

  #forget (held: Held): void {
    if (!this.#held.delete(held)) return
    if (held.timer !== null) clearTimeout(held.timer)
  }

  #close (held: Held, reason: SocketCloseReason): void {
    if (!this.#held.has(held)) return
    this.#forget(held)
    for (const socket of held.sockets) {
      if (socket.readyState === socket.CONNECTING) socket.terminate()
      else socket.close(POLICY_VIOLATION, SESSION_ENDED)
      // A peer that never answers the close frame is cut off.
      setTimeout(() => { if (socket.readyState !== socket.CLOSED) socket.terminate() }, 2000).unref()
    }
    this.#opts.onClosed?.(reason)
  }
}
