import { Redis, type RedisOptions } from 'ioredis'
import { closeClient, createRedisClient, fastFailClientOptions, watchOutages, whenReady, type RedisTarget } from './redis-client.js'
import { asArray, asString, ms, parseDenyMessage, parseReply, parseRotateReply, parseSessionRow } from './redis-replies.js'
import { withScripts, type ScriptedRedis } from './redis-scripts.js'
import {
  StoreUnavailableError,
  type CreateSessionInput,
  type DenyEntry,
  type RotateInput,
  type RotateOutcome,
  type SessionInfo,
  type SessionStore
} from './session-store.js'

// Sessions and the denylist in Redis. Every mutation is one Lua script
// (redis-scripts.ts, which also lists the keys) registered once with
// defineCommand, so two gateway instances racing on the same refresh token
// see one winner. The client options and helpers shared with the rate
// limiter are in redis-client.ts; reply parsing in redis-replies.ts.

export interface RedisStoreLog {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
}

export interface RedisStoreOptions {
  /** shorthand for `target: { url }` */
  url?: string
  /** the topology, credentials and TLS; wins over url */
  target?: RedisTarget
  keyPrefix: string
  connectTimeoutMs: number
  commandTimeoutMs: number
  log?: RedisStoreLog
  /**
   * How often the subscriber connection PINGs Redis to prove the feed is
   * current (see subscribeDenylist); keep it well under denylist.maxStaleness.
   */
  heartbeatIntervalMs?: number
  /**
   * A revocation (revoke, endSession, endUserSessions, a rotation) is
   * answered only once this many replicas have it (WAIT), so that a failover
   * cannot promote a replica that never saw it; 0 (the default) does not wait.
   */
  waitReplicas?: number
  /** how long WAIT may take before the revocation counts as unconfirmed (503) */
  waitTimeoutMs?: number
  /** Called for each command that failed (for a metric); never with anything secret. */
  onCommandError?: (what: string) => void
}

export const DEFAULT_HEARTBEAT_INTERVAL_MS = 1000
export const DEFAULT_WAIT_TIMEOUT_MS = 250

interface FeedListener {
  onEntry: (entry: DenyEntry) => void
  onFeed: (live: boolean) => void
  onBeat: () => void
}

export class RedisStore implements SessionStore {
  readonly kind = 'redis' as const
  readonly #opts: RedisStoreOptions
  readonly #target: RedisTarget
  readonly #redis: ScriptedRedis
  readonly #channel: string
  #subscriber: Redis | undefined
  #subscribing: Promise<void> | undefined
  #heartbeat: NodeJS.Timeout | undefined
  #pinging = false
  /** 'idle' until asked to subscribe; 'lost' whenever a live feed may have missed entries */
  #feed: 'idle' | 'live' | 'lost' = 'idle'
  readonly #listeners = new Set<FeedListener>()
  #everReady = false
  #closed = false

  constructor (opts: RedisStoreOptions) {
    this.#target = validateOptions(opts)
    this.#opts = opts
    this.#channel = `${opts.keyPrefix}deny`
    this.#redis = withScripts(createRedisClient(this.#target, this.#clientOptions()))
    this.#watch(this.#redis, 'Redis')
    this.#redis.on('ready', () => { this.#everReady = true })
  }

