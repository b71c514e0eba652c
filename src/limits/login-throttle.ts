import type { RedisClient } from '../sessions/redis-client.js'
import { StoreUnavailableError } from '../sessions/session-store.js'

// Login throttling: failed attempts are counted per account (lower-cased
// username, known or not, so the answer tells nothing about existence) and
// per client address, each in a fixed window. Once either budget is spent,
// every attempt is refused until that window ends, the right password
// included; the lock is never longer than one window.
//
// Only failures count, as the large identity providers do (Azure AD smart
// lockout, Auth0 brute-force protection, Okta, Keycloak): people behind one
// NAT address who log in successfully never lock each other out. To count
// only failures without a race (a burst of parallel guesses all passing a
// "peek" before any failure is recorded), an attempt first takes a unit from
// both budgets atomically, and a success gives it back. A counter given back
// to zero is dropped, so that a window starts with the first failure, not
// with a success that happened to come first.

export interface LoginBudget {
  /** failed attempts per account per window */
  accountMax: number
  /** failed attempts per client address per window */
  addressMax: number
  windowMs: number
}

export interface LoginAttempt {
  /** the lower-cased username */
  account: string
  /** the normalised client address (IPv6 grouped by /64) */
  address: string
}

export type ThrottleVerdict = { allowed: true } | { allowed: false, retryAfterMs: number }

export interface LoginThrottle {
  /** Takes one attempt from both budgets, or none when either is spent. */
  take (attempt: LoginAttempt, now: number): Promise<ThrottleVerdict>
  /** Gives back the attempt of a successful login: only failures count. */
  giveBack (attempt: LoginAttempt, now: number): Promise<void>
}

/**
 * Runs `check` (a password or client-secret check) for an attempt already
 * taken from the budgets. When it cannot answer (it throws: a user database
 * or store that is down has checked nothing), the attempt is given back
 * before the error goes on, so retries through an outage lock nobody out
 * once it is over. A check that answers keeps the unit; a success gives it
 * back as usual.
 */
export async function checkedAttempt<T> (throttle: LoginThrottle, attempt: LoginAttempt, check: () => Promise<T>): Promise<T> {
  try {
    return await check()
  } catch (err) {
    // best effort: a throttle that cannot give back now (its Redis is down too) must not hide the outage's own error
    await throttle.giveBack(attempt, Date.now()).catch(() => {})
    throw err
  }
}

const ALLOWED: ThrottleVerdict = { allowed: true }

/** Bounds the in-process map against a spray of distinct usernames and addresses. */
export const MAX_LOCAL_COUNTERS = 100_000

interface Counter {
  count: number
  resetAt: number
}

export class MemoryLoginThrottle implements LoginThrottle {
  readonly #budget: LoginBudget
  readonly #counters = new Map<string, Counter>()
  readonly #maxCounters: number

  constructor (budget: LoginBudget, maxCounters = MAX_LOCAL_COUNTERS) {
    this.#budget = budget
    this.#maxCounters = maxCounters
  }

