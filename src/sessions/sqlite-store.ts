import { chmodSync, closeSync, mkdirSync, openSync, statSync } from 'node:fs'
import { dirname } from 'node:path'
import { DatabaseSync, type StatementSync } from 'node:sqlite'
import {
  namesNothing,
  StoreUnavailableError,
  type CreateSessionInput,
  type DenyEntry,
  type RotateInput,
  type RotateOutcome,
  type SessionInfo,
  type SessionStore
} from './session-store.js'
import { StoreOpenError } from './sqlite-errors.js'
import { SCHEMA_VERSION, migrate } from './sqlite-schema.js'

// The embedded store: one SQLite file (node:sqlite, no native addon) shared by
// every process that opens it — the workers of one gateway, or two gateways
// started on the same file by mistake, which then share it correctly instead
// of diverging. Every change that must be atomic is one BEGIN IMMEDIATE
// transaction, so a crash mid-rotation either rotated or did not.
//
// The hot path never reads the file: the denylist mirror is filled by
// loadDenylist() and kept current by the feed below. Other processes' writes
// are seen by polling PRAGMA data_version (it changes only when another
// connection commits), then reading deny rows past the last id seen.

export const DEFAULT_SWEEP_INTERVAL_MS = 60_000
export const DEFAULT_FEED_INTERVAL_MS = 25
/** how long a writer waits for another process's transaction before the store answers 503 */
export const DEFAULT_BUSY_TIMEOUT_MS = 2_000

export interface SqliteStoreOptions {
  /** a path, or ":memory:" to keep nothing */
  file: string
  sweepIntervalMs?: number
  feedIntervalMs?: number
  busyTimeoutMs?: number
  /** told once when writes start failing (disk full, file read-only) and once when they work again */
  log?: OutageLog
}

export interface OutageLog {
  error (obj: object, msg: string): void
  info (obj: object, msg: string): void
}

interface SessionRow {
  sid: string
  sub: string
  created_at: number
  last_used_at: number
  expires_at: number
  idle_ms: number
  user_agent: string
  address: string
  current_hash: string
}

interface TokenRow {
  sid: string
  successor: string | null
  rotated_at: number | null
  sealed: string | null
}

interface DenyRow {
  id: number
  kind: string
  value: string
  before: number | null
  expires_at: number
}

type FeedListener = (entry: DenyEntry) => void
type FeedState = (live: boolean) => void
type Beat = () => void

export class SqliteStore implements SessionStore {
  readonly kind = 'sqlite' as const
  readonly file: string
  readonly #db: DatabaseSync
  readonly #stmts: ReturnType<typeof prepare>
  readonly #listeners = new Set<{ onEntry: FeedListener, onFeed: FeedState, onBeat?: Beat }>()
  readonly #sweepTimer: NodeJS.Timeout
  #feedTimer: NodeJS.Timeout | null = null
  readonly #feedIntervalMs: number
  #dataVersion = -1
  #lastDenyId = 0
  #feedLive = true
  #closed = false
  /** a write failed and none has succeeded since */
  #writesFailing = false
  readonly #log: OutageLog | undefined
  /** the file opened, by device and inode: a path that names another file (replaced, removed) is not ours */
  readonly #identity: { dev: number, ino: number } | null
  #replaced = false

