import {
  StoreUnavailableError,
  type CreateSessionInput,
  type DenyEntry,
  type RotateInput,
  type RotateOutcome,
  type SessionInfo,
  type SessionStore
} from './session-store.js'

// The store of a single gateway instance. Every method runs to completion
// without awaiting, so each one is as atomic as a Lua script is in Redis.

export const DEFAULT_SWEEP_INTERVAL_MS = 60_000

/** The feed is in process and cannot lag; the beat only satisfies the contract. */
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 100

export interface MemoryStoreOptions {
  sweepIntervalMs?: number
  /** how often subscribers hear onBeat; keep it well under denylist.maxStaleness */
  heartbeatIntervalMs?: number
}

interface StoredSession {
  info: SessionInfo
  current: string
  idleTimeoutMs: number
}

interface StoredToken {
  sid: string
  /** the session's absolute end: a rotated token must be recognised as reuse until then */
  expiresAt: number
  rotation?: { successor: string, rotatedAt: number, sealed: string }
}

interface FeedListener { onEntry: (entry: DenyEntry) => void, onBeat: () => void }

export class MemoryStore implements SessionStore {
  readonly kind = 'memory' as const
  readonly #sessions = new Map<string, StoredSession>()
  readonly #tokens = new Map<string, StoredToken>()
  readonly #sidsBySub = new Map<string, Set<string>>()
  /** keyed by `${kind}:${value}` so a second revocation of the same thing replaces the first */
  readonly #deny = new Map<string, DenyEntry>()
  readonly #listeners = new Set<FeedListener>()
  readonly #sweepTimer: NodeJS.Timeout
  readonly #beatTimer: NodeJS.Timeout
  #closed = false

  constructor (opts: MemoryStoreOptions = {}) {
    this.#sweepTimer = setInterval(() => this.sweep(Date.now()), opts.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS)
    this.#sweepTimer.unref()
    this.#beatTimer = setInterval(() => { for (const l of this.#listeners) l.onBeat() }, opts.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS)
    this.#beatTimer.unref()
  }

