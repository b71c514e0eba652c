import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { checkConfig, loadConfig } from '../../src/config/load-config.js'
import { formatIssue } from '../../src/config/yaml-source.js'
import { writeTestConfig } from '../helpers/gateway.js'

// Ops read these messages to fix a config: each one must name the file, the
// line and column, the key path and what was expected.

function configDir (): string {
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-config-'))
  writeFileSync(join(dir, 'users.yaml'), 'users: []\n')
  return dir
}

function write (dir: string, text: string): string {
  const file = join(dir, 'gateway.config.yaml')
  writeFileSync(file, text)
  return file
}

const HS_SECRET = 'q3Zr8vK2mX9pL4tW7nB1cF6hJ0sD5gY8aE2uR4iO9kM='

t.test('a valid config loads, with defaults filled in', async (t) => {
  const { file } = await writeTestConfig({ routes: [{ prefix: '/api', upstream: 'http://127.0.0.1:1' }] })
  const { config, keys } = loadConfig(file, {})
  t.equal(config.routes[0].auth, 'required')
  t.same(config.routes[0].scopes, [])
  t.equal(config.routes[0].timeout, '30s')
  t.equal(config.redis.keyPrefix, 'tg:')
  t.equal(config.tokens.clockSkew, '30s')
  t.equal(config.identity.headers['X-User-Id'], 'sub')
  t.equal(keys.signing.kid, 'test-1')
})

t.test('every problem is reported at once, each with file:line:col and key path', async (t) => {
  const dir = configDir()
  const file = write(dir, [
    'server:',
    '  port: "eighty"',
    'tokens:',
    '  algorithm: HS512',
    '  accessTtl: 15 minutes',
    'auth:',
    '  users: { file: ./users.yaml }',
    'routes:',
    '  - prefix: /api',
    '    auth: sometimes',
    '  - prefix: /b',
    '    upstream: http://127.0.0.1:3001',
    '    colour: blue',
    ''
  ].join('\n'))
  const { loaded, issues } = checkConfig(file, {})
  t.equal(loaded, null)
  const lines = issues.map(formatIssue)
  t.match(lines.join('\n'), `${file}:2:9 server.port must be an integer`)
  t.match(lines.join('\n'), `${file}:4:14 tokens.algorithm must be one of HS256, RS256, ES256, EdDSA`)
  t.match(lines.join('\n'), `${file}:5:14 tokens.accessTtl must be a duration`)
  t.match(lines.join('\n'), `${file}:9:5 routes[0].upstream is required`)
  t.match(lines.join('\n'), `${file}:10:11 routes[0].auth must be one of required, optional, none`)
  t.match(lines.join('\n'), `${file}:13:5 routes[1].colour is not a known key`)
  t.equal(issues.length, 6, lines.join('\n'))
})

t.test('an HS256 secret under 32 bytes is refused', async (t) => {
  const dir = configDir()
  const file = write(dir, `tokens:\n  algorithm: HS256\n  secret: short-secret\nauth:\n  users: { file: ./users.yaml }\n`)
  const { issues } = checkConfig(file, {})
  t.equal(issues.length, 1)
  t.match(formatIssue(issues[0]), `${file}:3:11 tokens.secret must be at least 32 bytes for HS256 (got 12)`)
})

t.test('${VAR} and ${VAR:-default} come from the environment, typed like inline YAML', async (t) => {
  const dir = configDir()
  const file = write(dir, `server:\n  port: \${PORT:-8088}\n  host: \${HOST}\ntokens:\n  algorithm: HS256\n  secret: \${JWT_SECRET}\nauth:\n  users: { file: ./users.yaml }\n`)
  const ok = loadConfig(file, { HOST: '0.0.0.0', JWT_SECRET: HS_SECRET })
  t.equal(ok.config.server.port, 8088)
  t.equal(ok.config.server.host, '0.0.0.0')
  t.equal(loadConfig(file, { HOST: '::', JWT_SECRET: HS_SECRET, PORT: '9000' }).config.server.port, 9000)
  const { issues } = checkConfig(file, { HOST: 'h' })
  t.match(issues.map(formatIssue).join('\n'), `${file}:6:11 tokens.secret needs environment variable JWT_SECRET, which is not set`)
})