  constructor (opts: SqliteStoreOptions) {
    this.file = opts.file
    this.#log = opts.log
    this.#feedIntervalMs = opts.feedIntervalMs ?? DEFAULT_FEED_INTERVAL_MS
    this.#db = openDatabase(opts.file, opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS)
    this.#stmts = prepare(this.#db)
    this.#identity = opts.file === ':memory:' ? null : fileIdentity(opts.file)
    this.#lastDenyId = this.#stmts.maxDenyId.get()?.id as number | null ?? 0
    this.#sweepTimer = setInterval(() => {
      try { this.sweep(Date.now()) } catch { /* the next sweep retries; a failing file shows in every request anyway */ }
    }, opts.sweepIntervalMs ?? DEFAULT_SWEEP_INTERVAL_MS)
    this.#sweepTimer.unref()
  }

  /** How many rows are held, for tests that check nothing is kept past its life. */
  get counts (): { sessions: number, tokens: number, deny: number } {
    const count = (table: string): number => Number((this.#db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n)
    return { sessions: count('sessions'), tokens: count('tokens'), deny: count('deny') }
  }

  async createSession (input: CreateSessionInput): Promise<void> {
    this.#write(() => {
      this.#stmts.insertSession.run(input.sid, input.sub, input.now, input.now, input.expiresAt, input.idleTimeoutMs, input.userAgent, input.address, input.refreshHash)
      this.#stmts.insertToken.run(input.refreshHash, input.sid, input.expiresAt)
    })
  }

  async rotate (input: RotateInput): Promise<RotateOutcome> {
    const { presentedHash, now } = input
    const { outcome, denied } = this.#write((): { outcome: RotateOutcome, denied?: DenyEntry } => {
      const token = this.#stmts.getToken.get(presentedHash) as TokenRow | undefined
      if (token === undefined) return { outcome: { kind: 'invalid' } }
      const session = this.#stmts.getSession.get(token.sid) as SessionRow | undefined
      if (session === undefined || !isLive(session, now, input.idleTimeoutMs)) return { outcome: { kind: 'invalid' } }

      if (session.current_hash === presentedHash) {
        this.#stmts.markRotated.run(input.newHash, now, input.sealedNew, presentedHash)
        this.#stmts.insertToken.run(input.newHash, session.sid, session.expires_at)
        this.#stmts.setCurrent.run(input.newHash, now, input.idleTimeoutMs, session.sid)
        return { outcome: { kind: 'rotated', session: { ...info(session), lastUsedAt: now } } }
      }

      if (token.successor !== null && token.successor === session.current_hash && input.graceMs > 0 &&
          token.rotated_at !== null && now - token.rotated_at <= input.graceMs && token.sealed !== null) {
        this.#stmts.touch.run(now, input.idleTimeoutMs, session.sid)
        return { outcome: { kind: 'grace', session: { ...info(session), lastUsedAt: now }, sealedCurrent: token.sealed } }
      }

      this.#dropSession(session.sid)
      const entry = this.#writeDeny({ kind: 'sid', value: session.sid, expiresAt: now + input.accessTtlMs })
      return { outcome: { kind: 'reuse', sid: session.sid, sub: session.sub }, denied: entry }
    })
    if (denied !== undefined) this.#publish(denied)
    return outcome
  }

  async findByRefresh (refreshHash: string, now: number): Promise<SessionInfo | null> {
    return this.#read(() => {
      const token = this.#stmts.getToken.get(refreshHash) as TokenRow | undefined
      if (token === undefined) return null
      const session = this.#stmts.getSession.get(token.sid) as SessionRow | undefined
      // Only the current token names its session: a rotated one proves nothing
      // a thief could not also prove.
      if (session === undefined || session.current_hash !== refreshHash || !isLive(session, now)) return null
      return info(session)
    })
  }

  async endSession (sid: string): Promise<SessionInfo | null> {
    return this.#write(() => {
      const session = this.#stmts.getSession.get(sid) as SessionRow | undefined
      if (session === undefined) return null
      this.#dropSession(sid)
      return isLive(session, Date.now()) ? info(session) : null
    })
  }

  async endUser (sub: string, before: number, expiresAt: number): Promise<DenyEntry[]> {
    // One transaction: a crash cannot leave the user denied but a session
    // still able to refresh, nor a session ended without its sid denied.
    const written = this.#write(() => {
      const now = Date.now()
      const entries = [this.#writeDeny({ kind: 'sub', value: sub, before, expiresAt })]
      for (const row of this.#stmts.sessionsOf.all(sub) as unknown as SessionRow[]) {
        this.#dropSession(row.sid)
        if (isLive(row, now)) entries.push(this.#writeDeny({ kind: 'sid', value: row.sid, expiresAt }))
      }
      return entries
    })
    for (const entry of written) this.#publish(entry)
    return written
  }

  async listSessions (sub: string, now: number): Promise<SessionInfo[]> {
    return this.#read(() => {
      const rows = this.#stmts.sessionsOf.all(sub) as unknown as SessionRow[]
      return rows.filter((row) => isLive(row, now)).map(info).sort((a, b) => a.createdAt - b.createdAt)
    })
  }

  async revoke (entry: DenyEntry): Promise<void> {
    if (namesNothing(entry)) return
    const stored = this.#write(() => this.#writeDeny(entry))
    this.#publish(stored)
  }

  async loadDenylist (now: number): Promise<DenyEntry[]> {
    return this.#read(() => (this.#stmts.liveDeny.all(now) as unknown as DenyRow[]).map(toEntry).filter((e) => !namesNothing(e)))
  }

  /**
   * Revocations made through this connection reach the listener before
   * revoke() returns; those of other processes within one feed interval.
   * `onBeat` after every poll that succeeded: the feed is proven current.
   */
  async subscribeDenylist (onEntry: FeedListener, onFeed: FeedState, onBeat?: Beat): Promise<void> {
    this.#assertOpen()
    this.#listeners.add({ onEntry, onFeed, ...(onBeat === undefined ? {} : { onBeat }) })
    if (this.#feedTimer === null) {
      this.#dataVersion = this.#currentDataVersion()
      this.#feedTimer = setInterval(() => this.#poll(), this.#feedIntervalMs)
      this.#feedTimer.unref()
    }
  }

  async ping (): Promise<void> {
    this.#read(() => this.#stmts.ping.get())
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#sweepTimer)
    if (this.#feedTimer !== null) clearInterval(this.#feedTimer)
    this.#listeners.clear()
    this.#db.close()
  }

  /** Forgets whatever has outlived its use. Runs on a timer; public so tests can run it at a chosen time. */
  sweep (now: number): void {
    this.#write(() => {
      this.#stmts.sweepSessions.run(now, now)
      // Rotated-out tokens stay until their session's absolute end so that
      // their reuse is recognised; tokens of ended sessions point at nothing.
      this.#stmts.sweepTokens.run(now)
      this.#stmts.sweepDeny.run(now)
    })
  }

  #poll (): void {
    if (this.#closed) return
    try {
      this.#assertSameFile()
      const version = this.#currentDataVersion()
      if (version !== this.#dataVersion) {
        this.#dataVersion = version
        const rows = this.#stmts.denySince.all(this.#lastDenyId) as unknown as DenyRow[]
        for (const row of rows) {
          this.#lastDenyId = Math.max(this.#lastDenyId, row.id)
          const entry = toEntry(row)
          for (const l of this.#listeners) l.onEntry({ ...entry })
        }
      }
      if (!this.#feedLive) {
        // The mirror reloads on a feed that comes back, covering whatever the
        // outage hid.
        this.#feedLive = true
        for (const l of this.#listeners) l.onFeed(true)
      }
      for (const l of this.#listeners) l.onBeat?.()
    } catch {
      if (this.#feedLive) {
        this.#feedLive = false
        for (const l of this.#listeners) l.onFeed(false)
      }
    }
  }

  #currentDataVersion (): number {
    return Number((this.#stmts.dataVersion.get() as { data_version: number }).data_version)
  }

  #dropSession (sid: string): void {
    this.#stmts.deleteSession.run(sid)
    // Ancestors stay until the sweep (it drops tokens of sessions that are gone).
  }

  /** Upserts inside the caller's transaction; a revocation is never narrowed by a later one. */
  #writeDeny (entry: DenyEntry): DenyEntry {
    const key = `${entry.kind}:${entry.value}`
    const previous = this.#stmts.getDeny.get(key) as DenyRow | undefined
    let stored: DenyEntry = { ...entry }
    if (previous !== undefined) {
      stored.expiresAt = Math.max(previous.expires_at, entry.expiresAt)
      if (stored.kind === 'sub' && previous.before !== null) stored = { ...stored, before: Math.max(previous.before, stored.before) }
    }
    // Delete and insert so the row gets a new, higher id: other processes read
    // the feed by id.
    this.#stmts.deleteDeny.run(key)
    this.#stmts.insertDeny.run(key, stored.kind, stored.value, stored.kind === 'sub' ? stored.before : null, stored.expiresAt)
    return stored
  }

  #publish (entry: DenyEntry): void {
    for (const l of this.#listeners) l.onEntry({ ...entry })
  }

  #write<T> (body: () => T): T {
    this.#assertOpen()
    try {
      this.#assertSameFile()
      this.#db.exec('BEGIN IMMEDIATE')
    } catch (err) {
      throw this.#writeFailed(err)
    }
    let result: T
    try {
      result = body()
      this.#db.exec('COMMIT')
    } catch (err) {
      try { this.#db.exec('ROLLBACK') } catch { /* already rolled back by SQLite (e.g. disk full) */ }
      throw this.#writeFailed(err)
    }
    if (this.#writesFailing) {
      this.#writesFailing = false
      this.#log?.info({ file: this.file }, 'the embedded store takes writes again')
    }
    return result
  }

  /** One clear line when writes start failing, not one per request (those are logged as refused during an outage). */
  #writeFailed (err: unknown): StoreUnavailableError {
    const error = unavailable(this.file, err)
    if (!this.#writesFailing && !(err instanceof StoreUnavailableError)) {
      this.#writesFailing = true
      this.#log?.error({ file: this.file, reason: err instanceof Error ? err.message : String(err) },
        'the embedded store cannot write (disk full, or the file is read-only?): login, refresh, logout and revocations answer 503 until it can; proxied routes serve from the denylist mirror')
    }
    return error
  }

  #read<T> (body: () => T): T {
    this.#assertOpen()
    try {
      return body()
    } catch (err) {
      throw unavailable(this.file, err)
    }
  }

  /**
   * The path must still name the file this process opened. Renamed, removed
   * or replaced (a restore with mv, a `rm data/*`), the others — a worker
   * restarted since, a second gateway — open another file at the path and
   * would write what this process never sees, and the reverse: the feed is
   * then down (protected routes fail closed after denylist.maxStaleness) and
   * writes answer 503, until the path names this file again.
   */
  #assertSameFile (): void {
    if (this.#identity === null) return
    const now = fileIdentity(this.file)
    const same = now !== null && now.dev === this.#identity.dev && now.ino === this.#identity.ino
    if (same) {
      if (this.#replaced) {
        this.#replaced = false
        this.#log?.info({ file: this.file }, 'store.file names the open file again')
      }
      return
    }
    if (!this.#replaced) {
      this.#replaced = true
      this.#log?.error({ file: this.file }, 'store.file was removed or replaced while open: this process can no longer see the others\' changes; writes answer 503 and protected routes fail closed after denylist.maxStaleness; restart every process on the file')
    }
    throw new StoreUnavailableError(`the embedded store ${this.file} was removed or replaced while open`)
  }

  #assertOpen (): void {
    if (this.#closed) throw new StoreUnavailableError('the embedded store is closed')
  }
}

