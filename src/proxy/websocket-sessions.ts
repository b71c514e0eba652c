import type WebSocket from 'ws'
import type { DenyEntry } from '../sessions/session-store.js'
import { entryRefuses, type RevocableClaims } from '../sessions/denylist-mirror.js'

// Every proxied WebSocket remembers the access token it was opened with, so
// the socket ends when that token does: revoked (logout, logout-all, reuse,
// admin by jti/sid/sub; learnt through the denylist mirror on whichever
// instance holds the socket) or expired. Both sides are closed with 1008
// (policy violation) and a reason that names no token, user or session.
//
// It also remembers under which route policy the socket was let in. A hot
// reload builds a new gateway while the old one still holds the sockets: the
// new one takes over those whose route policy it serves unchanged, and the
// ones whose route it changed or dropped are closed. So the registry lives as
// long as the process (src/server.ts), not as long as one gateway.

/** What the registry needs of a token: what the denylist matches, and when it expires. */
export interface SocketClaims extends RevocableClaims {
  /** seconds since the epoch */
  exp: number
}

/**
 * revoked: its token was revoked; expired: its token expired;
 * route_changed: a reload changed or removed its route's policy;
 * shutdown: the gateway stopped.
 */
export type SocketCloseReason = 'revoked' | 'expired' | 'route_changed' | 'shutdown'
export const SOCKET_CLOSE_REASONS: readonly SocketCloseReason[] = ['revoked', 'expired', 'route_changed', 'shutdown']

export const POLICY_VIOLATION = 1008
/** The close reason clients see; the same words whatever ended the session. */
export const SESSION_ENDED = 'session ended'

/** Under what a link was let in. */
export interface LinkPolicy {
  /** the route's policy, as a comparable key (plugins/proxy-routes.ts) */
  route: string
  /** the gateway that let it in (or took it over) */
  owner: object
  closeOnExpiry: boolean
}

interface Held {
  claims: SocketClaims
  sockets: WebSocket[]
  policy: LinkPolicy
  timer: NodeJS.Timeout | null
}

interface Generation {
  owner: object
  routes: ReadonlySet<string>
}

export interface WebSocketSessionsOptions {
  /** told once per closed link, for metrics */
  onClosed?: (reason: SocketCloseReason) => void
}

export class WebSocketSessions {
  readonly #opts: WebSocketSessionsOptions
  readonly #held = new Set<Held>()
  /** gateways serving routes, oldest first: the last one is the one a reload put in */
  readonly #generations: Generation[] = []

  constructor (opts: WebSocketSessionsOptions = {}) {
    this.#opts = opts
  }

  get size (): number {
    return this.#held.size
  }

  /** Tracks one proxied link (client side and upstream side) until either side closes. */
  add (claims: SocketClaims, sockets: WebSocket[], policy: LinkPolicy, now = Date.now()): void {
    const held: Held = { claims, sockets, policy: { ...policy }, timer: null }
    this.#held.add(held)
    if (policy.closeOnExpiry) {
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

  /**
   * Ends a link whose token was revoked before it could be tracked (the
   * revocation landed while its upstream side was opening); counted as revoked.
   */
  refuse (sockets: WebSocket[]): void {
    this.#end(sockets)
    this.#opts.onClosed?.('revoked')
  }

  /**
   * Closes every link whose token a denylist entry matches. The rule is the
   * mirror's own (entryRefuses), so a socket ends exactly when authenticate
   * would refuse its token.
   */
  revoke (entry: DenyEntry, now = Date.now()): void {
    for (const held of this.#held) if (entryRefuses(entry, held.claims, now)) this.#close(held, 'revoked')
  }

  /**
   * `owner` serves these route policies from now on (a reload put it in):
   * links on a route it serves unchanged become its own; links on a route it
   * changed or dropped are closed now, not when the old gateway has drained.
   */
  takeOver (owner: object, routes: ReadonlySet<string>): void {
    this.#generations.push({ owner, routes })
    for (const held of this.#held) {
      if (routes.has(held.policy.route)) held.policy.owner = owner
      else this.#close(held, 'route_changed')
    }
  }

  /**
   * `owner` is closing. Its links pass to the newest gateway if that one
   * serves their route unchanged; otherwise they end: `route_changed` when
   * another gateway replaced this one, `shutdown` when none is left.
   */
  release (owner: object): void {
    const at = this.#generations.findIndex((g) => g.owner === owner)
    if (at !== -1) this.#generations.splice(at, 1)
    const newest = this.#generations.at(-1)
    for (const held of this.#held) {
      if (held.policy.owner !== owner) continue
      if (newest === undefined) this.#close(held, 'shutdown')
      else if (newest.routes.has(held.policy.route)) held.policy.owner = newest.owner
      else this.#close(held, 'route_changed')
    }
  }

  #forget (held: Held): void {
    if (!this.#held.delete(held)) return
    if (held.timer !== null) clearTimeout(held.timer)
  }

  #close (held: Held, reason: SocketCloseReason): void {
    if (!this.#held.has(held)) return
    this.#forget(held)
    this.#end(held.sockets)
    this.#opts.onClosed?.(reason)
  }

  #end (sockets: WebSocket[]): void {
    for (const socket of sockets) {
      if (socket.readyState === socket.CONNECTING) socket.terminate()
      else socket.close(POLICY_VIOLATION, SESSION_ENDED)
      // A peer that never answers the close frame is cut off.
      setTimeout(() => { if (socket.readyState !== socket.CLOSED) socket.terminate() }, 2000).unref()
    }
  }
}