  async take (attempt: LoginAttempt, now: number): Promise<ThrottleVerdict> {
    const account = this.#live(`u:${attempt.account}`, now)
    const address = this.#live(`a:${attempt.address}`, now)
    let waitMs = -1
    if (account !== undefined && account.count >= this.#budget.accountMax) waitMs = account.resetAt - now
    if (address !== undefined && address.count >= this.#budget.addressMax) waitMs = Math.max(waitMs, address.resetAt - now)
    if (waitMs >= 0) return { allowed: false, retryAfterMs: waitMs }
    this.#bump(`u:${attempt.account}`, account, now)
    this.#bump(`a:${attempt.address}`, address, now)
    return ALLOWED
  }

  async giveBack (attempt: LoginAttempt, now: number): Promise<void> {
    for (const key of [`u:${attempt.account}`, `a:${attempt.address}`]) {
      const counter = this.#live(key, now)
      if (counter === undefined) continue
      if (counter.count > 1) counter.count--
      else this.#counters.delete(key)
    }
  }

  #live (key: string, now: number): Counter | undefined {
    const counter = this.#counters.get(key)
    if (counter === undefined || counter.resetAt > now) return counter
    this.#counters.delete(key)
    return undefined
  }

  #bump (key: string, counter: Counter | undefined, now: number): void {
    if (counter !== undefined) {
      counter.count++
      return
    }
    if (this.#counters.size >= this.#maxCounters) this.#evict(now)
    this.#counters.set(key, { count: 1, resetAt: now + this.#budget.windowMs })
  }

  /** Drops expired counters; if that is not enough, the oldest (a Map iterates in insertion order). */
  #evict (now: number): void {
    for (const [key, counter] of this.#counters) if (counter.resetAt <= now) this.#counters.delete(key)
    for (const key of this.#counters.keys()) {
      if (this.#counters.size < this.#maxCounters) break
      this.#counters.delete(key)
    }
  }
}

// KEYS: account counter, address counter. ARGV: accountMax, addressMax, windowMs.
// Returns -1 when the attempt was taken, else the milliseconds until the spent window ends.
const TAKE_LUA = `
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2])}
local wait = -1
for i = 1, 2 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n >= limits[i] then
    local ttl = redis.call('PTTL', KEYS[i])
    -- a counter without an expiry would lock forever
    if ttl < 0 then
      redis.call('PEXPIRE', KEYS[i], ARGV[3])
      ttl = tonumber(ARGV[3])
    end
    if ttl > wait then wait = ttl end
  end
end
if wait >= 0 then return wait end
for i = 1, 2 do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return -1
`

// KEYS: account counter, address counter. DECR keeps the key's expiry; the
// last unit deletes the key, so the next failure starts a window of its own.
const GIVE_BACK_LUA = `
for i = 1, 2 do
  local n = tonumber(redis.call('GET', KEYS[i]) or '0')
  if n > 1 then redis.call('DECR', KEYS[i]) elseif n == 1 then redis.call('DEL', KEYS[i]) end
end
return 0
`

interface ThrottleScripts {
  tgLoginTake (accountKey: string, addressKey: string, accountMax: number, addressMax: number, windowMs: number): Promise<unknown>
  tgLoginGiveBack (accountKey: string, addressKey: string): Promise<unknown>
}

/**
 * The same counters in Redis, shared by every instance. Both keys of an
 * attempt are touched by one script, so they share one hash tag, `{login}`:
 * an address's budget spans every account, so no narrower tag could hold
 * both. On Cluster all login counters thus live on one shard — a few small
 * keys per failed login, which that shard carries easily.
 */
export class RedisLoginThrottle implements LoginThrottle {
  readonly #budget: LoginBudget
  readonly #redis: RedisClient & ThrottleScripts
  readonly #prefix: string
  readonly #onError: (() => void) | undefined

  /**
   * `redis` must fail fast (no offline queue, a command timeout): a throttle that waits is a hang.
   * `onError` is told of each failed command (for a metric).
   */
  constructor (budget: LoginBudget, redis: RedisClient, keyPrefix: string, onError?: () => void) {
    this.#budget = budget
    this.#onError = onError
    redis.defineCommand('tgLoginTake', { numberOfKeys: 2, lua: TAKE_LUA })
    redis.defineCommand('tgLoginGiveBack', { numberOfKeys: 2, lua: GIVE_BACK_LUA })
    this.#redis = redis as RedisClient & ThrottleScripts
    this.#prefix = `${keyPrefix}{login}`
  }

  async take (attempt: LoginAttempt): Promise<ThrottleVerdict> {
    const { accountMax, addressMax, windowMs } = this.#budget
    let reply: unknown
    try {
      reply = await this.#redis.tgLoginTake(`${this.#prefix}u:${attempt.account}`, `${this.#prefix}a:${attempt.address}`, accountMax, addressMax, windowMs)
    } catch (err) {
      this.#onError?.()
      throw new StoreUnavailableError('Redis login throttle failed', { cause: err })
    }
    if (typeof reply !== 'number') throw new StoreUnavailableError('Redis login throttle answered nonsense')
    return reply < 0 ? ALLOWED : { allowed: false, retryAfterMs: reply }
  }

  async giveBack (attempt: LoginAttempt): Promise<void> {
    try {
      await this.#redis.tgLoginGiveBack(`${this.#prefix}u:${attempt.account}`, `${this.#prefix}a:${attempt.address}`)
    } catch (err) {
      this.#onError?.()
      throw new StoreUnavailableError('Redis login throttle failed', { cause: err })
    }
  }
}