function fileIdentity (file: string): { dev: number, ino: number } | null {
  const stat = statSync(file, { throwIfNoEntry: false })
  return stat === undefined ? null : { dev: stat.dev, ino: stat.ino }
}

function unavailable (file: string, err: unknown): StoreUnavailableError {
  if (err instanceof StoreUnavailableError) return err
  const reason = err instanceof Error ? err.message : String(err)
  return new StoreUnavailableError(`the embedded store ${file} cannot be used: ${reason}`, { cause: err })
}

function openDatabase (file: string, busyTimeoutMs: number): DatabaseSync {
  const memory = file === ':memory:'
  if (!memory) {
    try {
      mkdirSync(dirname(file), { recursive: true })
    } catch (err) {
      throw new StoreOpenError(`store.file ${file}: its directory cannot be created (${(err as Error).message})`, { cause: err })
    }
    try {
      // Created 0600 before SQLite opens it: sessions and the denylist are nobody else's business.
      closeSync(openSync(file, 'a', 0o600))
      chmodSync(file, 0o600)
    } catch (err) {
      throw new StoreOpenError(`store.file ${file}: cannot be opened for writing (${(err as Error).message})`, { cause: err })
    }
  }
  let db: DatabaseSync
  try {
    db = new DatabaseSync(file)
  } catch (err) {
    throw new StoreOpenError(`store.file ${file}: cannot be opened (${(err as Error).message})`, { cause: err })
  }
  try {
    db.exec(`PRAGMA busy_timeout = ${busyTimeoutMs}`)
    if (!memory) db.exec('PRAGMA journal_mode = WAL')
    // FULL: a commit is on disk before the client hears of it, so an answered
    // logout or revocation survives a power cut too, not only a crash (NORMAL
    // in WAL mode may lose the last commits then). Only logins, refreshes and
    // revocations write; a proxied request never does.
    db.exec('PRAGMA synchronous = FULL')
    migrate(db, file)
    // A write proves the file is writable now rather than at the first login.
    db.exec('BEGIN IMMEDIATE; COMMIT')
  } catch (err) {
    db.close()
    if (err instanceof StoreOpenError) throw err
    throw new StoreOpenError(`store.file ${file}: not a usable tokengate store (${(err as Error).message})`, { cause: err })
  }
  return db
}

