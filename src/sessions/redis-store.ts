import { Redis, type RedisOptions } from 'ioredis'
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
// registered once with defineCommand, so two gateway instances racing on the
// same refresh token see one winner.
//
// Keys (P = keyPrefix; every key carries a PEXPIREAT):
//   P s:<sid>        hash  the session and its current refresh hash
//   P r:<hash>       hash  one refresh token: its sid and, once rotated, its successor
//   P u:<sub>        zset  the user's sids, scored by their absolute end
//   P deny           zset  `jti:<v>` | `sid:<v>` | `sub:<v>`, scored by expiresAt
//   P deny:before    hash  sub -> `before` of that user's entry
// Channel P deny carries each written entry as JSON.
//
// The scripts build their keys from the prefix passed in ARGV rather than
// receiving them in KEYS. That is fine on one node or Sentinel, but it is not
// Redis-Cluster-safe: on Cluster every key would have to share a hash tag.

export interface RedisStoreLog {
  info (obj: object, msg: string): void
  warn (obj: object, msg: string): void
  error (obj: object, msg: string): void
}

export interface RedisStoreOptions {
  url: string
  keyPrefix: string
  connectTimeoutMs: number
  commandTimeoutMs: number
  log?: RedisStoreLog
  /** Called for each command that failed (for a metric); never with anything secret. */
  onCommandError?: (what: string) => void
}

const RECONNECT_BASE_MS = 50
/** Keeps reconnecting forever, but never waits longer than this between attempts. */
const RECONNECT_MAX_MS = 1000

const LUA_PRELUDE = `
local P = ARGV[1]
local SESSION_FIELDS = {'sub', 'createdAt', 'lastUsedAt', 'expiresAt', 'userAgent', 'address', 'current', 'idleMs'}

local function read_session(sid)
  local s = redis.call('HMGET', P .. 's:' .. sid, unpack(SESSION_FIELDS))
  if not s[1] then return nil end
  return s
end

local function is_live(s, now)
  return now < tonumber(s[4]) and now < tonumber(s[3]) + tonumber(s[8])
end

local function session_row(sid, s)
  return {sid, s[1], s[2], s[3], s[4], s[5], s[6]}
end

-- a zset of things that end at their score lives as long as its last member
local function expire_with_latest(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', key, last[2]) else redis.call('DEL', key) end
end

local function drop_session(sid, s)
  redis.call('DEL', P .. 's:' .. sid)
  redis.call('DEL', P .. 'r:' .. s[7])
  local ukey = P .. 'u:' .. s[1]
  redis.call('ZREM', ukey, sid)
  expire_with_latest(ukey)
end

-- numbers travel as integer strings: cjson would round 13-digit millisecond times
local function encode_deny(kind, value, expires_at, before)
  local e = {kind = kind, value = value, expiresAt = string.format('%d', expires_at)}
  if kind == 'sub' then e.before = string.format('%d', before) end
  return cjson.encode(e)
end

local function deny_write(kind, value, expires_at, before, now)
  local zkey = P .. 'deny'
  local bkey = P .. 'deny:before'
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', zkey, '-inf', now)) do
    if string.sub(m, 1, 4) == 'sub:' then redis.call('HDEL', bkey, string.sub(m, 5)) end
  end
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
  local member = kind .. ':' .. value
  -- a revocation is never narrowed by a later one
  local prev = redis.call('ZSCORE', zkey, member)
  if prev and tonumber(prev) > expires_at then expires_at = tonumber(prev) end
  if kind == 'sub' then
    local prev_before = redis.call('HGET', bkey, value)
    if prev_before and tonumber(prev_before) > before then before = tonumber(prev_before) end
    redis.call('HSET', bkey, value, string.format('%d', before))
  end
  redis.call('ZADD', zkey, string.format('%d', expires_at), member)
  expire_with_latest(zkey)
  local last = redis.call('ZRANGE', zkey, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', bkey, last[2]) end
  local message = encode_deny(kind, value, expires_at, before)
  redis.call('PUBLISH', P .. 'deny', message)
  return message
end
`

// ARGV: prefix, sid, sub, refreshHash, now, expiresAt, idleMs, userAgent, address
const CREATE_SESSION_LUA = `
local sid, sub, hash, now, expires_at, idle = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local skey = P .. 's:' .. sid
redis.call('DEL', skey)
redis.call('HSET', skey, 'sub', sub, 'createdAt', ARGV[5], 'lastUsedAt', ARGV[5], 'expiresAt', ARGV[6],
  'idleMs', ARGV[7], 'userAgent', ARGV[8], 'address', ARGV[9], 'current', hash)
redis.call('PEXPIREAT', skey, math.min(expires_at, now + idle))
local rkey = P .. 'r:' .. hash
redis.call('DEL', rkey)
redis.call('HSET', rkey, 'sid', sid)
redis.call('PEXPIREAT', rkey, expires_at)
local ukey = P .. 'u:' .. sub
redis.call('ZREMRANGEBYSCORE', ukey, '-inf', now)
redis.call('ZADD', ukey, expires_at, sid)
expire_with_latest(ukey)
return 1
`

