import type { Redis } from 'ioredis'

// The Lua scripts of the Redis store: every mutation that must be atomic is
// one script, registered once per client with defineCommand.
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
export type ScriptedRedis = Redis & Scripts

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

export function withScripts (redis: Redis): ScriptedRedis {
  for (const [name, body] of Object.entries(SCRIPTS)) {
    redis.defineCommand(name, { numberOfKeys: 0, lua: LUA_PRELUDE + body })
  }
  return redis as ScriptedRedis
}
