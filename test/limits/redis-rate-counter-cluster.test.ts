import t from 'tap'
import { RATE_SLOT_BUCKETS, RedisRateCounter, type WindowCount } from '../../src/limits/redis-rate-counter.js'
import { parseNode, type RedisNode } from '../../src/config/redis-config.js'
import { closeClient, createRedisClient, fastFailClientOptions, watchOutages, whenReady } from '../../src/sessions/redis-client.js'
import { startClusterTopology } from '../helpers/redis-cluster.js'
import { PLAIN_TCP, uniquePrefix, withNode } from '../helpers/redis-server.js'

// The rate counter on a real Redis Cluster: a turn's counts span many slots,
// and a script may touch one slot only, so they are grouped by slot. With
// 200 distinct keys counted three times each in one turn, every count comes
// back exact and in order, every key holds exactly its count, and the turn
// costs at most one script call per hash-tag bucket across the whole cluster.

const WINDOW_MS = 60_000
const DISTINCT_KEYS = 200
const PER_KEY = 3

function countNow (counter: RedisRateCounter, key: string): Promise<WindowCount> {
  return new Promise((resolve, reject) => {
    counter.count(key, WINDOW_MS, (err, count) => {
      if (err !== null) reject(err)
      else if (count === undefined) reject(new Error('no count'))
      else resolve(count)
    })
  })
}

t.test(`${DISTINCT_KEYS} distinct keys in one turn on Cluster: exact counts, one call per slot`, async (t) => {
  const topology = await startClusterTopology(t)
  const nodes = topology.seeds.map((s) => parseNode(s)).filter((n): n is RedisNode => n !== null)
  const redis = createRedisClient({ cluster: nodes }, fastFailClientOptions(1000, 1500))
  watchOutages(redis, () => {})
  t.teardown(() => closeClient(redis))
  await whenReady(redis, 5000)
  const counter = new RedisRateCounter(redis, uniquePrefix('rate-cluster'))
  const bucketOf = (key: string): string => /\{(\d+)\}/.exec(counter.keyOf(key))?.[1] ?? ''

  // one warm-up count per bucket, so that every primary has the script and
  // the turn below is not paid a NOSCRIPT and a resend
  const warm = new Map<string, string>()
  for (let i = 0; warm.size < RATE_SLOT_BUCKETS; i++) warm.set(bucketOf(`warm-${i}`), `warm-${i}`)
  for (const key of warm.values()) await countNow(counter, key)
  const stats = async (): Promise<{ evalsha: number, eval: number, incr: number }> => {
    const sum = { evalsha: 0, eval: 0, incr: 0 }
    for (const node of nodes) {
      // a replica applies its primary's INCRs too: count what the primaries were asked
      const [role, info] = await withNode(PLAIN_TCP, node.port, async (r) => [await r.info('replication'), await r.info('commandstats')])
      if (!/^role:master/m.test(role)) continue
      for (const command of ['evalsha', 'eval', 'incr'] as const) sum[command] += Number(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, 'm').exec(info)?.[1] ?? 0)
    }
    return sum
  }
  for (const node of nodes) await withNode(PLAIN_TCP, node.port, (r) => r.config('RESETSTAT'))

  const keys = Array.from({ length: DISTINCT_KEYS }, (_, i) => `client-${i}`)
  const pending: Array<Promise<WindowCount>> = []
  for (let round = 0; round < PER_KEY; round++) for (const key of keys) pending.push(countNow(counter, key))
  const counts = await Promise.all(pending)

  const wrong = keys.filter((_key, k) => {
    const seen = counts.filter((_, i) => i % DISTINCT_KEYS === k).map((c) => c.current)
    return seen.join() !== '1,2,3'
  })
  t.same(wrong, [], `every key counted 1, 2, 3 in the order asked (${counts.length} counts)`)
  const primaries = new Set(await Promise.all(keys.map((key) => topology.primaryOf(counter.keyOf(key)))))
  t.ok(primaries.size > 1, `the keys live on ${primaries.size} primaries`)

  const held = await Promise.all(keys.map((key) => redis.get(counter.keyOf(key))))
  t.same(held.filter((v) => v !== String(PER_KEY)), [], `Redis holds exactly ${PER_KEY} for each of the ${DISTINCT_KEYS} keys`)
  const calls = await stats()
  t.equal(calls.incr, DISTINCT_KEYS * PER_KEY, 'every request counted once')
  t.equal(calls.eval, 0, 'no script was resent')
  t.ok(calls.evalsha > 0 && calls.evalsha <= RATE_SLOT_BUCKETS, `one turn, ${calls.evalsha} script calls across the cluster: at most one per bucket (${RATE_SLOT_BUCKETS})`)
})