function prepare (db: DatabaseSync): Record<string, StatementSync> & {
  insertSession: StatementSync
  insertToken: StatementSync
  getToken: StatementSync
  getSession: StatementSync
  markRotated: StatementSync
  setCurrent: StatementSync
  touch: StatementSync
  deleteSession: StatementSync
  sessionsOf: StatementSync
  getDeny: StatementSync
  deleteDeny: StatementSync
  insertDeny: StatementSync
  liveDeny: StatementSync
  denySince: StatementSync
  maxDenyId: StatementSync
  sweepSessions: StatementSync
  sweepTokens: StatementSync
  sweepDeny: StatementSync
  dataVersion: StatementSync
  ping: StatementSync
} {
  return {
    insertSession: db.prepare('INSERT INTO sessions (sid, sub, created_at, last_used_at, expires_at, idle_ms, user_agent, address, current_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)'),
    insertToken: db.prepare('INSERT OR REPLACE INTO tokens (hash, sid, expires_at) VALUES (?, ?, ?)'),
    getToken: db.prepare('SELECT sid, successor, rotated_at, sealed FROM tokens WHERE hash = ?'),
    getSession: db.prepare('SELECT * FROM sessions WHERE sid = ?'),
    markRotated: db.prepare('UPDATE tokens SET successor = ?, rotated_at = ?, sealed = ? WHERE hash = ?'),
    setCurrent: db.prepare('UPDATE sessions SET current_hash = ?, last_used_at = ?, idle_ms = ? WHERE sid = ?'),
    touch: db.prepare('UPDATE sessions SET last_used_at = ?, idle_ms = ? WHERE sid = ?'),
    deleteSession: db.prepare('DELETE FROM sessions WHERE sid = ?'),
    sessionsOf: db.prepare('SELECT * FROM sessions WHERE sub = ?'),
    getDeny: db.prepare('SELECT * FROM deny WHERE key = ?'),
    deleteDeny: db.prepare('DELETE FROM deny WHERE key = ?'),
    insertDeny: db.prepare('INSERT INTO deny (key, kind, value, before, expires_at) VALUES (?, ?, ?, ?, ?)'),
    liveDeny: db.prepare('SELECT * FROM deny WHERE expires_at > ?'),
    denySince: db.prepare('SELECT * FROM deny WHERE id > ? ORDER BY id'),
    maxDenyId: db.prepare('SELECT max(id) AS id FROM deny'),
    sweepSessions: db.prepare('DELETE FROM sessions WHERE expires_at <= ? OR last_used_at + idle_ms <= ?'),
    sweepTokens: db.prepare('DELETE FROM tokens WHERE expires_at <= ? OR sid NOT IN (SELECT sid FROM sessions)'),
    sweepDeny: db.prepare('DELETE FROM deny WHERE expires_at <= ?'),
    dataVersion: db.prepare('PRAGMA data_version'),
    ping: db.prepare('SELECT 1')
  }
}

function isLive (row: SessionRow, now: number, idleTimeoutMs = row.idle_ms): boolean {
  return now < row.expires_at && now < row.last_used_at + idleTimeoutMs
}

function info (row: SessionRow): SessionInfo {
  return {
    sid: row.sid,
    sub: row.sub,
    createdAt: row.created_at,
    lastUsedAt: row.last_used_at,
    expiresAt: row.expires_at,
    userAgent: row.user_agent,
    address: row.address
  }
}

function toEntry (row: DenyRow): DenyEntry {
  if (row.kind === 'sub') return { kind: 'sub', value: row.value, before: row.before ?? 0, expiresAt: row.expires_at }
  return { kind: row.kind === 'jti' ? 'jti' : 'sid', value: row.value, expiresAt: row.expires_at }
}

export { SCHEMA_VERSION, StoreOpenError }