// ARGV: prefix, presentedHash, newHash, sealedNew, now, graceMs, idleMs, accessTtlMs
const ROTATE_LUA = `
local presented, new_hash, sealed = ARGV[2], ARGV[3], ARGV[4]
local now, grace, idle, access_ttl = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local rkey = P .. 'r:' .. presented
local token = redis.call('HMGET', rkey, 'sid', 'next', 'at', 'sealed')
local sid = token[1]
if not sid then return {'invalid'} end
local s = read_session(sid)
if not s then return {'invalid'} end
s[8] = ARGV[7]
if not is_live(s, now) then return {'invalid'} end
local skey = P .. 's:' .. sid
local expires_at = tonumber(s[4])
s[3] = ARGV[5]

if s[7] == presented then
  redis.call('HSET', rkey, 'next', new_hash, 'at', ARGV[5], 'sealed', sealed)
  local nkey = P .. 'r:' .. new_hash
  redis.call('HSET', nkey, 'sid', sid)
  redis.call('PEXPIREAT', nkey, expires_at)
  redis.call('HSET', skey, 'current', new_hash, 'lastUsedAt', ARGV[5], 'idleMs', ARGV[7])
  redis.call('PEXPIREAT', skey, math.min(expires_at, now + idle))
  return {'rotated', session_row(sid, s)}
end

if token[2] and token[2] == s[7] and grace > 0 and now - tonumber(token[3]) <= grace then
  redis.call('HSET', skey, 'lastUsedAt', ARGV[5], 'idleMs', ARGV[7])
  redis.call('PEXPIREAT', skey, math.min(expires_at, now + idle))
  return {'grace', session_row(sid, s), token[4]}
end

drop_session(sid, s)
deny_write('sid', sid, now + access_ttl, 0, now)
return {'reuse', sid, s[1]}
`

// ARGV: prefix, refreshHash, now
const FIND_BY_REFRESH_LUA = `
local sid = redis.call('HGET', P .. 'r:' .. ARGV[2], 'sid')
if not sid then return false end
local s = read_session(sid)
-- only the current token names its session: a rotated one proves nothing a thief could not
if not s or s[7] ~= ARGV[2] or not is_live(s, tonumber(ARGV[3])) then return false end
return session_row(sid, s)
`

// ARGV: prefix, sid, now
const END_SESSION_LUA = `
local s = read_session(ARGV[2])
if not s then return false end
drop_session(ARGV[2], s)
if not is_live(s, tonumber(ARGV[3])) then return false end
return session_row(ARGV[2], s)
`

// ARGV: prefix, sub, now
const END_USER_SESSIONS_LUA = `
local ukey = P .. 'u:' .. ARGV[2]
local ended = {}
for _, sid in ipairs(redis.call('ZRANGE', ukey, 0, -1)) do
  local s = read_session(sid)
  if s then
    drop_session(sid, s)
    if is_live(s, tonumber(ARGV[3])) then table.insert(ended, sid) end
  end
end
redis.call('DEL', ukey)
return ended
`

// ARGV: prefix, sub, now
const LIST_SESSIONS_LUA = `
local ukey = P .. 'u:' .. ARGV[2]
local now = tonumber(ARGV[3])
local rows = {}
for _, sid in ipairs(redis.call('ZRANGE', ukey, 0, -1)) do
  local s = read_session(sid)
  if not s then
    redis.call('ZREM', ukey, sid)
  elseif is_live(s, now) then
    table.insert(rows, session_row(sid, s))
  end
end
return rows
`

// ARGV: prefix, kind, value, expiresAt, before, now
const REVOKE_LUA = `
return deny_write(ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
`

// ARGV: prefix, now
const LOAD_DENYLIST_LUA = `
local bkey = P .. 'deny:before'
local entries = {}
local members = redis.call('ZRANGEBYSCORE', P .. 'deny', '(' .. ARGV[2], '+inf', 'WITHSCORES')
for i = 1, #members, 2 do
  local kind, value = string.sub(members[i], 1, 3), string.sub(members[i], 5)
  local before = 0
  if kind == 'sub' then before = tonumber(redis.call('HGET', bkey, value) or '0') end
  table.insert(entries, encode_deny(kind, value, tonumber(members[i + 1]), before))
end
return entries
`

