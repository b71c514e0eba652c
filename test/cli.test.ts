import { spawn, spawnSync } from 'node:child_process'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { DatabaseSync } from 'node:sqlite'
import { join } from 'node:path'
import { request } from 'node:http'
import t from 'tap'
import { stringify } from 'yaml'
import { PASSWORDS, writeTestConfig } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'

// The `gateway` command as ops run it: a child process on a config file.
// `npm test` builds dist/ before tap runs, so this exercises the shipped bin.

const BIN = join(__dirname, '..', 'bin', 'gateway.js')

t.test('validate: "ok" and exit 0 for a valid config', async (t) => {
  const { file } = await writeTestConfig()
  const run = spawnSync(process.execPath, [BIN, 'validate', file], { encoding: 'utf8' })
  t.equal(run.status, 0)
  t.equal(run.stdout.trim(), 'ok')
})

t.test('validate: every problem with file:line:col, exit 1', async (t) => {
  const { file } = await writeTestConfig({ server: { port: 'x' }, routes: [{ prefix: '/a' }] })
  const run = spawnSync(process.execPath, [BIN, 'validate', file], { encoding: 'utf8' })
  t.equal(run.status, 1)
  t.match(run.stderr, new RegExp(`${file}:\\d+:\\d+ server\\.port must be an integer`))
  t.match(run.stderr, new RegExp(`${file}:\\d+:\\d+ routes\\[0\\]\\.upstream is required`))
})

t.test('--config with a bad config refuses to start with the same messages', async (t) => {
  const { file } = await writeTestConfig({ tokens: { algorithm: 'HS256', keys: [], secret: 'too-short' } })
  const run = spawnSync(process.execPath, [BIN, '--config', file], { encoding: 'utf8', timeout: 20_000 })
  t.equal(run.status, 1)
  t.match(run.stderr, 'refusing to start')
  t.match(run.stderr, new RegExp(`${file}:\\d+:\\d+ tokens\\.secret must be at least 32 bytes`))
})

t.test('--config refuses to start on a store file it cannot use, naming the file, with one worker or several', async (t) => {
  const { dir } = await writeTestConfig()
  const newer = join(dir, 'newer.db')
  const db = new DatabaseSync(newer)
  db.exec('PRAGMA user_version = 99')
  db.close()
  const corrupt = join(dir, 'corrupt.db')
  writeFileSync(corrupt, 'not a database file '.repeat(500))
  const blocker = join(dir, 'a-file')
  writeFileSync(blocker, '')
  const cases = [
    { file: newer, says: 'written by a newer tokengate' },
    { file: corrupt, says: 'not a usable tokengate store' },
    { file: join(blocker, 'sub', 'tokengate.db'), says: 'its directory cannot be created' }
  ]
  // Every kind with one process; with workers the supervisor makes the same check once, before forking.
  for (const workers of [1, 2]) {
    for (const { file: storeFile, says } of workers === 1 ? cases : cases.slice(0, 1)) {
      const { file } = await writeTestConfig({ store: { file: storeFile }, server: { workers } })
      // A supervisor that restarted failing workers for ever would hit this timeout instead of exiting.
      const run = spawnSync(process.execPath, [BIN, '--config', file], { encoding: 'utf8', timeout: 20_000 })
      t.equal(run.status, 1, `workers: ${workers}, ${says}: exit 1`)
      t.match(run.stderr, `refusing to start: store.file ${storeFile}: ${says}`)
      t.notMatch(run.stderr, /\n\s+at /, 'no stack trace')
    }
  }
})

t.test('hash-password prints an argon2id hash with OWASP parameters', async (t) => {
  const run = spawnSync(process.execPath, [BIN, 'hash-password'], { input: 'correct horse\n', encoding: 'utf8' })
  t.equal(run.status, 0)
  t.match(run.stdout.trim(), /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/)
  const empty = spawnSync(process.execPath, [BIN, 'hash-password'], { input: '', encoding: 'utf8' })
  t.equal(empty.status, 1)
})

