import { Cluster, type Redis, type RedisOptions } from 'ioredis'
import { sidOfRefresh } from '../tokens/refresh-token.js'
import {
  closeClient,
  createNodeClient,
  createRedisClient,
  fastFailClientOptions,
  outageMessage,
  watchOutages,
  whenReady,
  type RedisClient,
  type RedisTarget
} from './redis-client.js'
import { asArray, asString, asTime, ms, parseDenyMessage, parseReply, parseRotateReply, parseSessionRow } from './redis-replies.js'
import { keySlot } from './redis-slot.js'
import { StoreKeys, withScripts, type ScriptedPipeline, type ScriptedRedis } from './redis-scripts.js'
import {
  namesNothing,
  StoreUnavailableError,
  StoreUnconfirmedError,
  UnconfirmedWrites,
  type CreateSessionInput,
  type DenyEntry,
  type RotateInput,
  type RotateOutcome,
  type SessionInfo,
  type SessionStore
} from './session-store.js'

// Sessions and the denylist in Redis: one node, Sentinel or Cluster, with the
// same keys. Every mutation is one Lua script (redis-scripts.ts, which also
// lists the keys) registered once with defineCommand, so two gateway
// instances racing on the same refresh token see one winner. The client
// options and helpers shared with the rate limiter are in redis-client.ts;
// reply parsing in redis-replies.ts.

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
   * A revocation (revoke, endSession, endUser, a rotation) and a login
   * (createSession) are answered only once this many replicas have them (WAIT, on the primary
   * that holds the key written), so that a failover cannot promote a replica
   * that never saw it; 0 (the default) does not wait.
   */
  waitReplicas?: number
  /** how long WAIT may take before the write counts as unconfirmed (503) */
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
  readonly #keys: StoreKeys
  /** Cluster delivers the denylist by sharded pub/sub; one node and Sentinel by plain pub/sub. */
  readonly #sharded: boolean
  #subscriber: Redis | undefined
  /** on Cluster, the "host:port" the subscriber is connected to */
  #subscriberNode: string | undefined
  #retarget: NodeJS.Timeout | undefined
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
    this.#keys = new StoreKeys(opts.keyPrefix)
    this.#sharded = this.#target.cluster !== undefined
    this.#redis = withScripts(createRedisClient(this.#target, this.#clientOptions()))
    this.#watch(this.#redis, 'Redis')
    this.#redis.on('ready', () => { this.#everReady = true })
  }

  async createSession (input: CreateSessionInput): Promise<void> {
    const hash = tokenHash(input.sid, input.refreshHash)
    // Indexed under its user first: a session that exists is always found by
    // logout-all. Both writes are confirmed like a revocation: a login
    // answered and then lost in a failover would leave the client a refresh
    // token that answers 401, and an index lost while its session survives
    // would hide that session from logout-all. On one node or Sentinel both
    // go to the same primary, and the second WAIT covers the first; on
    // Cluster the index is on another shard and waits for its own replicas.
    const [, indexed] = await this.#write('createSession', (p) => p.tgIndexSession(this.#keys.user(input.sub), input.sid, ms(input.expiresAt), ms(input.now)), this.#sharded)
    indexed()
    const [, created] = await this.#write('createSession', (p) => p.tgCreateSession(this.#keys.session(input.sid), input.sid, input.sub, hash,
      ms(input.now), ms(input.expiresAt), ms(input.idleTimeoutMs), input.userAgent, input.address))
    created()
  }

  async rotate (input: RotateInput): Promise<RotateOutcome> {
    const sid = sidOfRefresh(input.presentedHash)
    // A token from before tokens carried their sid names no slot: log in again.
    if (sid === null) return { kind: 'invalid' }
    const presented = tokenHash(sid, input.presentedHash)
    const next = tokenHash(sid, input.newHash)
    const [reply, confirmed] = await this.#write('rotate', (p) => p.tgRotate(this.#keys.session(sid), this.#keys.token(sid, presented),
      sid, presented, next, input.sealedNew, ms(input.now), ms(input.graceMs), ms(input.idleTimeoutMs)))
    const outcome = parseReply('rotate', reply, parseRotateReply)
    // a rotated-out token must stay so across a failover
    if (outcome.kind === 'rotated') confirmed()
    if (outcome.kind === 'reuse') {
      // the revocation first, in {deny}; the session is ended only once it
      // is written (a replica slow to confirm it does not keep the family alive)
      const writes = new UnconfirmedWrites()
      await writes.run(() => this.revoke({ kind: 'sid', value: outcome.sid, expiresAt: ms(input.now + input.accessTtlMs) }))
      await writes.run(() => this.endSession(outcome.sid))
      writes.settle()
    }
    return outcome
  }

  async findByRefresh (refreshHash: string, now: number): Promise<SessionInfo | null> {
    const sid = sidOfRefresh(refreshHash)
    if (sid === null) return null
    const reply = await this.#run('findByRefresh', (r) => r.tgFindByRefresh(this.#keys.session(sid), sid, tokenHash(sid, refreshHash), ms(now)))
    return reply === null ? null : parseReply('findByRefresh', reply, parseSessionRow)
  }

  async endSession (sid: string): Promise<SessionInfo | null> {
    const [reply, confirmed] = await this.#write('endSession', (p) => p.tgEndSession(this.#keys.session(sid), sid, Date.now()))
    confirmed()
    if (reply === null) return null
    const [live, session] = parseReply('endSession', reply, (v) => {
      const [flag, row] = asArray(v)
      return [flag === 1, parseSessionRow(row)] as const
    })
    // The index is another slot; a sid left in it by a failure here names no session and is pruned when read.
    await this.#run('endSession', (r) => r.zrem(this.#keys.user(session.sub), sid))
    return live ? session : null
  }

  async endUser (sub: string, before: number, expiresAt: number): Promise<DenyEntry[]> {
    const entries: DenyEntry[] = [{ kind: 'sub', value: sub, before, expiresAt }]
    // Every write is made even when one is not confirmed in time: each is in
    // force on its primary, and the sid entries cover tokens of this very
    // second, which the sub entry does not.
    const writes = new UnconfirmedWrites()
    await writes.run(() => this.revoke(entries[0]))
    const sids = await this.#run('endUser', (r) => r.zrange(this.#keys.user(sub), 0, -1))
    // one script per session, each in its own slot, all at once; an
    // unconfirmed end (undefined) counts as a live session ended: its sid is denied
    const ended = await Promise.all(sids.map(async (sid) => {
      const row = await writes.run(() => this.endSession(sid))
      return row === null ? null : sid
    }))
    for (const sid of ended) {
      if (sid === null) continue
      const entry: DenyEntry = { kind: 'sid', value: sid, expiresAt }
      await writes.run(() => this.revoke(entry))
      entries.push(entry)
    }
    writes.settle()
    return entries
  }

  async listSessions (sub: string, now: number): Promise<SessionInfo[]> {
    const ukey = this.#keys.user(sub)
    const sids = await this.#run('listSessions', (r) => r.zrange(ukey, 0, -1))
    const rows = await Promise.all(sids.map(async (sid) => {
      const s = await this.#run('listSessions', (r) => r.hmget(this.#keys.session(sid), ...SESSION_FIELDS))
      if (s[0] === null) {
        await this.#run('listSessions', (r) => r.zrem(ukey, sid))
        return null
      }
      return parseReply('listSessions', s, (v) => sessionOf(sid, asArray(v)))
    }))
    return rows
      .filter((row): row is { session: SessionInfo, idleMs: number } => row !== null && isLive(row.session, row.idleMs, now))
      .map((row) => row.session)
      .sort((a, b) => a.createdAt - b.createdAt)
  }

  async revoke (entry: DenyEntry): Promise<void> {
    if (namesNothing(entry)) return
    const before = entry.kind === 'sub' ? entry.before : 0
    const [, confirmed] = await this.#write('revoke', (p) => p.tgRevoke(this.#keys.deny, this.#keys.denyBefore, entry.kind, entry.value,
      ms(entry.expiresAt), ms(before), Date.now(), this.#sharded ? 'SPUBLISH' : 'PUBLISH', this.#keys.channel))
    confirmed()
  }

  async loadDenylist (now: number): Promise<DenyEntry[]> {
    // The whole denylist lives in one slot ({deny}), so on Cluster too one
    // primary holds all of it: no walk over every node.
    const reply = await this.#run('loadDenylist', (r) => r.tgLoadDenylist(this.#keys.deny, this.#keys.denyBefore, ms(now)))
    const entries = parseDenyEntries(reply)
    if (this.#sharded) return entries.filter((e) => !namesNothing(e))
    // A single node or Sentinel may still hold the denylist of the version
    // before this key layout (Cluster was refused then): its revocations
    // stay in force until they expire, so an upgrade forgets none of them.
    const legacy = await this.#run('loadDenylist', (r) => r.tgLoadDenylist(`${this.#opts.keyPrefix}deny`, `${this.#opts.keyPrefix}deny:before`, ms(now)))
    return [...parseDenyEntries(legacy), ...entries].filter((e) => !namesNothing(e))
  }

  /**
   * Resolves once subscribed. When Redis cannot be reached it rejects, but
   * keeps the listener and keeps trying: `onFeed(true)` reports the moment
   * the feed is live, after which the caller should reload.
   */
  async subscribeDenylist (onEntry: (entry: DenyEntry) => void, onFeed: (live: boolean) => void, onBeat: () => void): Promise<void> {
    this.#assertOpen()
    this.#listeners.add({ onEntry, onFeed, onBeat })
    if (this.#heartbeat === undefined) {
      this.#heartbeat = setInterval(() => { this.#beat() }, this.#opts.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS)
      this.#heartbeat.unref()
    }
    try {
      const subscriber = this.#subscriber ?? await this.#startSubscriber()
      await whenReady(subscriber, this.#opts.connectTimeoutMs)
      await this.#subscribe()
    } catch (err) {
      if (this.#feed === 'idle') this.#feed = 'lost'
      if (this.#sharded && this.#subscriber === undefined) this.#scheduleRetarget()
      throw unavailable('subscribeDenylist', err)
    }
  }

  async ping (): Promise<void> {
    if (this.#redis instanceof Cluster) {
      // every primary must answer: any one of them may hold the slot a request needs
      await this.#run('ping', async (r) => {
        const primaries = (r as Cluster).nodes('master')
        if (primaries.length === 0) throw new Error('no Redis Cluster primary known')
        await Promise.all(primaries.map((node) => node.ping()))
      })
      return
    }
    await this.#run('ping', (r) => r.ping())
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#listeners.clear()
    this.#feed = 'idle'
    clearInterval(this.#heartbeat)
    clearTimeout(this.#retarget)
    this.#subscriber?.disconnect()
    await closeClient(this.#redis)
  }

  #clientOptions (): RedisOptions {
    return fastFailClientOptions(this.#opts.connectTimeoutMs, this.#opts.commandTimeoutMs)
  }

  #watch (client: RedisClient, name: string): void {
    watchOutages(client, (err) => {
      if (!this.#closed) this.#opts.log?.warn({ err, client: name }, outageMessage(name, err))
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
   * One script and, behind it in the same pipeline, WAIT: a pipeline goes to
   * one node (on Cluster, the primary of the script's slot), so the WAIT runs
   * on the connection that wrote, and Redis answers once waitReplicas
   * replicas have acknowledged every write that connection made so far.
   * Returns the script's reply and `confirmed`, which throws (503: it may or
   * may not have landed) when fewer replicas had it in time — a failover
   * now could lose it — for the caller to call where the outcome must
   * survive a failover (a revocation, a rotation, a login). `wait: false`
   * sends the script alone, for a write whose WAIT the next one on the same
   * connection gives.
   */
  async #write (what: string, build: (p: ScriptedPipeline) => unknown, wait = true): Promise<[unknown, () => void]> {
    const replicas = wait ? this.#opts.waitReplicas ?? 0 : 0
    const results = await this.#run(what, async (r) => {
      const pipeline = r.pipeline() as ScriptedPipeline
      build(pipeline)
      if (replicas > 0) pipeline.call('WAIT', replicas, ms(this.#opts.waitTimeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS))
      const replies = await pipeline.exec()
      if (replies === null || replies.length !== (replicas > 0 ? 2 : 1)) throw new Error('Redis pipeline answered nothing')
      const [[err, reply]] = replies
      if (err !== null) throw err
      return { reply, wait: replies[1] }
    })
    const confirmed = (): void => {
      if (replicas === 0) return
      const [err, acked] = results.wait ?? [null, 0]
      if (err !== null || typeof acked !== 'number' || acked < replicas) {
        this.#opts.onCommandError?.(`${what} WAIT`)
        throw new StoreUnconfirmedError(`Redis ${what} not confirmed on ${replicas} replica(s) in time`, { cause: err })
      }
    }
    return [results.reply, confirmed]
  }

  async #startSubscriber (): Promise<Redis> {
    // autoResubscribe is off so that we know when the subscription is back,
    // which is when the mirror must reload what it may have missed.
    const options: RedisOptions = { ...this.#clientOptions(), autoResubscribe: false }
    let subscriber: Redis
    if (this.#sharded) {
      // On Cluster the subscriber is a plain connection to the primary of the
      // denylist's slot, so that its heartbeat PING travels the very socket
      // the messages come on. It does not reconnect by itself: after a
      // failover or a resharding the slot lives elsewhere, so each loss asks
      // the cluster again where (#scheduleRetarget).
      const node = await this.#denylistPrimary()
      // closed while the cluster was asked: a connection opened now would
      // outlive the store and hold the process open
      this.#assertOpen()
      subscriber = createNodeClient(this.#target, node.address, { ...options, retryStrategy: () => null })
      this.#subscriberNode = node.key
      subscriber.on('end', () => {
        if (this.#subscriber === subscriber) this.#subscriber = undefined
        this.#scheduleRetarget()
      })
    } else {
      subscriber = createRedisClient({ ...this.#target, cluster: undefined }, options)
    }
    this.#subscriber = subscriber
    this.#watch(subscriber, 'Redis subscriber')
    subscriber.on('ready', () => {
      this.#subscribe().catch((err: unknown) => {
        this.#opts.log?.error({ err }, 'denylist re-subscription failed; waiting for the next reconnect')
        if (this.#sharded) subscriber.disconnect()
      })
    })
    subscriber.on('close', () => {
      if (this.#feed !== 'live') return
      this.#feed = 'lost'
      for (const l of this.#listeners) l.onFeed(false)
    })
    subscriber.on(this.#sharded ? 'smessage' : 'message', (channel: string, message: string) => {
      if (channel !== this.#keys.channel) return
      const entry = parseDenyMessage(message)
      if (entry === null) {
        this.#opts.log?.error({ channel }, 'ignored a malformed denylist message')
        return
      }
      for (const l of this.#listeners) l.onEntry({ ...entry })
    })
    return subscriber
  }

  /** Where the denylist's slot is served now, from the cluster client's slot table (refreshed first). */
  async #denylistPrimary (): Promise<{ key: string, address: { host: string, port: number } }> {
    const cluster = this.#redis as unknown as Cluster
    if (cluster.status !== 'ready') await whenReady(cluster, this.#opts.connectTimeoutMs)
    await new Promise<void>((resolve) => {
      // whatever the refresh does, the table as it stands is asked after connectTimeout at the latest
      const timer = setTimeout(resolve, this.#opts.connectTimeoutMs)
      cluster.refreshSlotsCache(() => {
        clearTimeout(timer)
        resolve()
      })
    })
    const key = cluster.slots[keySlot(this.#keys.channel)]?.[0]
    // ioredis names a node "host:port", an IPv6 host without brackets
    const colon = key?.lastIndexOf(':') ?? -1
    const port = key === undefined ? NaN : Number(key.slice(colon + 1))
    if (key === undefined || colon <= 0 || !Number.isInteger(port)) throw new Error('no Redis Cluster node serves the denylist slot')
    return { key, address: { host: key.slice(0, colon), port } }
  }

  #scheduleRetarget (): void {
    if (this.#closed || this.#retarget !== undefined) return
    this.#retarget = setTimeout(() => {
      this.#retarget = undefined
      if (this.#closed || this.#subscriber !== undefined) return
      this.#startSubscriber().catch((err: unknown) => {
        this.#opts.log?.warn({ err }, 'denylist subscriber cannot reach the cluster; retrying')
        this.#scheduleRetarget()
      })
    }, RETARGET_DELAY_MS)
    this.#retarget.unref()
  }

  /**
   * A PONG on the subscriber connection proves the feed current: Redis
   * answers a connection's commands and pushes its messages in order, so
   * every message published before the PING was read before the PONG. A
   * PING that times out means the link is silent (a partition need not close
   * the socket): drop the connection and reconnect, which reports the feed
   * lost and, once back, live again so the mirror reloads. On Cluster the
   * connection must also still be to the node that serves the slot: after a
   * resharding or a failover the old node may answer PING and deliver nothing.
   */
  #beat (): void {
    const subscriber = this.#subscriber
    if (subscriber === undefined || this.#closed || this.#pinging || this.#feed !== 'live' || subscriber.status !== 'ready') return
    if (this.#sharded) {
      const owner = (this.#redis as unknown as Cluster).slots[keySlot(this.#keys.channel)]?.[0]
      if (owner !== undefined && owner !== this.#subscriberNode) {
        this.#opts.log?.warn({ from: this.#subscriberNode, to: owner }, 'the denylist slot moved; resubscribing')
        subscriber.disconnect()
        return
      }
    }
    this.#pinging = true
    subscriber.ping().then(() => {
      if (this.#closed || this.#feed !== 'live') return
      for (const l of this.#listeners) l.onBeat()
    }, (err: unknown) => {
      if (this.#closed || this.#feed !== 'live' || this.#subscriber !== subscriber) return
      this.#opts.log?.warn({ err }, 'Redis subscriber did not answer its heartbeat; reconnecting')
      // Lost now, not when the socket closes: a silent peer never answers our
      // FIN, and until ioredis gives up on it every beat would fail and
      // disconnect again.
      this.#feed = 'lost'
      for (const l of this.#listeners) l.onFeed(false)
      subscriber.disconnect(!this.#sharded)
    }).finally(() => { this.#pinging = false })
  }

  #subscribe (): Promise<void> {
    const subscriber = this.#subscriber
    if (subscriber === undefined || this.#closed) return Promise.resolve()
    if (this.#feed === 'live') return Promise.resolve()
    this.#subscribing ??= (this.#sharded ? subscriber.ssubscribe(this.#keys.channel) : subscriber.subscribe(this.#keys.channel)).then(() => {
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

function parseDenyEntries (reply: unknown): DenyEntry[] {
  return parseReply('loadDenylist', reply, (v) => asArray(v).map((m) => {
    const entry = parseDenyMessage(asString(m))
    if (entry === null) throw new TypeError('malformed denylist entry')
    return entry
  }))
}

/** How long the Cluster subscriber waits before asking where the denylist's slot lives now. */
const RETARGET_DELAY_MS = 100

const SESSION_FIELDS = ['sub', 'createdAt', 'lastUsedAt', 'expiresAt', 'userAgent', 'address', 'current', 'idleMs'] as const

function sessionOf (sid: string, s: unknown[]): { session: SessionInfo, idleMs: number } {
  const [sub, createdAt, lastUsedAt, expiresAt, userAgent, address, , idleMs] = s
  return {
    session: parseSessionRow([sid, sub, createdAt, lastUsedAt, expiresAt, userAgent, address]),
    idleMs: asTime(idleMs)
  }
}

function isLive (s: SessionInfo, idleMs: number, now: number): boolean {
  return now < s.expiresAt && now < s.lastUsedAt + idleMs
}

/**
 * The token's hash inside its session's keys, from the handle
 * hashRefreshToken made (`<sid>.<hash>`); the handle must name `sid`.
 */
function tokenHash (sid: string, handle: string): string {
  if (sidOfRefresh(handle) !== sid) throw new TypeError('a refresh token handle must carry its session id')
  return handle.slice(sid.length + 1)
}

function validateOptions (opts: RedisStoreOptions): RedisTarget {
  const target = opts.target ?? { url: opts.url }
  if (target.cluster !== undefined && target.cluster.length === 0) throw new TypeError('cluster needs at least one seed node')
  if (target.sentinels === undefined && target.cluster === undefined && (typeof target.url !== 'string' || target.url === '')) throw new TypeError('url must be a non-empty string')
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
