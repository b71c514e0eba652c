import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import t from 'tap'
import { checkConfig, loadConfig } from '../../src/config/load-config.js'
import { waitReplicasOf } from '../../src/config/redis-config.js'
import { formatIssue } from '../../src/config/yaml-source.js'
import { createThrowawayCa } from '../helpers/throwaway-ca.js'

// The redis section names one topology; anything ambiguous or malformed
// refuses to start, naming file:line:col and the key. So do the TLS files.

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
  t.same(loadConfig(file, {}).redisTarget, {
    cluster: [{ host: '10.0.0.1', port: 7000 }, { host: 'node-2.example', port: 7001 }, { host: '::1', port: 7002 }],
    username: 'gw',
    password: 'p4',
    tls: {}
  })
  const empty = problems(['cluster: []'])
  t.match(empty.text, `${empty.file}:8:12 redis.cluster must list at least one "host:port"`)
  const both = problems(['cluster: ["127.0.0.1:7000"]', 'sentinels: ["127.0.0.1:26379"]', 'masterName: m'])
  t.match(both.text, 'redis.cluster cannot be given with redis.sentinels')
})

t.test('a valid Sentinel config loads into a target with credentials and TLS', async (t) => {
  const file = write(['sentinels: ["10.0.0.1:26379", "[::1]:26380"]', 'masterName: mymaster', 'sentinelPassword: s3', 'username: gw', 'password: p4', 'tls: true'])
  t.same(loadConfig(file, {}).redisTarget, {
    sentinels: [{ host: '10.0.0.1', port: 26379 }, { host: '::1', port: 26380 }],
    masterName: 'mymaster',
    sentinelPassword: 's3',
    username: 'gw',
    password: 'p4',
    tls: {}
  })
  t.equal(loadConfig(write(['keyPrefix: "tg:"']), {}).redisTarget, null, 'no redis: the in-process store')
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

t.test('redis.tls names PEM files relative to the config file; the target carries what they hold', async (t) => {
  const ca = createThrowawayCa(t, 'config')
  const file = write(['url: rediss://127.0.0.1:6380', 'tls:', '  ca: ./ca.pem', `  cert: ${ca.client.cert}`, `  key: ${ca.client.key}`, '  servername: redis.internal'])
  copyFileSync(ca.ca, join(dirname(file), 'ca.pem'))
  const { redisTarget } = loadConfig(file, {})
  t.same(redisTarget?.tls, {
    ca: readFileSync(ca.ca, 'utf8').trim(),
    cert: readFileSync(ca.client.cert, 'utf8').trim(),
    key: readFileSync(ca.client.key, 'utf8'),
    servername: 'redis.internal'
  })
  t.same(loadConfig(write(['url: rediss://127.0.0.1:6380']), {}).redisTarget?.tls, {}, 'rediss:// alone: TLS against the public CAs')
  t.same(loadConfig(write(['url: redis://127.0.0.1:6380', 'tls: true']), {}).redisTarget?.tls, {}, 'tls: true likewise')
  t.equal(loadConfig(write(['url: redis://127.0.0.1:6380']), {}).redisTarget?.tls, undefined, 'redis:// alone: no TLS')
})

t.test('a client certificate without its key, or a key without its certificate, is refused at the key given', async (t) => {
  const ca = createThrowawayCa(t, 'pair')
  const noKey = problems(['url: rediss://127.0.0.1:6380', 'tls:', `  cert: ${ca.client.cert}`])
  t.match(noKey.text, `${noKey.file}:10:11 redis.tls.cert needs redis.tls.key, the private key of the client certificate`)
  t.equal(noKey.count, 1, noKey.text)
  const noCert = problems(['url: rediss://127.0.0.1:6380', 'tls:', `  key: ${ca.client.key}`])
  t.match(noCert.text, `${noCert.file}:10:10 redis.tls.key needs redis.tls.cert`)
  const other = createThrowawayCa(t, 'pair-other')
  const mismatch = problems(['url: rediss://127.0.0.1:6380', 'tls:', `  cert: ${ca.client.cert}`, `  key: ${other.client.key}`])
  t.match(mismatch.text, `${mismatch.file}:11:10 redis.tls.key is not the private key of redis.tls.cert`)
})

t.test('a CA file that does not exist or is not PEM certificates is refused at redis.tls.ca, with every other problem', async (t) => {
  const ca = createThrowawayCa(t, 'files')
  const missing = problems(['url: rediss://127.0.0.1:6380', 'tls:', '  ca: ./no-such-ca.pem', `  cert: ${ca.client.cert}`])
  t.match(missing.text, `${missing.file}:10:9 redis.tls.ca cannot be read: ENOENT (${join(dirname(missing.file), 'no-such-ca.pem')})`)
  t.match(missing.text, `${missing.file}:11:11 redis.tls.cert needs redis.tls.key`)
  t.equal(missing.count, 2, missing.text)

  const notPem = problems(['url: rediss://127.0.0.1:6380', 'tls:', '  ca: ./users.yaml'])
  t.match(notPem.text, `${notPem.file}:10:9 redis.tls.ca is not a PEM file of certificates (${join(dirname(notPem.file), 'users.yaml')})`)
  const aKey = problems(['url: rediss://127.0.0.1:6380', 'tls:', `  ca: ${ca.server.key}`])
  t.match(aKey.text, `${aKey.file}:10:9 redis.tls.ca is not a PEM file of certificates`, 'a private key is not a CA certificate')
  const notKey = problems(['url: rediss://127.0.0.1:6380', 'tls:', `  cert: ${ca.client.cert}`, `  key: ${ca.client.cert}`])
  t.match(notKey.text, `${notKey.file}:11:10 redis.tls.key is not a PEM private key`)
})

t.test('an encrypted client key is refused: the gateway has no passphrase to give', async (t) => {
  const ca = createThrowawayCa(t, 'encrypted')
  const encrypted = join(dirname(ca.client.key), 'client-encrypted.key')
  execFileSync('/usr/bin/openssl', ['pkey', '-in', ca.client.key, '-aes256', '-passout', 'pass:secret', '-out', encrypted])
  const p = problems(['url: rediss://127.0.0.1:6380', 'tls:', `  cert: ${ca.client.cert}`, `  key: ${encrypted}`])
  t.match(p.text, `${p.file}:11:10 redis.tls.key is encrypted: give the gateway the key unencrypted`)
})

t.test('certificate verification cannot be turned off, and rediss:// cannot be told tls: false', async (t) => {
  const off = problems(['url: rediss://127.0.0.1:6380', 'tls:', '  rejectUnauthorized: false'])
  t.match(off.text, `${off.file}:10:5 redis.tls.rejectUnauthorized is not a known key`)
  t.equal(off.count, 1, off.text)
  const contradiction = problems(['url: rediss://127.0.0.1:6380', 'tls: false'])
  t.match(contradiction.text, `${contradiction.file}:9:8 redis.tls is false, but redis.url is rediss:// (TLS)`)
  const wrongType = problems(['url: rediss://127.0.0.1:6380', 'tls: "yes"'])
  t.match(wrongType.text, `${wrongType.file}:9:8 redis.tls must be a boolean or an object`)
})
