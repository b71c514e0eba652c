import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { parse, stringify } from 'yaml'
import { PASSWORDS, writeTestConfig } from './helpers/gateway.js'
import { decodeJwt } from './helpers/lifecycle.js'
import { waitFor } from './helpers/wait-for.js'
import { closedPort, startUpstream, type TestUpstream } from './helpers/upstream.js'

// Faults of the embedded store's file, produced for real against the real
// bin: a disk that fills up (a small tmpfs mounted for the test), and a file
// that turns read-only while the gateway runs (chattr +i on the database and
// its WAL). Both need root; elsewhere the tests say why they are skipped.
// Also: two gateways started on one file without server.workers share it.

const BIN = join(__dirname, '..', 'bin', 'gateway.js')
const ROOT = process.getuid?.() === 0
const CANNOT_WRITE = 'the embedded store cannot write'

interface Bin { child: ChildProcess, text: () => string }

function startBin (t: Test, file: string): Bin {
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout?.on('data', (c) => { out += String(c) })
  child.stderr?.on('data', (c) => { out += String(c) })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  return { child, text: () => out }
}

function client (port: number): {
  post: (path: string, body: Record<string, unknown>, bearer?: string) => Promise<{ status: number, retryAfter: string | null, json: Record<string, unknown> }>
  api: (access: string) => Promise<number>
} {
  const base = `http://127.0.0.1:${port}`
  return {
    async post (path, body, bearer) {
      const res = await fetch(`${base}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(bearer === undefined ? {} : { authorization: `Bearer ${bearer}` }) },
        body: JSON.stringify(body)
      })
      const text = await res.text()
      return { status: res.status, retryAfter: res.headers.get('retry-after'), json: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }
    },
    async api (access) {
      return (await fetch(`${base}/api/x`, { headers: { authorization: `Bearer ${access}` } })).status
    }
  }
}

/** A gateway on `storeFile`; with `beside`, a second one on the same config (keys, users) but its own port. */
async function gatewayOn (t: Test, up: TestUpstream, storeFile: string, beside?: string): Promise<{ bin: Bin, port: number, file: string }> {
  const port = await closedPort()
  let file: string
  if (beside === undefined) {
    file = (await writeTestConfig({
      server: { host: '127.0.0.1', port },
      store: { file: storeFile },
      auth: { loginRateLimit: { max: 1000, timeWindow: '1m' } },
      routes: [{ prefix: '/api', upstream: up.url }]
    })).file
  } else {
    const config = parse(readFileSync(beside, 'utf8')) as { server: { port: number } }
    config.server.port = port
    file = join(dirname(beside), `second-${port}.yaml`)
    writeFileSync(file, stringify(config))
  }
  const bin = startBin(t, file)
  await waitFor('the gateway listens', () => bin.text().includes('Server listening'), 400, 50)
  return { bin, port, file }
}

/** What every fault must answer: 503 with Retry-After on each write, proxied routes still served, one clear log line. */
async function assertFaultAnswers (t: Test, bin: Bin, port: number, before: { admin: string, user: { access: string, refresh: string } }): Promise<void> {
  const { post, api } = client(port)
  const refused = {
    login: await post('/auth/login', { username: 'carol', password: PASSWORDS.carol, transport: 'body' }),
    refresh: await post('/auth/refresh', { refresh_token: before.user.refresh }),
    logout: await post('/auth/logout', {}, before.user.access),
    'logout-all': await post('/auth/logout-all', {}, before.user.access),
    'admin revoke': await post('/admin/revoke', { jti: decodeJwt(before.user.access).payload.jti }, before.admin)
  }
  for (const [what, res] of Object.entries(refused)) {
    t.equal(res.status, 503, `${what} answers 503: a change that could not be written is never 2xx`)
    t.equal(res.retryAfter, '1', `${what} says when to retry`)
    t.equal(res.json.code, 'TG_STORE_UNAVAILABLE')
  }
  t.equal(await api(before.admin), 200, 'proxied routes keep serving from the denylist mirror')
  await waitFor('the outage is logged', () => bin.text().includes(CANNOT_WRITE), 100, 20)
  t.equal(bin.text().split(CANNOT_WRITE).length - 1, 1, 'one clear log line for the outage, not one per request')
}

async function loginBoth (port: number): Promise<{ admin: string, user: { access: string, refresh: string } }> {
  const { post } = client(port)
  const alice = await post('/auth/login', { username: 'alice', password: PASSWORDS.alice, transport: 'body' })
  const bob = await post('/auth/login', { username: 'bob', password: PASSWORDS.bob, transport: 'body' })
  if (alice.status !== 200 || bob.status !== 200) throw new Error('login failed before the fault')
  return { admin: String(alice.json.access_token), user: { access: String(bob.json.access_token), refresh: String(bob.json.refresh_token) } }
}

async function assertRecovered (t: Test, bin: Bin, port: number, before: { user: { access: string, refresh: string } }): Promise<void> {
  const { post, api } = client(port)
  t.equal((await post('/auth/login', { username: 'carol', password: PASSWORDS.carol, transport: 'body' })).status, 200, 'login works again by itself')
  await waitFor('the recovery is logged', () => bin.text().includes('the embedded store takes writes again'), 100, 20)
  t.equal((await post('/auth/logout', {}, before.user.access)).status, 204)
  t.equal(await api(before.user.access), 401, 'the logout now holds')
}

// Many worker processes start here; on a loaded 2-core machine that takes a while.
t.setTimeout(300_000)

t.test('disk full: writes answer 503, proxied routes serve, it recovers', { skip: ROOT ? false : 'needs root to mount a tmpfs' }, async (t) => {
  const up = await startUpstream(t)
  const mount = mkdtempSync(join(tmpdir(), 'tokengate-full-'))
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mount], { encoding: 'utf8' })
  if (mounted.status !== 0) {
    await t.skip(`cannot mount a tmpfs here: ${mounted.stderr.trim()}`, () => {})
    return
  }
  t.teardown(() => {
    spawnSync('umount', ['-l', mount])
    rmSync(mount, { recursive: true, force: true })
  })
  const { bin, port } = await gatewayOn(t, up, join(mount, 'tokengate.db'))
  const before = await loginBoth(port)

  // Fill every byte left on the file system.
  const filler = join(mount, 'filler')
  const fd = openSync(filler, 'w')
  const chunk = Buffer.alloc(64 * 1024)
  try {
    for (;;) writeSync(fd, chunk)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
  }
  for (const size of [4096, 512, 1]) {
    try { for (;;) writeSync(fd, chunk, 0, size) } catch { /* full at this size */ }
  }
  closeSync(fd)

  await assertFaultAnswers(t, bin, port, before)
  t.match(bin.text(), /"reason":"database or disk is full"/, 'the log line says why')

  rmSync(filler)
  await assertRecovered(t, bin, port, before)
})

t.test('the file turns read-only: writes answer 503, proxied routes serve, it recovers', { skip: ROOT ? false : 'needs root for chattr +i' }, async (t) => {
  const up = await startUpstream(t)
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-ro-'))
  const db = join(dir, 'tokengate.db')
  const { bin, port } = await gatewayOn(t, up, db)
  const before = await loginBoth(port)

  // The -shm file stays writable: it is mapped into memory, and a mapping
  // that cannot be written kills the process (SIGBUS) in SQLite itself.
  const files = [db, `${db}-wal`]
  const immutable = spawnSync('chattr', ['+i', ...files], { encoding: 'utf8' })
  if (immutable.status !== 0) {
    await t.skip(`chattr +i does not work here: ${immutable.stderr.trim()}`, () => {})
    return
  }
  t.teardown(() => {
    spawnSync('chattr', ['-i', ...files])
    rmSync(dir, { recursive: true, force: true })
  })

  await assertFaultAnswers(t, bin, port, before)
  t.match(bin.text(), /"reason":"disk I\/O error"/, 'the log line says what SQLite saw')

  spawnSync('chattr', ['-i', ...files])
  await assertRecovered(t, bin, port, before)
})

t.test('two gateways started on one file without workers share it', async (t) => {
  const up = await startUpstream(t)
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-two-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const db = join(dir, 'tokengate.db')
  const a = await gatewayOn(t, up, db)
  const b = await gatewayOn(t, up, db, a.file)
  const A = client(a.port)
  const B = client(b.port)

  const login = await A.post('/auth/login', { username: 'bob', password: PASSWORDS.bob, transport: 'body' })
  t.equal(login.status, 200, 'logged in through the first')
  const access = String(login.json.access_token)
  t.equal(await B.api(access), 200, 'the second accepts its token')
  const refreshed = await B.post('/auth/refresh', { refresh_token: String(login.json.refresh_token) })
  t.equal(refreshed.status, 200, 'the second rotates a session the first created')
  const again = await A.post('/auth/refresh', { refresh_token: String(login.json.refresh_token) })
  t.equal(again.json.refresh_token, refreshed.json.refresh_token, 'the first sees the rotation: inside the grace window the old token gets the same successor')

  t.equal((await B.post('/auth/logout', {}, String(refreshed.json.access_token))).status, 204, 'logged out through the second')
  await waitFor('the first refuses the session the second ended', async () => await A.api(access) === 401, 200, 25)
  t.equal(await B.api(access), 401)
  t.equal((await A.post('/auth/refresh', { refresh_token: String(refreshed.json.refresh_token) })).status, 401, 'the ended session refreshes nowhere')
})

t.test('workers: a file removed from under them fails closed after denylist.maxStaleness, and recovers', async (t) => {
  const up = await startUpstream(t)
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-moved-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const db = join(dir, 'tokengate.db')
  const port = await closedPort()
  const { file } = await writeTestConfig({
    server: { host: '127.0.0.1', port, workers: 2 },
    store: { file: db },
    denylist: { maxStaleness: '1s' },
    routes: [{ prefix: '/api', upstream: up.url }]
  })
  const bin = startBin(t, file)
  await waitFor('two workers listen', () => bin.text().split('Server listening').length - 1 === 2, 600, 50)
  const { post } = client(port)
  const login = await post('/auth/login', { username: 'bob', password: PASSWORDS.bob, transport: 'body' })
  t.equal(login.status, 200)
  const access = String(login.json.access_token)
  const fresh = async (): Promise<number> => (await fetch(`http://127.0.0.1:${port}/api/x`, { headers: { authorization: `Bearer ${access}`, connection: 'close' } })).status

  // Moved aside, the path names nothing: a worker restarted now would start
  // a new, empty file there, and no process could see another's changes.
  renameSync(db, `${db}.moved`)
  await waitFor('every worker fails closed', async () => {
    const statuses = new Set<number>()
    for (let i = 0; i < 6; i++) statuses.add(await fresh())
    return statuses.size === 1 && statuses.has(503)
  }, 200, 50)
  await waitFor('each worker says why', () => bin.text().split('store.file was removed or replaced while open').length - 1 === 2, 100, 20)
  const logout = await post('/auth/logout', {}, access)
  t.equal(logout.status, 503, 'a logout that no other worker could see is not answered 2xx')

  renameSync(`${db}.moved`, db)
  await waitFor('every worker serves again', async () => {
    for (let i = 0; i < 6; i++) if (await fresh() !== 200) return false
    return true
  }, 200, 50)
  t.equal((await post('/auth/logout', {}, access)).status, 204, 'and writes work again')
  await waitFor('the logout holds on every worker', async () => {
    for (let i = 0; i < 6; i++) if (await fresh() !== 401) return false
    return true
  }, 200, 50)
})