t.test('keys: missing file, wrong type for the algorithm, duplicate kid', async (t) => {
  const { dir } = await writeTestConfig()
  const file = write(dir, [
    'tokens:',
    '  algorithm: RS256',
    '  keys:',
    '    - { kid: a, privateKey: ./signing.pem }',
    '    - { kid: a, publicKey: ./missing.pem }',
    'auth:',
    '  users: { file: ./users.yaml }',
    ''
  ].join('\n'))
  const text = checkConfig(file, {}).issues.map(formatIssue).join('\n')
  t.match(text, 'tokens.keys[0].privateKey must be an RSA key of at least 2048 bits for RS256, got a ec key')
  t.match(text, `${file}:5:14 tokens.keys[1].kid duplicates kid "a"`)
  t.match(text, 'tokens.keys[1].publicKey cannot be loaded as a public key: file not found')
})

t.test('routes may not shadow the gateway\'s own endpoints or each other', async (t) => {
  const dir = configDir()
  const file = write(dir, [
    'tokens: { algorithm: HS256, secret: ' + HS_SECRET + ' }',
    'auth: { users: { file: ./users.yaml } }',
    'routes:',
    '  - { prefix: /auth/x, upstream: "http://127.0.0.1:1" }',
    '  - { prefix: /api, upstream: "http://127.0.0.1:1" }',
    '  - { prefix: /api/, upstream: "http://127.0.0.1:2" }',
    ''
  ].join('\n'))
  const text = checkConfig(file, {}).issues.map(formatIssue).join('\n')
  t.match(text, `${file}:4:15 routes[0].prefix may not be under /auth`)
  t.match(text, `${file}:6:15 routes[2].prefix duplicates routes[1].prefix "/api"`)
  const bad = write(dir, `tokens: { algorithm: HS256, secret: ${HS_SECRET} }\nauth: { users: { file: ./users.yaml } }\nroutes:\n  - { prefix: /x, upstream: "ftp://h:2" }\n`)
  t.match(checkConfig(bad, {}).issues.map(formatIssue).join('\n'), `${bad}:4:29 routes[0].upstream must be an http(s)://host[:port] URL with no path`)
})

t.test('the users file is checked too, with its own file and line', async (t) => {
  const dir = configDir()
  writeFileSync(join(dir, 'users.yaml'), 'users:\n  - id: u1\n    username: "bad user"\n    passwordHash: plain\n')
  const file = write(dir, `tokens: { algorithm: HS256, secret: ${HS_SECRET} }\nauth: { users: { file: ./users.yaml } }\n`)
  const text = checkConfig(file, {}).issues.map(formatIssue).join('\n')
  t.match(text, `${join(dir, 'users.yaml')}:3:15 users[0].username must match`)
  t.match(text, `${join(dir, 'users.yaml')}:4:19 users[0].passwordHash must be an argon2id hash`)
})

t.test('a missing file or broken YAML is a clear error', async (t) => {
  const dir = configDir()
  t.match(formatIssue(checkConfig(join(dir, 'nope.yaml'), {}).issues[0]), 'nope.yaml cannot be read: ENOENT')
  const file = write(dir, 'server:\n  port: [1,\n')
  t.match(formatIssue(checkConfig(file, {}).issues[0]), /gateway\.config\.yaml:\d+:\d+ is not valid YAML/)
  t.throws(() => loadConfig(file, {}), { name: 'ConfigError' })
})

t.test('an empty upstream list says a route needs a target, at file:line:col', async (t) => {
  const dir = configDir()
  const file = write(dir, [
    `tokens: { algorithm: HS256, secret: ${HS_SECRET} }`,
    'auth: { users: { file: ./users.yaml } }',
    'routes:',
    '  - prefix: /api',
    '    upstream: []',
    '  - prefix: /b',
    '    upstream: [http://127.0.0.1:1, 3002]',
    ''
  ].join('\n'))
  const lines = checkConfig(file, {}).issues.map(formatIssue)
  t.same(lines, [
    `${file}:5:15 routes[0].upstream must list at least one target`,
    `${file}:7:36 routes[1].upstream[1] must be a string`
  ], 'each names the list or the item, not "a string or an array"')
})
