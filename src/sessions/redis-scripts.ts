import type { ChainableCommander, Cluster, Redis } from 'ioredis'

// The Lua scripts of the Redis store: every mutation that must be atomic is
// one script, registered once per client with defineCommand, with every key
// it touches in KEYS. The keys one script touches share a hash tag, so each
// script runs in one slot: the same layout serves one node, Sentinel and
// Redis Cluster.
//
// Keys (P = keyPrefix; every key carries a PEXPIREAT):
//   P{<sid>}s          hash  the session and the hash of its current refresh token
//   P{<sid>}r:<hash>   hash  a rotated-out refresh token: its successor, when, sealed
//   P{u:<sub>}         zset  the user's sids, scored by their absolute end
//   P{deny}            zset  `jti:<v>` | `sid:<v>` | `sub:<v>`, scored by expiresAt
//   P{deny}before      hash  sub -> `before` of that user's entry
// Channel P{deny} carries each written entry as JSON (SPUBLISH on Cluster,
// PUBLISH elsewhere): it hashes to the denylist's slot, so on Cluster it is
// delivered by the shard that holds the denylist.
//
// What spans slots is never one script: a login indexes the session under
// its user, then writes it; a logout-all reads the index, then ends each
// session; a revocation is written to {deny} first and the session cleaned
// up after, so a failure in between leaves a revoked session, never an
// unrevoked one (see redis-store.ts).

const LUA_PRELUDE = `
local SESSION_FIELDS = {'sub', 'createdAt', 'lastUsedAt', 'expiresAt', 'userAgent', 'address', 'current', 'idleMs'}

local function read_session(skey)
  local s = redis.call('HMGET', skey, unpack(SESSION_FIELDS))
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

-- numbers travel as integer strings: cjson would round 13-digit millisecond times
local function encode_deny(kind, value, expires_at, before)
  local e = {kind = kind, value = value, expiresAt = string.format('%d', expires_at)}
  if kind == 'sub' then e.before = string.format('%d', before) end
  return cjson.encode(e)
end
`

// KEYS: session. ARGV: sid, sub, refreshHash, now, expiresAt, idleMs, userAgent, address
const CREATE_SESSION_LUA = `
local skey = KEYS[1]
local now, expires_at, idle = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('DEL', skey)
redis.call('HSET', skey, 'sub', ARGV[2], 'createdAt', ARGV[4], 'lastUsedAt', ARGV[4], 'expiresAt', ARGV[5],
  'idleMs', ARGV[6], 'userAgent', ARGV[7], 'address', ARGV[8], 'current', ARGV[3])
redis.call('PEXPIREAT', skey, math.min(expires_at, now + idle))
return 1
`

// KEYS: the user's index. ARGV: sid, expiresAt, now
const INDEX_SESSION_LUA = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
expire_with_latest(KEYS[1])
return 1
`

// KEYS: session, presented token. ARGV: sid, presentedHash, newHash, sealedNew, now, graceMs, idleMs
// A reuse is only reported here: the store revokes the session in {deny}
// first and ends it after, so nothing is dropped before the revocation holds.
const ROTATE_LUA = `
local skey, rkey = KEYS[1], KEYS[2]
local sid, presented, new_hash, sealed = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now, grace, idle = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local s = read_session(skey)
if not s then return {'invalid'} end
s[8] = ARGV[7]
if not is_live(s, now) then return {'invalid'} end
local expires_at = tonumber(s[4])
s[3] = ARGV[5]

if s[7] == presented then
  redis.call('HSET', rkey, 'next', new_hash, 'at', ARGV[5], 'sealed', sealed)
  redis.call('PEXPIREAT', rkey, expires_at)
  redis.call('HSET', skey, 'current', new_hash, 'lastUsedAt', ARGV[5], 'idleMs', ARGV[7])
  redis.call('PEXPIREAT', skey, math.min(expires_at, now + idle))
  return {'rotated', session_row(sid, s)}
end

local token = redis.call('HMGET', rkey, 'next', 'at', 'sealed')
-- a token this session never issued proves nothing: knowing a sid must not end its session
if not token[1] then return {'invalid'} end
if token[1] == s[7] and grace > 0 and now - tonumber(token[2]) <= grace then
  redis.call('HSET', skey, 'lastUsedAt', ARGV[5], 'idleMs', ARGV[7])
  redis.call('PEXPIREAT', skey, math.min(expires_at, now + idle))
  return {'grace', session_row(sid, s), token[3]}