  /** How many records are held, for tests that check nothing is kept past its life. */
  get counts (): { sessions: number, tokens: number, users: number, deny: number } {
    return { sessions: this.#sessions.size, tokens: this.#tokens.size, users: this.#sidsBySub.size, deny: this.#deny.size }
  }

  async createSession (input: CreateSessionInput): Promise<void> {
    this.#assertOpen()
    this.#sessions.set(input.sid, {
      info: {
        sid: input.sid,
        sub: input.sub,
        createdAt: input.now,
        lastUsedAt: input.now,
        expiresAt: input.expiresAt,
        userAgent: input.userAgent,
        address: input.address
      },
      current: input.refreshHash,
      idleTimeoutMs: input.idleTimeoutMs
    })
    this.#tokens.set(input.refreshHash, { sid: input.sid, expiresAt: input.expiresAt })
    let sids = this.#sidsBySub.get(input.sub)
    if (sids === undefined) {
      sids = new Set()
      this.#sidsBySub.set(input.sub, sids)
    }
    sids.add(input.sid)
  }

  async rotate (input: RotateInput): Promise<RotateOutcome> {
    this.#assertOpen()
    const { presentedHash, now } = input
    const token = this.#tokens.get(presentedHash)
    if (token === undefined) return { kind: 'invalid' }
    const session = this.#sessions.get(token.sid)
    if (session === undefined || !isLive(session, now, input.idleTimeoutMs)) return { kind: 'invalid' }

    if (session.current === presentedHash) {
      token.rotation = { successor: input.newHash, rotatedAt: now, sealed: input.sealedNew }
      this.#tokens.set(input.newHash, { sid: session.info.sid, expiresAt: session.info.expiresAt })
      session.current = input.newHash
      touch(session, now, input.idleTimeoutMs)
      return { kind: 'rotated', session: { ...session.info } }
    }

    const rotation = token.rotation
    if (rotation !== undefined && rotation.successor === session.current && input.graceMs > 0 &&
        now - rotation.rotatedAt <= input.graceMs) {
      touch(session, now, input.idleTimeoutMs)
      return { kind: 'grace', session: { ...session.info }, sealedCurrent: rotation.sealed }
    }

    const { sid, sub } = session.info
    this.#dropSession(session)
    this.#writeDeny({ kind: 'sid', value: sid, expiresAt: now + input.accessTtlMs })
    return { kind: 'reuse', sid, sub }
  }

  async findByRefresh (refreshHash: string, now: number): Promise<SessionInfo | null> {
    this.#assertOpen()
    const token = this.#tokens.get(refreshHash)
    if (token === undefined) return null
    const session = this.#sessions.get(token.sid)
    // Only the current token names its session: a rotated one proves nothing
    // a thief could not also prove.
    if (session === undefined || session.current !== refreshHash || !isLive(session, now)) return null
    return { ...session.info }
  }

  async endSession (sid: string): Promise<SessionInfo | null> {
    this.#assertOpen()
    const session = this.#sessions.get(sid)
    if (session === undefined) return null
    this.#dropSession(session)
    return isLive(session, Date.now()) ? { ...session.info } : null
  }

  async endUserSessions (sub: string): Promise<string[]> {
    this.#assertOpen()
    const ended: string[] = []
    const now = Date.now()
    for (const sid of this.#sidsBySub.get(sub) ?? []) {
      const session = this.#sessions.get(sid)
      if (session === undefined) continue
      this.#dropSession(session)
      if (isLive(session, now)) ended.push(sid)
    }
    this.#sidsBySub.delete(sub)
    return ended
  }

  async listSessions (sub: string, now: number): Promise<SessionInfo[]> {
    this.#assertOpen()
    const list: SessionInfo[] = []
    for (const sid of this.#sidsBySub.get(sub) ?? []) {
      const session = this.#sessions.get(sid)
      if (session !== undefined && isLive(session, now)) list.push({ ...session.info })
    }
    return list.sort((a, b) => a.createdAt - b.createdAt)
  }

  async revoke (entry: DenyEntry): Promise<void> {
    this.#assertOpen()
    this.#writeDeny(entry)
  }

  async loadDenylist (now: number): Promise<DenyEntry[]> {
    this.#assertOpen()
    return [...this.#deny.values()].filter((e) => e.expiresAt > now).map((e) => ({ ...e }))
  }

  /** Always live: revocations reach the listener before revoke() returns. */
  async subscribeDenylist (onEntry: (entry: DenyEntry) => void, _onFeed: (live: boolean) => void, onBeat: () => void): Promise<void> {
    this.#assertOpen()
    this.#listeners.add({ onEntry, onBeat })
  }

  async ping (): Promise<void> {
    this.#assertOpen()
  }

  async close (): Promise<void> {
    this.#closed = true
    clearInterval(this.#sweepTimer)
    clearInterval(this.#beatTimer)
    this.#listeners.clear()
  }

  /** Forgets whatever has outlived its use. Runs on a timer; public so tests can run it at a chosen time. */
  sweep (now: number): void {
    for (const session of this.#sessions.values()) {
      if (!isLive(session, now)) this.#dropSession(session)
    }
    for (const [hash, token] of this.#tokens) {
      if (token.expiresAt <= now || !this.#sessions.has(token.sid)) this.#tokens.delete(hash)
    }
    for (const [key, entry] of this.#deny) {
      if (entry.expiresAt <= now) this.#deny.delete(key)
    }
  }

  #dropSession (session: StoredSession): void {
    const { sid, sub } = session.info
    this.#sessions.delete(sid)
    // Ancestors stay until the sweep: they point at a session that no longer exists.
    this.#tokens.delete(session.current)
    const sids = this.#sidsBySub.get(sub)
    sids?.delete(sid)
    if (sids?.size === 0) this.#sidsBySub.delete(sub)
  }

  #writeDeny (entry: DenyEntry): void {
    const key = `${entry.kind}:${entry.value}`
    let stored: DenyEntry = { ...entry }
    const previous = this.#deny.get(key)
    if (previous !== undefined) {
      // A revocation is never narrowed by a later one.
      stored.expiresAt = Math.max(previous.expiresAt, entry.expiresAt)
      if (previous.kind === 'sub' && stored.kind === 'sub') {
        stored = { ...stored, before: Math.max(previous.before, stored.before) }
      }
    }
    this.#deny.set(key, stored)
    for (const listener of this.#listeners) listener.onEntry({ ...stored })
  }

  #assertOpen (): void {
    if (this.#closed) throw new StoreUnavailableError('the in-process store is closed')
  }
}

function isLive (session: StoredSession, now: number, idleTimeoutMs = session.idleTimeoutMs): boolean {
  return now < session.info.expiresAt && now < session.info.lastUsedAt + idleTimeoutMs
}

function touch (session: StoredSession, now: number, idleTimeoutMs: number): void {
  session.info.lastUsedAt = now
  session.idleTimeoutMs = idleTimeoutMs
}