function httpJson (port: number, path: string, method = 'GET', body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number, body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const req = request({ host: '127.0.0.1', port, path, method, headers: { ...headers, ...(payload === undefined ? {} : { 'content-type': 'application/json' }) } }, (res) => {
      let text = ''
      res.on('data', (c) => { text += String(c) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }))
    })
    req.on('error', reject)
    req.end(payload)
  })
}

t.test('keygen writes a private key only its owner can read, and refuses what it cannot make with one plain line', async (t) => {
  const dir = t.testdir({})
  const file = join(dir, 'keys', 'es256.pem')
  const made = spawnSync(process.execPath, [BIN, 'keygen', 'ES256', file], { encoding: 'utf8' })
  t.equal(made.status, 0)
  t.equal(statSync(file).mode & 0o777, 0o600)
  t.match(readFileSync(file, 'utf8'), /^-----BEGIN PRIVATE KEY-----/)
  const again = spawnSync(process.execPath, [BIN, 'keygen', 'ES256', file, '--if-missing'], { encoding: 'utf8' })
  t.equal(again.status, 0)
  t.equal(again.stderr, '', '--if-missing leaves an existing key alone')

  for (const [args, message] of [
    [['keygen', 'HS256', join(dir, 'hs.pem')], 'keygen: HS256 is not one of RS256, ES256, EdDSA; an HS256 secret is not a key file: generate one with `openssl rand -base64 32`\n'],
    [['keygen', 'es256', join(dir, 'lower.pem')], 'keygen: es256 is not one of RS256, ES256, EdDSA\n'],
    [['keygen', 'EdDSA', join(file, 'under-a-file.pem')], `keygen: cannot write ${join(file, 'under-a-file.pem')}: `]
  ] as const) {
    const run = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' })
    t.equal(run.status, 1, args.join(' '))
    t.ok(run.stderr.startsWith(message), run.stderr)
    t.notMatch(run.stderr, /\n\s+at /, 'no stack trace')
  }
})

t.test('--config starts the gateway: login, proxy with identity headers, 401 without a token, clean exit on SIGTERM', async (t) => {
  const up = await startUpstream(t)
  const port = 20_000 + Math.floor(Math.random() * 20_000)
  const { dir } = await writeTestConfig()
  const file = join(dir, 'bin.yaml')
  writeFileSync(file, stringify({
    server: { host: '127.0.0.1', port },
    tokens: { algorithm: 'ES256', keys: [{ kid: 'k', privateKey: './signing.pem' }] },
    auth: { users: { file: './users.yaml' }, cookie: { secure: false } },
    routes: [{ prefix: '/api', upstream: up.url }]
  }))
  // Without the test runner's --disable-warning, as users run it.
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
  let logs = ''
  let stderr = ''
  child.stdout.on('data', (c) => { logs += String(c) })
  child.stderr.on('data', (c) => { stderr += String(c) })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  for (let i = 0; i < 100 && !logs.includes('Server listening'); i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.match(logs, 'Server listening')
  t.equal(stderr, '', `nothing on stderr at start on Node ${process.version} (no ExperimentalWarning)`)

  t.equal((await httpJson(port, '/api/x')).status, 401)
  const login = await httpJson(port, '/auth/login', 'POST', { username: 'bob', password: PASSWORDS.bob, transport: 'body' })
  t.equal(login.status, 200)
  const proxied = await httpJson(port, '/api/x', 'GET', undefined, { authorization: `Bearer ${String(login.body.access_token)}` })
  t.equal(proxied.status, 200)
  t.equal((proxied.body.headers as Record<string, string>)['x-user-name'], 'bob')
  t.notMatch(logs, String(login.body.access_token), 'the token is never logged')
  t.notMatch(logs, PASSWORDS.bob, 'the password is never logged')

  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  t.equal(await exit, 0)
})