end
return {'reuse', sid, s[1]}
`

// KEYS: session. ARGV: sid, refreshHash, now
const FIND_BY_REFRESH_LUA = `
local s = read_session(KEYS[1])
-- only the current token names its session: a rotated one proves nothing a thief could not
if not s or s[7] ~= ARGV[2] or not is_live(s, tonumber(ARGV[3])) then return false end
return session_row(ARGV[1], s)
`

// KEYS: session. ARGV: sid, now. Returns {live (1|0), row}, or false when there was none.
const END_SESSION_LUA = `
local s = read_session(KEYS[1])
if not s then return false end
redis.call('DEL', KEYS[1])
local live = 0
if is_live(s, tonumber(ARGV[2])) then live = 1 end
return {live, session_row(ARGV[1], s)}
`

// KEYS: denylist, denylist befores. ARGV: kind, value, expiresAt, before, now, publish command, channel
const REVOKE_LUA = `
local zkey, bkey = KEYS[1], KEYS[2]
local kind, value, expires_at, before, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
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
redis.call(ARGV[6], ARGV[7], message)
return message
`

// KEYS: denylist, denylist befores. ARGV: now
const LOAD_DENYLIST_LUA = `
local entries = {}
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
for i = 1, #members, 2 do
  local kind, value = string.sub(members[i], 1, 3), string.sub(members[i], 5)
  local before = 0
  if kind == 'sub' then before = tonumber(redis.call('HGET', KEYS[2], value) or '0') end
  table.insert(entries, encode_deny(kind, value, tonumber(members[i + 1]), before))
end
return entries
`

type Arg = string | number
/** The scripts, each called with its KEYS first, then its ARGV. */
export interface Scripts<R> {
  tgCreateSession (...args: Arg[]): R
  tgIndexSession (...args: Arg[]): R
  tgRotate (...args: Arg[]): R
  tgFindByRefresh (...args: Arg[]): R
  tgEndSession (...args: Arg[]): R
  tgRevoke (...args: Arg[]): R
  tgLoadDenylist (...args: Arg[]): R
}
export type ScriptedRedis = (Redis | Cluster) & Scripts<Promise<unknown>>
/** A pipeline of one script and, behind it, the WAIT that must run on the same node. */
export type ScriptedPipeline = ChainableCommander & Scripts<ChainableCommander>

const SCRIPTS: Record<keyof Scripts<unknown>, { keys: number, lua: string }> = {
  tgCreateSession: { keys: 1, lua: CREATE_SESSION_LUA },
  tgIndexSession: { keys: 1, lua: INDEX_SESSION_LUA },
  tgRotate: { keys: 2, lua: ROTATE_LUA },
  tgFindByRefresh: { keys: 1, lua: FIND_BY_REFRESH_LUA },
  tgEndSession: { keys: 1, lua: END_SESSION_LUA },
  tgRevoke: { keys: 2, lua: REVOKE_LUA },
  tgLoadDenylist: { keys: 2, lua: LOAD_DENYLIST_LUA }
}

export function withScripts (redis: Redis | Cluster): ScriptedRedis {
  for (const [name, { keys, lua }] of Object.entries(SCRIPTS)) {
    redis.defineCommand(name, { numberOfKeys: keys, lua: LUA_PRELUDE + lua })
  }
  return redis as ScriptedRedis
}

/** The store's keys under `prefix`; see the table above. */
export class StoreKeys {
  readonly deny: string
  readonly denyBefore: string
  /** the denylist channel: the same hash tag as the denylist, so the same shard */
  readonly channel: string
  readonly #prefix: string

  constructor (prefix: string) {
    this.#prefix = prefix
    this.deny = `${prefix}{deny}`
    this.denyBefore = `${prefix}{deny}before`
    this.channel = `${prefix}{deny}`
  }

  session (sid: string): string {
    return `${this.#prefix}{${sid}}s`
  }

  token (sid: string, hash: string): string {
    return `${this.#prefix}{${sid}}r:${hash}`
  }

  user (sub: string): string {
    return `${this.#prefix}{u:${sub}}`
  }
}
