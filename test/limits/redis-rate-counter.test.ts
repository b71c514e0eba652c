import t from 'tap'
import { Redis } from 'ioredis'
import { MAX_KEYS_PER_CALL, RedisRateCounter, type WindowCount } from '../../src/limits/redis-rate-counter.js'
import { closeClient, fastFailClientOptions, watchOutages, whenReady } from '../../src/sessions/redis-client.js'
import { startPrivateRedis, uniquePrefix } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'

// The Redis counter behind rate-limited routes, against a redis-server of
// this file's own (so INFO commandstats counts only what this test sends):
// counts of one event-loop turn travel in one script call and still come
// back exact and in order; every counter has an expiry; a Redis that goes
// away fails each waiting count at once, and counting resumes when it is back.

const WINDOW_MS = 60_000

function countNow (counter: RedisRateCounter, key: string, windowMs = WINDOW_MS): Promise<WindowCount> {
  return new Promise((resolve, reject) => {
    counter.count(key, windowMs, (err, count) => {
      if (err !== null) reject(err)
      else if (count === undefined) reject(new Error('no count'))
      else resolve(count)
    })
  })
}

async function scriptCalls (redis: Redis): Promise<{ evalsha: number, eval: number, incr: number }> {
  const info = await redis.info('commandstats')
  const calls = (command: string): number => Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0)
  return { evalsha: calls('evalsha'), eval: calls('eval'), incr: calls('incr') }
}

t.test('counts asked for in one turn go in one script call per 256 keys, exact and in order', async (t) => {
  const server = await startPrivateRedis()
  t.teardown(server.stop)
  const redis = new Redis(server.url)
  const probe = new Redis(server.url)
  t.teardown(() => { redis.disconnect(); probe.disconnect() })
  const prefix = uniquePrefix('rate-counter')
  const counter = new RedisRateCounter(redis, prefix)

  t.same(await countNow(counter, 'warm'), { current: 1, ttl: WINDOW_MS }, 'a new counter starts at 1 with the whole window')
  await probe.config('RESETSTAT')

  const keys = ['a', 'b', 'c']
  const total = 300
  const pending: Array<Promise<WindowCount>> = []
  for (let i = 0; i < total; i++) pending.push(countNow(counter, keys[i % keys.length]!))
  const counts = await Promise.all(pending)

  for (const [k, key] of keys.entries()) {
    const seen = counts.filter((_, i) => i % keys.length === k).map((c) => c.current)
    t.same(seen, Array.from({ length: total / keys.length }, (_, i) => i + 1), `key ${key}: 1, 2, 3 … in the order asked`)
  }
  t.ok(counts.every((c) => c.ttl > 0 && c.ttl <= WINDOW_MS), 'each answer carries the time left in its window')
  t.same(await scriptCalls(probe), { evalsha: Math.ceil(total / MAX_KEYS_PER_CALL), eval: 0, incr: total },
    `${total} counts in one turn: ${Math.ceil(total / MAX_KEYS_PER_CALL)} script calls, every request counted`)

  for (const key of keys) {
    t.equal(await probe.get(counter.keyOf(key)), String(total / keys.length), `Redis holds ${key}'s count under the prefix`)
    const ttl = await probe.pttl(counter.keyOf(key))
    t.ok(ttl > 0 && ttl <= WINDOW_MS, `${key} expires with its window`)
  }
})

t.test('a counter found without an expiry gets one instead of blocking its key for ever', async (t) => {
  const server = await startPrivateRedis()
  t.teardown(server.stop)
  const redis = new Redis(server.url)
  t.teardown(() => redis.disconnect())
  const prefix = uniquePrefix('rate-counter')
  const counter = new RedisRateCounter(redis, prefix)

  await redis.set(counter.keyOf('stuck'), '41')
  t.same(await countNow(counter, 'stuck', 5000), { current: 42, ttl: 5000 }, 'counted on, and given the whole window')
  const ttl = await redis.pttl(counter.keyOf('stuck'))
  t.ok(ttl > 0 && ttl <= 5000, 'the key expires now')

  await redis.del(counter.keyOf('stuck'))
  t.same(await countNow(counter, 'stuck', 5000), { current: 1, ttl: 5000 }, 'a window that ended starts again at 1')
})

t.test('Redis gone: every waiting count fails at once; counting resumes when it is back', async (t) => {
  const server = await startPrivateRedis()
  t.teardown(server.stop)
  const redis = new Redis(server.url, fastFailClientOptions(500, 300))
  watchOutages(redis, () => {})
  t.teardown(() => closeClient(redis))
  const prefix = uniquePrefix('rate-counter')
  const counter = new RedisRateCounter(redis, prefix)
  await whenReady(redis, 2000)
  t.equal((await countNow(counter, 'k')).current, 1)

  await server.stop()
  await waitFor('the client notices', () => redis.status !== 'ready')
  const results = await Promise.allSettled([countNow(counter, 'k'), countNow(counter, 'k'), countNow(counter, 'other')])
  t.same(results.map((r) => r.status), ['rejected', 'rejected', 'rejected'], 'each count in the batch is told')

  await server.start()
  await waitFor('the client reconnects', () => redis.status === 'ready', 400)
  t.same(await countNow(counter, 'k', 1000), { current: 1, ttl: 1000 }, 'counting again (the restarted Redis kept nothing)')
})
