import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { checkConfig, loadConfig } from '../../src/config/load-config.js'
import { waitReplicasOf } from '../../src/config/redis-config.js'
import { formatIssue } from '../../src/config/yaml-source.js'
import { redisTargetOf } from '../../src/sessions/redis-client.js'

// The redis section names one topology; anything ambiguous or malformed
// refuses to start, naming file:line:col and the key.

function write (redisLines: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-redis-config-'))
  writeFileSync(join(dir, 'users.yaml'), 'users: []\n')
  const file = join(dir, 'gateway.config.yaml')
  writeFileSync(file, [
    'tokens:',
    '  secret: Zq3v9XkP2mW7rT4yB8nD1sF6hJ0cL5aE',
    '  algorithm: HS256',
    'auth:',
    '  users: { file: ./users.yaml }',
    'routes: []',
    'redis:',
    ...redisLines.map((l) => `  ${l}`),
    ''
  ].join('\n'))
  return file
}

function problems (redisLines: string[]): { file: string, text: string, count: number } {
  const file = write(redisLines)
  const { loaded, issues } = checkConfig(file, {})
  return { file, text: loaded === null ? issues.map(formatIssue).join('\n') : '', count: issues.length }
}

t.test('two topologies at once are refused at the second', async (t) => {
  const p = problems(['url: redis://127.0.0.1:6379', 'sentinels: ["127.0.0.1:26379"]', 'masterName: mymaster'])
  t.match(p.text, `${p.file}:9:14 redis.sentinels cannot be given with redis.url: set exactly one of redis.url, redis.sentinels, redis.cluster`)
  t.equal(p.count, 1, p.text)
})

t.test('an empty list and a malformed host:port are refused, each at its place', async (t) => {
  const empty = problems(['sentinels: []', 'masterName: mymaster'])
  t.match(empty.text, `${empty.file}:8:14 redis.sentinels must list at least one "host:port"`)
  const bad = problems(['sentinels:', '  - 127.0.0.1:26379', '  - "127.0.0.1"', '  - "10.0.0.1:99999"', 'masterName: mymaster'])
  t.match(bad.text, `${bad.file}:10:7 redis.sentinels[1] "127.0.0.1" is not "host:port" with a port from 1 to 65535`)
  t.match(bad.text, `${bad.file}:11:7 redis.sentinels[2] "10.0.0.1:99999" is not "host:port"`)
  t.equal(bad.count, 2, bad.text)
  const cluster = problems(['cluster: ["a:1", "b"]'])
  t.match(cluster.text, 'redis.cluster[1] "b" is not "host:port"')
})

t.test('Sentinel needs its master name; its companions need Sentinel; credentials need a Redis', async (t) => {
  const noName = problems(['sentinels: ["127.0.0.1:26379"]'])
  t.match(noName.text, `${noName.file}:8:14 redis.sentinels needs redis.masterName`)
  const stray = problems(['url: redis://127.0.0.1:6379', 'masterName: mymaster'])
  t.match(stray.text, `${stray.file}:9:15 redis.masterName only applies with redis.sentinels`)
  const lonely = problems(['password: secret'])
  t.match(lonely.text, `${lonely.file}:8:13 redis.password has no Redis to apply to`)
  const notRedis = problems(['url: http://127.0.0.1:6379'])
  t.match(notRedis.text, 'redis.url must be a redis:// or rediss:// URL')
})

t.test('a valid Cluster config loads into a target of seed nodes with credentials and TLS; an empty one is refused', async (t) => {
  const file = write(['cluster: ["10.0.0.1:7000", "node-2.example:7001", "[::1]:7002"]', 'username: gw', 'password: p4', 'tls: true'])
  const { config } = loadConfig(file, {})
  t.same(redisTargetOf(config.redis), {
    cluster: [{ host: '10.0.0.1', port: 7000 }, { host: 'node-2.example', port: 7001 }, { host: '::1', port: 7002 }],
    username: 'gw',
    password: 'p4',
    tls: true
  })
  const empty = problems(['cluster: []'])
  t.match(empty.text, `${empty.file}:8:12 redis.cluster must list at least one "host:port"`)
  const both = problems(['cluster: ["127.0.0.1:7000"]', 'sentinels: ["127.0.0.1:26379"]', 'masterName: m'])
  t.match(both.text, 'redis.cluster cannot be given with redis.sentinels')
})

t.test('a valid Sentinel config loads into a target with credentials and TLS', async (t) => {
  const file = write(['sentinels: ["10.0.0.1:26379", "[::1]:26380"]', 'masterName: mymaster', 'sentinelPassword: s3', 'username: gw', 'password: p4', 'tls: true'])
  const { config } = loadConfig(file, {})
  t.same(redisTargetOf(config.redis), {
    sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: '::1', port: 26380 }],
    masterName: 'mymaster',
    sentinelPassword: 's3',
    username: 'gw',
    password: 'p4',
    tls: true
  })
  t.equal(redisTargetOf(loadConfig(write(['keyPrefix: "tg:"']), {}).config.redis), null, 'no redis: the in-process store')
})

t.test('revocations wait for one replica on Sentinel by default, none on a single url; waitTimeout fits in commandTimeout', async (t) => {
  const sentinel = loadConfig(write(['sentinels: ["10.0.0.1:26379"]', 'masterName: m']), {}).config.redis
  t.equal(waitReplicasOf(sentinel), 1)
  t.equal(waitReplicasOf(loadConfig(write(['cluster: ["10.0.0.1:7000"]']), {}).config.redis), 1, 'one on Cluster too')
  t.equal(waitReplicasOf(loadConfig(write(['url: redis://127.0.0.1:6379']), {}).config.redis), 0)
  t.equal(waitReplicasOf(loadConfig(write(['url: redis://127.0.0.1:6379', 'waitReplicas: 2']), {}).config.redis), 2)
  const slow = problems(['url: redis://127.0.0.1:6379', 'waitReplicas: 1', 'waitTimeout: 1s', 'commandTimeout: 500ms'])
  t.match(slow.text, `${slow.file}:10:16 redis.waitTimeout waitTimeout (1s) must be shorter than redis.commandTimeout (500ms)`)
})