  async createSession (input: CreateSessionInput): Promise<void> {
    await this.#run('createSession', (r) => r.tgCreateSession(this.#opts.keyPrefix, input.sid, input.sub, input.refreshHash,
      ms(input.now), ms(input.expiresAt), ms(input.idleTimeoutMs), input.userAgent, input.address))
  }

  async rotate (input: RotateInput): Promise<RotateOutcome> {
    const reply = await this.#run('rotate', (r) => r.tgRotate(this.#opts.keyPrefix, input.presentedHash, input.newHash,
      input.sealedNew, ms(input.now), ms(input.graceMs), ms(input.idleTimeoutMs), ms(input.accessTtlMs)))
    const outcome = parseReply('rotate', reply, parseRotateReply)
    // a rotated-out token, or a session ended for reuse, must stay so across a failover
    if (outcome.kind === 'rotated' || outcome.kind === 'reuse') await this.#confirm('rotate')
    return outcome
  }

  async findByRefresh (refreshHash: string, now: number): Promise<SessionInfo | null> {
    const reply = await this.#run('findByRefresh', (r) => r.tgFindByRefresh(this.#opts.keyPrefix, refreshHash, ms(now)))
    return reply === null ? null : parseReply('findByRefresh', reply, parseSessionRow)
  }

  async endSession (sid: string): Promise<SessionInfo | null> {
    const reply = await this.#run('endSession', (r) => r.tgEndSession(this.#opts.keyPrefix, sid, Date.now()))
    await this.#confirm('endSession')
    return reply === null ? null : parseReply('endSession', reply, parseSessionRow)
  }

  async endUserSessions (sub: string): Promise<string[]> {
    const reply = await this.#run('endUserSessions', (r) => r.tgEndUserSessions(this.#opts.keyPrefix, sub, Date.now()))
    await this.#confirm('endUserSessions')
    return parseReply('endUserSessions', reply, (v) => asArray(v).map(asString))
  }

  async listSessions (sub: string, now: number): Promise<SessionInfo[]> {
    const reply = await this.#run('listSessions', (r) => r.tgListSessions(this.#opts.keyPrefix, sub, ms(now)))
    const sessions = parseReply('listSessions', reply, (v) => asArray(v).map(parseSessionRow))
    return sessions.sort((a, b) => a.createdAt - b.createdAt)
  }

  async revoke (entry: DenyEntry): Promise<void> {
    const before = entry.kind === 'sub' ? entry.before : 0
    await this.#run('revoke', (r) => r.tgRevoke(this.#opts.keyPrefix, entry.kind, entry.value, ms(entry.expiresAt),
      ms(before), Date.now()))
    await this.#confirm('revoke')
  }

  async loadDenylist (now: number): Promise<DenyEntry[]> {
    const reply = await this.#run('loadDenylist', (r) => r.tgLoadDenylist(this.#opts.keyPrefix, ms(now)))
    return parseReply('loadDenylist', reply, (v) => asArray(v).map((m) => {
      const entry = parseDenyMessage(asString(m))
      if (entry === null) throw new TypeError('malformed denylist entry')
      return entry
    }))
  }

  /**
   * Resolves once subscribed. When Redis cannot be reached it rejects, but
   * keeps the listener and keeps trying: `onFeed(true)` reports the moment
   * the feed is live, after which the caller should reload.
   */
  async subscribeDenylist (onEntry: (entry: DenyEntry) => void, onFeed: (live: boolean) => void, onBeat: () => void): Promise<void> {
    this.#assertOpen()
    this.#listeners.add({ onEntry, onFeed, onBeat })
    const subscriber = this.#subscriber ?? this.#startSubscriber()
    try {
      await whenReady(subscriber, this.#opts.connectTimeoutMs)
      await this.#subscribe()
    } catch (err) {
      if (this.#feed === 'idle') this.#feed = 'lost'
      throw unavailable('subscribeDenylist', err)
    }
  }

  async ping (): Promise<void> {
    await this.#run('ping', (r) => r.ping())
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#listeners.clear()
    this.#feed = 'idle'
    clearInterval(this.#heartbeat)
    this.#subscriber?.disconnect()
    await closeClient(this.#redis)
  }

  #clientOptions (): RedisOptions {
    return fastFailClientOptions(this.#opts.connectTimeoutMs, this.#opts.commandTimeoutMs)
  }

  #watch (client: Redis, name: string): void {
    watchOutages(client, (err) => {
      if (!this.#closed) this.#opts.log?.warn({ err, client: name }, `${name} connection failed; retrying in the background`)
    }, () => { this.#opts.log?.info({ client: name }, `${name} connection is back`) })
  }

  async #run<T> (what: string, command: (r: ScriptedRedis) => Promise<T>): Promise<T> {
    this.#assertOpen()
    // Only the very first connection is waited for; afterwards a Redis that is
    // not connected right now is an immediate failure, never a queue.
    try {
      if (this.#redis.status !== 'ready') {
        if (this.#everReady) throw new Error(`Redis connection is ${this.#redis.status}`)
        await whenReady(this.#redis, this.#opts.connectTimeoutMs)
      }
      return await command(this.#redis)
    } catch (err) {
      this.#opts.onCommandError?.(what)
      throw unavailable(what, err)
    }
  }

  /**
   * WAIT on the connection that wrote: Redis answers once waitReplicas
   * replicas have acknowledged every write this connection made so far.
   * Fewer in time means a failover now could lose the write, so the caller
   * is told "unavailable" (it may or may not have landed), never "done".
   */
  async #confirm (what: string): Promise<void> {
    const replicas = this.#opts.waitReplicas ?? 0
    if (replicas === 0) return
    const acked = await this.#run(`${what} WAIT`, (r) => r.call('WAIT', replicas, ms(this.#opts.waitTimeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS)))
    if (typeof acked !== 'number' || acked < replicas) {
      this.#opts.onCommandError?.(`${what} WAIT`)
      throw new StoreUnavailableError(`Redis ${what} not confirmed on ${replicas} replica(s) in time`)
    }
  }

  #startSubscriber (): Redis {
    // autoResubscribe is off so that we know when the subscription is back,
    // which is when the mirror must reload what it may have missed.
    const subscriber = createRedisClient(this.#target, { ...this.#clientOptions(), autoResubscribe: false })
    this.#subscriber = subscriber
    this.#watch(subscriber, 'Redis subscriber')
    this.#heartbeat = setInterval(() => { this.#beat(subscriber) }, this.#opts.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS)
    this.#heartbeat.unref()
    subscriber.on('ready', () => {
      this.#subscribe().catch((err: unknown) => {
        this.#opts.log?.error({ err }, 'denylist re-subscription failed; waiting for the next reconnect')
      })
    })
    subscriber.on('close', () => {
      if (this.#feed !== 'live') return
      this.#feed = 'lost'
      for (const l of this.#listeners) l.onFeed(false)
    })
    subscriber.on('message', (channel: string, message: string) => {
      if (channel !== this.#channel) return
      const entry = parseDenyMessage(message)
      if (entry === null) {
        this.#opts.log?.error({ channel }, 'ignored a malformed denylist message')
        return
      }
      for (const l of this.#listeners) l.onEntry({ ...entry })
    })
    return subscriber
  }

  /**
   * A PONG on the subscriber connection proves the feed current: Redis
   * answers a connection's commands and pushes its messages in order, so
   * every message published before the PING was read before the PONG. A
   * PING that times out means the link is silent (a partition need not close
   * the socket): drop the connection and reconnect, which reports the feed
   * lost and, once back, live again so the mirror reloads.
   */
  #beat (subscriber: Redis): void {
    if (this.#closed || this.#pinging || this.#feed !== 'live' || subscriber.status !== 'ready') return
    this.#pinging = true
    subscriber.ping().then(() => {
      if (this.#closed || this.#feed !== 'live') return
      for (const l of this.#listeners) l.onBeat()
    }, (err: unknown) => {
      if (this.#closed || this.#feed !== 'live') return
      this.#opts.log?.warn({ err }, 'Redis subscriber did not answer its heartbeat; reconnecting')
      subscriber.disconnect(true)
    }).finally(() => { this.#pinging = false })
  }

  #subscribe (): Promise<void> {
    const subscriber = this.#subscriber
    if (subscriber === undefined || this.#closed) return Promise.resolve()
    if (this.#feed === 'live') return Promise.resolve()
    this.#subscribing ??= subscriber.subscribe(this.#channel).then(() => {
      const wasLost = this.#feed === 'lost'
      this.#feed = 'live'
      if (wasLost) for (const l of this.#listeners) l.onFeed(true)
    }).finally(() => { this.#subscribing = undefined })
    return this.#subscribing
  }

  #assertOpen (): void {
    if (this.#closed) throw new StoreUnavailableError('the Redis store is closed')
  }
}

function validateOptions (opts: RedisStoreOptions): RedisTarget {
  const target = opts.target ?? { url: opts.url }
  if (target.sentinels === undefined && (typeof target.url !== 'string' || target.url === '')) throw new TypeError('url must be a non-empty string')
  if (target.sentinels !== undefined && (target.sentinels.length === 0 || target.masterName === undefined)) throw new TypeError('sentinels need at least one node and a masterName')
  if (typeof opts.keyPrefix !== 'string') throw new TypeError('keyPrefix must be a string')
  for (const name of ['connectTimeoutMs', 'commandTimeoutMs'] as const) {
    const value = opts[name]
    if (!Number.isFinite(value) || value <= 0) throw new TypeError(`${name} must be a positive number of milliseconds`)
  }
  return target
}

function unavailable (what: string, cause: unknown): StoreUnavailableError {
  return cause instanceof StoreUnavailableError ? cause : new StoreUnavailableError(`Redis ${what} failed`, { cause })
}