type Arg = string | number
interface Scripts {
  tgCreateSession (...args: Arg[]): Promise<unknown>
  tgRotate (...args: Arg[]): Promise<unknown>
  tgFindByRefresh (...args: Arg[]): Promise<unknown>
  tgEndSession (...args: Arg[]): Promise<unknown>
  tgEndUserSessions (...args: Arg[]): Promise<unknown>
  tgListSessions (...args: Arg[]): Promise<unknown>
  tgRevoke (...args: Arg[]): Promise<unknown>
  tgLoadDenylist (...args: Arg[]): Promise<unknown>
}
type ScriptedRedis = Redis & Scripts

const SCRIPTS: Record<keyof Scripts, string> = {
  tgCreateSession: CREATE_SESSION_LUA,
  tgRotate: ROTATE_LUA,
  tgFindByRefresh: FIND_BY_REFRESH_LUA,
  tgEndSession: END_SESSION_LUA,
  tgEndUserSessions: END_USER_SESSIONS_LUA,
  tgListSessions: LIST_SESSIONS_LUA,
  tgRevoke: REVOKE_LUA,
  tgLoadDenylist: LOAD_DENYLIST_LUA
}

function withScripts (redis: Redis): ScriptedRedis {
  for (const [name, body] of Object.entries(SCRIPTS)) {
    redis.defineCommand(name, { numberOfKeys: 0, lua: LUA_PRELUDE + body })
  }
  return redis as ScriptedRedis
}

interface FeedListener {
  onEntry: (entry: DenyEntry) => void
  onFeed: (live: boolean) => void
}

export class RedisStore implements SessionStore {
  readonly kind = 'redis' as const
  readonly #opts: RedisStoreOptions
  readonly #redis: ScriptedRedis
  readonly #channel: string
  #subscriber: Redis | undefined
  #subscribing: Promise<void> | undefined
  /** 'idle' until asked to subscribe; 'lost' whenever a live feed may have missed entries */
  #feed: 'idle' | 'live' | 'lost' = 'idle'
  readonly #listeners = new Set<FeedListener>()
  #everReady = false
  #closed = false

  constructor (opts: RedisStoreOptions) {
    validateOptions(opts)
    this.#opts = opts
    this.#channel = `${opts.keyPrefix}deny`
    this.#redis = withScripts(new Redis(opts.url, this.#clientOptions()))
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
    return parseReply('rotate', reply, parseRotateReply)
  }

  async findByRefresh (refreshHash: string, now: number): Promise<SessionInfo | null> {
    const reply = await this.#run('findByRefresh', (r) => r.tgFindByRefresh(this.#opts.keyPrefix, refreshHash, ms(now)))
    return reply === null ? null : parseReply('findByRefresh', reply, parseSessionRow)
  }

  async endSession (sid: string): Promise<SessionInfo | null> {
    const reply = await this.#run('endSession', (r) => r.tgEndSession(this.#opts.keyPrefix, sid, Date.now()))
    return reply === null ? null : parseReply('endSession', reply, parseSessionRow)
  }

