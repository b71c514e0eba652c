// The state the gateway shares between its instances: sessions (refresh-token
// families) and the revocation denylist. One interface, two implementations:
// `sqlite-store.ts` (an embedded SQLite file, the default without Redis;
// `:memory:` keeps nothing) and
// `redis-store.ts` (ioredis; every mutation that must be atomic is one Lua
// script registered with defineCommand).
//
// Refresh tokens never reach the store: only their handles do, `<sid>.<hex
// SHA-256 of the token>` (the bare hex for a token from before tokens carried
// their sid; see refresh-token.ts). The sid in front leads the Redis store to
// the session's slot; a handle's sid is always the session it belongs to.
// All times are milliseconds since the epoch.

export interface SessionInfo {
  sid: string
  sub: string
  createdAt: number
  lastUsedAt: number
  /** absolute end of the session (login + refreshTtl) */
  expiresAt: number
  userAgent: string
  address: string
}

export interface CreateSessionInput {
  sid: string
  sub: string
  refreshHash: string
  now: number
  /** login + refreshTtl */
  expiresAt: number
  /** a session unused for this long ends */
  idleTimeoutMs: number
  userAgent: string
  address: string
}

export interface RotateInput {
  presentedHash: string
  newHash: string
  /**
   * The new refresh token, encrypted with a key derived from the presented one
   * (see refresh-token.ts). Kept with the presented token's record so that a
   * concurrent tab presenting it inside the grace window gets the same
   * successor instead of a fork. The store cannot read it.
   */
  sealedNew: string
  now: number
  graceMs: number
  idleTimeoutMs: number
  /**
   * How long a session revoked for reuse stays on the denylist: as long as
   * its newest access token can verify (accessTtl + clock skew).
   */
  accessTtlMs: number
}

export type RotateOutcome =
  /** the presented token was current; newHash is current now */
  | { kind: 'rotated', session: SessionInfo }
  /** the presented token is the immediate predecessor of the current one, inside the grace window */
  | { kind: 'grace', session: SessionInfo, sealedCurrent: string }
  /** a rotated token came back outside the grace rules: the session is gone and its sid denylisted */
  | { kind: 'reuse', sid: string, sub: string }
  /** unknown, expired, idle too long, or of an ended session */
  | { kind: 'invalid' }

export type DenyEntry =
  | { kind: 'jti', value: string, expiresAt: number }
  | { kind: 'sid', value: string, expiresAt: number }
  /** every token of `value` issued (iat) before `before` (seconds since the epoch) */
  | { kind: 'sub', value: string, before: number, expiresAt: number }

/**
 * An entry with an empty value names nothing: an outside issuer's token has
 * no sid, and may have no jti, so an entry for '' would refuse every such
 * token. Stores neither write nor load one, and the mirror ignores one (an
 * older version could write it).
 */
export function namesNothing (entry: DenyEntry): boolean {
  return entry.value === ''
}

export interface SessionStore {
  readonly kind: 'sqlite' | 'redis'

  createSession (input: CreateSessionInput): Promise<void>
  rotate (input: RotateInput): Promise<RotateOutcome>
  /** The session a refresh token belongs to, if that session is still live. Does not rotate. */
  findByRefresh (refreshHash: string, now: number): Promise<SessionInfo | null>
  /** Ends one session (its whole refresh family). Returns it, or null when it was not live. */
  endSession (sid: string): Promise<SessionInfo | null>
  /**
   * Logout-all: denies every token of `sub` issued before `before` (seconds
   * since the epoch), ends every session of that user and denies the sid of
   * each one that was live, all until `expiresAt`. Returns the entries
   * written, the sub entry first. The embedded store does it in one
   * transaction. On Redis the sessions live in other slots than the
   * denylist, so the sub entry is written before any session ends: a
   * failure part-way leaves sessions whose access tokens are already
   * refused, and the client, answered 503, can try again. A write the
   * replicas did not confirm in time does not stop the rest (each is in
   * force on the primary); it is thrown (StoreUnconfirmedError) at the end.
   */
  endUser (sub: string, before: number, expiresAt: number): Promise<DenyEntry[]>
  listSessions (sub: string, now: number): Promise<SessionInfo[]>

  /** Writes a denylist entry and tells every instance (pub/sub for Redis); one that namesNothing is not written. */
  revoke (entry: DenyEntry): Promise<void>
  /** Every denylist entry still in force, to fill an instance's mirror. */
  loadDenylist (now: number): Promise<DenyEntry[]>
  /**
   * Entries revoked by any instance, this one included, as they happen;
   * `onFeed(false)` when the feed may have missed some (subscription lost),
   * `onFeed(true)` once it is live again, so the mirror reloads.
   * `onBeat()` says "the feed is proven current now": everything revoked
   * before this moment has reached `onEntry`. A store must beat well inside
   * `denylist.maxStaleness` while its feed is live, and only when it has
   * heard from its backend (a socket that merely looks open is no proof): the
   * mirror fails closed maxStaleness after the last beat or load.
   */
  subscribeDenylist (onEntry: (entry: DenyEntry) => void, onFeed: (live: boolean) => void, onBeat: () => void): Promise<void>

  /** Throws when the store cannot be reached. */
  ping (): Promise<void>
  close (): Promise<void>
}

/** Raised by a store when its backend cannot answer; mapped to 503 TG_STORE_UNAVAILABLE. */
export class StoreUnavailableError extends Error {
  constructor (message: string, options?: { cause: unknown }) {
    super(message, options)
    this.name = 'StoreUnavailableError'
  }
}

/**
 * A write the primary made but too few replicas confirmed in time (Redis
 * WAIT): in force now, yet a failover could still undo it. Still a 503 for
 * the client; callers that make several writes go on with the rest first,
 * so that a revocation is never left half done because a replica lagged.
 */
export class StoreUnconfirmedError extends StoreUnavailableError {
  constructor (message: string, options?: { cause: unknown }) {
    super(message, options)
    this.name = 'StoreUnconfirmedError'
  }
}

/**
 * Collects unconfirmed writes: `run` awaits a write and notes a
 * StoreUnconfirmedError instead of throwing it; `settle` throws the first
 * one noted, once every write has been made.
 */
export class UnconfirmedWrites {
  #first: StoreUnconfirmedError | undefined

  async run<T> (write: () => Promise<T>): Promise<T | undefined> {
    try {
      return await write()
    } catch (err) {
      if (!(err instanceof StoreUnconfirmedError)) throw err
      this.#first ??= err
      return undefined
    }
  }

  settle (): void {
    if (this.#first !== undefined) throw this.#first
  }
}
