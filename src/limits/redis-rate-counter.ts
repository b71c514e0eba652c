import { Cluster } from 'ioredis'
import type { RedisClient } from '../sessions/redis-client.js'
import { keySlot } from '../sessions/redis-slot.js'
import { answerCounts, failCounts, piecesOf, TurnBatcher, type CountBatch } from './count-batch.js'
import type { FastifyRateLimitStore, FastifyRateLimitStoreCtor } from '@fastify/rate-limit'

// Fixed-window counters in Redis for @fastify/rate-limit, shared by every
// instance. Each request is still counted in Redis before it is let through
// (no local allowance, no overshoot), but the counts asked for in one
// event-loop turn travel together: one script call, one write and one reply
// for all of them. Under load that turn holds many requests, and the round
// trip's system calls and ioredis's per-command work are paid once for the
// lot instead of once per request.
//
// On Redis Cluster one script may only touch keys of one slot, so a turn's
// counts are grouped by slot: one call per slot per turn, each still exact.
// Every counter's key carries one of RATE_SLOT_BUCKETS hash tags, chosen by
// the key, so a busy turn needs at most that many calls however many
// clients it counts, and the buckets spread over the cluster's shards.

// KEYS: the counters. ARGV[i]: the window of KEYS[i], ms.
// Returns, for each key in order, its count after this request and the ms
// until its window ends. A counter found without an expiry gets one, so a
// key written by something else cannot block its caller forever.
const COUNT_LUA = `
local out = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('INCR', key)
  local ttl = -1
  if current > 1 then ttl = redis.call('PTTL', key) end
  if ttl < 0 then
    ttl = tonumber(ARGV[i])
    redis.call('PEXPIRE', key, ttl)
  end
  out[2 * i - 1] = current
  out[2 * i] = ttl
end
return out
`

/** Keys per script call: bounds how long one call holds Redis's single thread. */
export const MAX_KEYS_PER_CALL = 256
/** Hash tags the counters are spread over: calls per turn on Cluster, at most. */
export const RATE_SLOT_BUCKETS = 16

export interface WindowCount {
  /** Requests counted in this window, this one included. */
  current: number
  /** Milliseconds until the window ends. */
  ttl: number
}

export type CountCallback = (err: Error | null, count?: WindowCount) => void

/** What counts requests for @fastify/rate-limit: this Redis counter, or the supervisor's (src/limits/supervisor-counters.ts). */
export interface WindowCounter {
  count (key: string, windowMs: number, callback: CountCallback): void
}

interface CountScript {
  tgRateCount (...numberOfKeysKeysAndWindows: Array<string | number>): Promise<unknown>
}

export class RedisRateCounter implements WindowCounter {
  readonly #redis: RedisClient & CountScript
  readonly #namespace: string
  readonly #bySlot: boolean
  readonly #batcher = new TurnBatcher((batch) => { this.#sendBatch(batch) })

  /**
   * `redis` must fail fast (no offline queue, a command timeout): a count
   * that waits is a request that hangs. Keys are stored as `namespace + key`.
   */
  constructor (redis: RedisClient, namespace: string) {
    // No numberOfKeys: the number of keys is the call's first argument.
    redis.defineCommand('tgRateCount', { lua: COUNT_LUA })
    this.#redis = redis as RedisClient & CountScript
    this.#namespace = namespace
    this.#bySlot = redis instanceof Cluster
  }

  /** The Redis key of a counter: `namespace{bucket}key`. */
  keyOf (key: string): string {
    return `${this.#namespace}{${bucketOf(key)}}${key}`
  }

  /** Counts one request under `key`; `callback` gets the count once Redis has it, or Redis's error. */
  count (key: string, windowMs: number, callback: CountCallback): void {
    this.#batcher.add(this.keyOf(key), windowMs, callback)
  }

  /** One script call per slot on Cluster (a call must stay in one slot), one in all elsewhere; each in pieces of MAX_KEYS_PER_CALL. */
  #sendBatch (batch: CountBatch): void {
    if (!this.#bySlot) {
      this.#sendPieces(batch)
      return
    }
    const groups = new Map<number, CountBatch>()
    for (let i = 0; i < batch.keys.length; i++) {
      const slot = keySlot(batch.keys[i]!)
      let group = groups.get(slot)
      if (group === undefined) {
        group = { keys: [], windows: [], callbacks: [] }
        groups.set(slot, group)
      }
      group.keys.push(batch.keys[i]!)
      group.windows.push(batch.windows[i]!)
      group.callbacks.push(batch.callbacks[i]!)
    }
    for (const group of groups.values()) this.#sendPieces(group)
  }

  #sendPieces (batch: CountBatch): void {
    for (const { keys, windows, callbacks } of piecesOf(batch, MAX_KEYS_PER_CALL)) {
      this.#redis.tgRateCount(keys.length, ...keys, ...windows).then(
        (reply) => { answerCounts(callbacks, reply, 'Redis rate-limit script answered an unexpected reply') },
        (err: unknown) => { failCounts(callbacks, err) }
      )
    }
  }
}

/** FNV-1a of the key, folded to a bucket: cheap, stable, and spread. */
function bucketOf (key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193)
  return (h >>> 0) % RATE_SLOT_BUCKETS
}

/**
 * The counter as a @fastify/rate-limit store class (the plugin constructs
 * its store itself). Every limiter shares the one namespace: the gateway's
 * keys already name their route.
 */
export function rateLimitStoreOf (counter: WindowCounter): FastifyRateLimitStoreCtor {
  return class RedisRateLimitStore implements FastifyRateLimitStore {
    incr (key: string, callback: CountCallback, timeWindow: number): void {
      counter.count(key, timeWindow, callback)
    }

    child (): FastifyRateLimitStore {
      return this
    }
  }
}