  async endUserSessions (sub: string): Promise<string[]> {
    const reply = await this.#run('endUserSessions', (r) => r.tgEndUserSessions(this.#opts.keyPrefix, sub, Date.now()))
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
  async subscribeDenylist (onEntry: (entry: DenyEntry) => void, onFeed: (live: boolean) => void): Promise<void> {
    this.#assertOpen()
    this.#listeners.add({ onEntry, onFeed })
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

  #startSubscriber (): Redis {
    // autoResubscribe is off so that we know when the subscription is back,
    // which is when the mirror must reload what it may have missed.
    const subscriber = new Redis(this.#opts.url, { ...this.#clientOptions(), autoResubscribe: false })
    this.#subscriber = subscriber
    this.#watch(subscriber, 'Redis subscriber')
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

function validateOptions (opts: RedisStoreOptions): void {
  if (typeof opts.url !== 'string' || opts.url === '') throw new TypeError('url must be a non-empty string')
  if (typeof opts.keyPrefix !== 'string') throw new TypeError('keyPrefix must be a string')
  for (const name of ['connectTimeoutMs', 'commandTimeoutMs'] as const) {
    const value = opts[name]
    if (!Number.isFinite(value) || value <= 0) throw new TypeError(`${name} must be a positive number of milliseconds`)
  }
}

function unavailable (what: string, cause: unknown): StoreUnavailableError {
  return cause instanceof StoreUnavailableError ? cause : new StoreUnavailableError(`Redis ${what} failed`, { cause })
}

/**
 * Client options for a Redis the gateway must never wait on: a command fails
 * within `commandTimeoutMs`, or at once while disconnected, instead of queueing.
 */
export function fastFailClientOptions (connectTimeoutMs: number, commandTimeoutMs: number): RedisOptions {
  return {
    connectTimeout: connectTimeoutMs,
    commandTimeout: commandTimeoutMs,
    // Fail fast instead of queueing: a command queued while Redis is down
    // could run after its caller was told it failed (a consumed token).
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    retryStrategy: (attempt) => Math.min(RECONNECT_BASE_MS * 2 ** Math.min(attempt, 10), RECONNECT_MAX_MS)
  }
}

/**
 * Calls `onDown` once per outage, not at every reconnect attempt. The 'error'
 * listener is also what keeps ioredis from crashing the process.
 */
export function watchOutages (client: Redis, onDown: (err: Error) => void, onUp?: () => void): void {
  let down = false
  client.on('error', (err: Error) => {
    if (down) return
    down = true
    onDown(err)
  })
  client.on('ready', () => {
    // the outage ends once, where it began once: one line each
    if (down) onUp?.()
    down = false
  })
}

/** Says goodbye to a Redis that answers; one that cannot is simply dropped. */
export async function closeClient (client: Redis): Promise<void> {
  if (client.status === 'ready') {
    try {
      await client.quit()
      return
    } catch {
      // fall through to disconnect
    }
  }
  client.disconnect()
}

/** Resolves once `client` is connected, rejects after `timeoutMs` or when it gives up. */
export function whenReady (client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve()
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer)
      client.off('ready', onReady)
      client.off('end', onEnd)
      if (err === undefined) resolve()
      else reject(err)
    }
    const onReady = (): void => done()
    const onEnd = (): void => done(new Error('Redis connection ended'))
    const timer = setTimeout(() => done(new Error(`Redis not reachable within ${timeoutMs} ms`)), timeoutMs)
    client.once('ready', onReady)
    client.once('end', onEnd)
  })
}

/** Redis wants integer milliseconds. */
function ms (n: number): number {
  return Math.trunc(n)
}

function parseReply<T> (what: string, reply: unknown, parse: (v: unknown) => T): T {
  try {
    return parse(reply)
  } catch (err) {
    throw new StoreUnavailableError(`Redis ${what} answered something unexpected`, { cause: err })
  }
}

function asArray (v: unknown): unknown[] {
  if (!Array.isArray(v)) throw new TypeError('expected an array')
  return v
}

function asString (v: unknown): string {
  if (typeof v !== 'string') throw new TypeError('expected a string')
  return v
}

function asTime (v: unknown): number {
  const n = Number(asString(v))
  if (!Number.isSafeInteger(n)) throw new TypeError('expected an integer')
  return n
}

function parseSessionRow (v: unknown): SessionInfo {
  const [sid, sub, createdAt, lastUsedAt, expiresAt, userAgent, address] = asArray(v)
  return {
    sid: asString(sid),
    sub: asString(sub),
    createdAt: asTime(createdAt),
    lastUsedAt: asTime(lastUsedAt),
    expiresAt: asTime(expiresAt),
    userAgent: asString(userAgent),
    address: asString(address)
  }
}

function parseRotateReply (v: unknown): RotateOutcome {
  const reply = asArray(v)
  switch (reply[0]) {
    case 'rotated': return { kind: 'rotated', session: parseSessionRow(reply[1]) }
    case 'grace': return { kind: 'grace', session: parseSessionRow(reply[1]), sealedCurrent: asString(reply[2]) }
    case 'reuse': return { kind: 'reuse', sid: asString(reply[1]), sub: asString(reply[2]) }
    case 'invalid': return { kind: 'invalid' }
    default: throw new TypeError('unknown rotate outcome')
  }
}

/** The JSON the scripts publish and return: numbers as integer strings. */
export function parseDenyMessage (text: string): DenyEntry | null {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof v !== 'object' || v === null) return null
  const { kind, value, expiresAt, before } = v as Record<string, unknown>
  if (typeof value !== 'string' || typeof expiresAt !== 'string') return null
  const expires = Number(expiresAt)
  if (!Number.isSafeInteger(expires)) return null
  if (kind === 'jti' || kind === 'sid') return { kind, value, expiresAt: expires }
  if (kind !== 'sub' || typeof before !== 'string') return null
  const revokedBefore = Number(before)
  return Number.isSafeInteger(revokedBefore) ? { kind, value, before: revokedBefore, expiresAt: expires } : null
}
