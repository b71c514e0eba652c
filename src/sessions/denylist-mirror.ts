import { namesNothing, type DenyEntry, type SessionStore } from './session-store.js'

// Every instance keeps the whole denylist in memory so that checking a token
// costs a Map lookup, never a Redis round trip. The store's feed keeps it
// current, and the store's beats prove it is: an open socket is no proof (a
// partition that drops packets without a FIN or RST leaves it looking open
// for minutes). The mirror is served for maxStalenessMs after the last proof
// (a beat, or the start of a load that succeeded) — revocations are rare, a
// blip should not be an outage — after which callers must fail closed until a
// reload after the feed's return.

export const DEFAULT_SWEEP_INTERVAL_MS = 60_000
/** How often a mirror whose feed is live but whose reload failed tries again. */
export const DEFAULT_RELOAD_RETRY_MS = 1000

/**
 * How often a store should beat for a mirror of this maxStaleness: several
 * beats per staleness window, so one lost or slow beat is not an outage, but
 * no more than one a second on a long window.
 */
export function heartbeatIntervalFor (maxStalenessMs: number): number {
  return Math.max(10, Math.min(1000, Math.floor(maxStalenessMs / 4)))
}

export interface DenylistMirrorLog {
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
}

export interface DenylistMirrorOptions {
  maxStalenessMs: number
  log?: DenylistMirrorLog
  sweepIntervalMs?: number
  reloadRetryMs?: number
}

export interface RevocableClaims {
  jti: string
  sid: string
  sub: string
  /** seconds since the epoch */
  iat: number
}

interface SubEntry { before: number, expiresAt: number }

/**
 * Whether a user's "revoked before" cut-off refuses a token. iat has
 * one-second resolution. Our tokens issued earlier in the revocation's own
 * second are caught by their sessions' sid entries, so one issued after it (a
 * login right after) still works. A token with no session (an outside
 * issuer's) has nothing else to catch it: from that second it is refused,
 * including one minted later in the second.
 */
function cutOffRefuses (before: number, c: RevocableClaims): boolean {
  return c.iat < before || (c.sid === '' && c.iat === before)
}

/**
 * Whether one entry, still in force at `now`, refuses a token: the rule
 * isRevoked applies, for one entry rather than the whole mirror, for whoever
 * must act on an entry as it arrives (the WebSocket registry closing the
 * sockets it matches).
 */
export function entryRefuses (entry: DenyEntry, c: RevocableClaims, now: number): boolean {
  if (entry.expiresAt <= now) return false
  switch (entry.kind) {
    case 'jti': return c.jti === entry.value
    case 'sid': return c.sid === entry.value
    case 'sub': return c.sub === entry.value && cutOffRefuses(entry.before, c)
  }
}

export class DenylistMirror {
  readonly #store: SessionStore
  readonly #opts: DenylistMirrorOptions
  readonly #jti = new Map<string, number>()
  readonly #sid = new Map<string, number>()
  readonly #sub = new Map<string, SubEntry>()
  #feedLive = false
  /** bumped each time the feed (re)starts: only a load begun after that covers what the gap missed */
  #feedEpoch = 0
  #syncedEpoch = -1
  /** when the mirror was last proven to hold every revocation made before then */
  #provenAt: number | null = null
  #reloading = false
  #timers: NodeJS.Timeout[] = []
  #stopped = false
  readonly #appliedListeners = new Set<(entry: DenyEntry) => void>()

  constructor (store: SessionStore, opts: DenylistMirrorOptions) {
    this.#store = store
    this.#opts = opts
  }

  get size (): number {
    return this.#jti.size + this.#sid.size + this.#sub.size
  }

  /**
   * Subscribes, then loads, so nothing revoked in between is missed. Rejects
   * when the store cannot be reached, but keeps trying in the background:
   * the mirror becomes trusted once the feed is live and a load succeeded.
   */
  async start (): Promise<void> {
    if (this.#timers.length > 0 || this.#stopped) throw new Error('a DenylistMirror starts once')
    const sweep = setInterval(() => this.sweep(Date.now()), this.#opts.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS)
    const retry = setInterval(() => { this.#retryReload() }, this.#opts.reloadRetryMs ?? DEFAULT_RELOAD_RETRY_MS)
    sweep.unref()
    retry.unref()
    this.#timers.push(sweep, retry)

    await this.#store.subscribeDenylist(
      (entry) => { if (!this.#stopped) this.apply(entry) },
      (live) => this.#onFeed(live),
      () => this.#onBeat(Date.now())
    )
    this.#feedLive = true
    this.#feedEpoch++
    await this.#reload()
  }

  stop (): void {
    this.#stopped = true
    for (const timer of this.#timers) clearInterval(timer)
    this.#timers = []
  }

  /**
   * Calls `listener` with every entry applied from now on (local, fed or
   * reloaded), e.g. to close the WebSockets it matches; returns the unsubscribe.
   */
  onApplied (listener: (entry: DenyEntry) => void): () => void {
    this.#appliedListeners.add(listener)
    return () => { this.#appliedListeners.delete(listener) }
  }

  /** Applies an entry locally at once; never narrows an entry already held. One that namesNothing is dropped. */
  apply (entry: DenyEntry): void {
    if (namesNothing(entry)) return
    this.#record(entry)
    for (const listener of this.#appliedListeners) listener(entry)
  }

  #record (entry: DenyEntry): void {
    switch (entry.kind) {
      case 'jti':
        this.#jti.set(entry.value, Math.max(entry.expiresAt, this.#jti.get(entry.value) ?? 0))
        break
      case 'sid':
        this.#sid.set(entry.value, Math.max(entry.expiresAt, this.#sid.get(entry.value) ?? 0))
        break
      case 'sub': {
        const held = this.#sub.get(entry.value)
        this.#sub.set(entry.value, {
          before: Math.max(entry.before, held?.before ?? 0),
          expiresAt: Math.max(entry.expiresAt, held?.expiresAt ?? 0)
        })
        break
      }
    }
  }

  isRevoked (c: RevocableClaims, now: number): boolean {
    // An outside issuer's token has no sid ('') and may have no jti: '' is
    // never looked up, so nothing can ever match every such token.
    const jti = c.jti === '' ? undefined : this.#jti.get(c.jti)
    if (jti !== undefined) {
      if (jti > now) return true
      this.#jti.delete(c.jti)
    }
    const sid = c.sid === '' ? undefined : this.#sid.get(c.sid)
    if (sid !== undefined) {
      if (sid > now) return true
      this.#sid.delete(c.sid)
    }
    const sub = this.#sub.get(c.sub)
    if (sub !== undefined) {
      if (sub.expiresAt > now) return cutOffRefuses(sub.before, c)
      this.#sub.delete(c.sub)
    }
    return false
  }

  /** The feed is live and a load since its last (re)start has landed; beats now count as proof. */
  get inSync (): boolean {
    return this.#feedLive && this.#syncedEpoch === this.#feedEpoch
  }

  isTrusted (now: number): boolean {
    return this.#provenAt !== null && now - this.#provenAt <= this.#opts.maxStalenessMs
  }

  /** Drops expired entries. Runs on a timer; public so tests can run it at a chosen time. */
  sweep (now: number): void {
    for (const [value, expiresAt] of this.#jti) if (expiresAt <= now) this.#jti.delete(value)
    for (const [value, expiresAt] of this.#sid) if (expiresAt <= now) this.#sid.delete(value)
    for (const [value, entry] of this.#sub) if (entry.expiresAt <= now) this.#sub.delete(value)
  }

  #onFeed (live: boolean): void {
    if (this.#stopped) return
    if (!live) {
      this.#feedLive = false
      this.#opts.log?.warn({ maxStalenessMs: this.#opts.maxStalenessMs }, 'denylist feed lost; serving the mirror until it is stale')
      return
    }
    // Until the reload lands, the gap's revocations are unknown: the
    // staleness clock keeps running from the last proof, and beats are not
    // counted (the epoch no longer matches the synced one).
    this.#resync()
  }

  #onBeat (now: number): void {
    if (this.#stopped || !this.#feedLive || this.#syncedEpoch !== this.#feedEpoch) return
    if (this.#provenAt !== null && now - this.#provenAt <= this.#opts.maxStalenessMs) {
      this.#provenAt = Math.max(this.#provenAt, now)
      return
    }
    // A beat after a silence longer than maxStaleness: the feed came back
    // without ever saying it was gone (a frozen link that thawed). Whatever
    // the store promises about ordering, reload rather than trust the gap.
    this.#opts.log?.warn({ maxStalenessMs: this.#opts.maxStalenessMs }, 'denylist feed heard again after a silence; reloading')
    this.#resync()
  }

  #resync (): void {
    this.#feedLive = true
    this.#feedEpoch++
    this.#reload().catch((err: unknown) => {
      this.#opts.log?.warn({ err }, 'denylist reload failed; retrying')
    })
  }

  #retryReload (): void {
    if (this.#stopped || this.#reloading || !this.#feedLive || this.#syncedEpoch === this.#feedEpoch) return
    this.#reload().catch((err: unknown) => {
      this.#opts.log?.warn({ err }, 'denylist reload failed; retrying')
    })
  }

  async #reload (): Promise<void> {
    const epoch = this.#feedEpoch
    // The feed was live before the load began, so everything revoked before
    // this moment is either in the load or already delivered.
    const startedAt = Date.now()
    this.#reloading = true
    try {
      const entries = await this.#store.loadDenylist(Date.now())
      for (const entry of entries) this.apply(entry)
    } finally {
      this.#reloading = false
    }
    if (this.#stopped || !this.#feedLive || epoch !== this.#feedEpoch) return
    this.#syncedEpoch = epoch
    this.#provenAt = Math.max(this.#provenAt ?? 0, startedAt)
  }
}
