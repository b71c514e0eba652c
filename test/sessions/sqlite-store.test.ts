import { chmodSync, mkdtempSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DatabaseSync } from 'node:sqlite'
import t from 'tap'
import type { Test } from 'tap'
import { SqliteStore, StoreOpenError } from '../../src/sessions/sqlite-store.js'
import { StoreUnavailableError, type DenyEntry } from '../../src/sessions/session-store.js'
import { waitFor as eventually } from '../helpers/wait-for.js'
import { ACCESS_TTL_MS, IDLE_MS, login, rotation, storeContract } from '../helpers/store-contract.js'

function tempDir (): string {
  return mkdtempSync(join(tmpdir(), 'tokengate-sqlite-'))
}

function open (t: Test, file: string, opts: { sweepIntervalMs?: number } = {}): SqliteStore {
  const store = new SqliteStore({ file, ...opts })
  t.teardown(() => store.close())
  return store
}

t.test('the store contract, on SQLite :memory:', async (t) => {
  storeContract(t, async (t) => open(t, ':memory:'))
})

t.test('the store contract, on a SQLite file', async (t) => {
  storeContract(t, async (t) => open(t, join(tempDir(), 'contract.db')))
})

t.test('everything survives closing and reopening the file; the file is mode 0600', async (t) => {
  const file = join(tempDir(), 'nested', 'tokengate.db')
  const first = new SqliteStore({ file })
  const now = Date.now()
  const a = await login(first, { now })
  const r = rotation(a.token, now + 1)
  await first.rotate(r.input)
  await first.revoke({ kind: 'jti', value: 'j-1', expiresAt: now + 60_000 })
  await first.close()
  t.equal(statSync(file).mode & 0o777, 0o600)

  const second = open(t, file)
  t.equal((await second.findByRefresh(hashOf(r.next), now + 2))?.sid, a.sid, 'the rotated-to token is current after reopening')
  const grace = await second.rotate(rotation(a.token, now + 3).input)
  t.equal(grace.kind, 'grace', 'the predecessor is still inside its grace window')
  t.same((await second.loadDenylist(now)).map((e) => e.value), ['j-1'])
})

t.test('the sweep forgets sessions, tokens and entries past their life', async (t) => {
  const store = open(t, ':memory:')
  const now = Date.now()
  const a = await login(store, { now })
  await store.rotate(rotation(a.token, now + 1).input)
  await login(store, { now, sub: a.sub })
  const reused = await login(store, { now })
  await store.rotate(rotation(reused.token, now + 1).input)
  await store.rotate(rotation(reused.token, now + 2, { graceMs: 0 }).input)
  await store.revoke({ kind: 'jti', value: 'j', expiresAt: now + 10 })
  t.same(store.counts, { sessions: 2, tokens: 5, deny: 2 })
  store.sweep(now + 5)
  t.same(store.counts, { sessions: 2, tokens: 3, deny: 2 }, 'the reused family\'s tokens go with it')
  store.sweep(now + ACCESS_TTL_MS + 2)
  t.same(store.counts, { sessions: 2, tokens: 3, deny: 0 })
  store.sweep(now + IDLE_MS + 1)
  t.same(store.counts, { sessions: 0, tokens: 0, deny: 0 }, 'idle sessions and their tokens are gone')
})

t.test('100 000 logins and expiries leave the row count bounded', async (t) => {
  // :memory: keeps it fast; the sweep's SQL is the same on a file.
  const store = open(t, ':memory:')
  let now = Date.now()
  let peak = 0
  for (let i = 0; i < 100_000; i++) {
    // Plain ids instead of login()'s random token and hash: the store is what is measured here.
    await store.createSession({ sid: `s-${i}`, sub: `u-${i % 100}`, refreshHash: `h-${i}`, now, expiresAt: now + 1_000, idleTimeoutMs: 1_000, userAgent: 'tap', address: '127.0.0.1' })
    if (i % 10 === 0) await store.revoke({ kind: 'jti', value: `j-${i}`, expiresAt: now + 1_000 })
    now += 1
    if (i % 5_000 === 4_999) {
      store.sweep(now)
      const c = store.counts
      peak = Math.max(peak, c.sessions + c.tokens + c.deny)
    }
  }
  t.ok(peak <= 2_000 + 200 + 5_000, `at most about one second's worth of rows is kept (peak ${peak})`)
})

t.test('a closed store refuses work with StoreUnavailableError', async (t) => {
  const store = new SqliteStore({ file: ':memory:' })
  await store.close()
  await t.rejects(store.ping(), StoreUnavailableError)
  await t.rejects(store.rotate(rotation('x'.repeat(43), Date.now()).input), StoreUnavailableError)
})

t.test('a file that cannot be used refuses to open, naming the path', async (t) => {
  const dir = tempDir()
  const newer = join(dir, 'newer.db')
  const db = new DatabaseSync(newer)
  db.exec('PRAGMA user_version = 99')
  db.close()
  t.throws(() => new SqliteStore({ file: newer }), { name: 'StoreOpenError', message: new RegExp(`${newer}.*newer tokengate`) })

  const corrupt = join(dir, 'corrupt.db')
  writeFileSync(corrupt, 'this is not a database file, not even close to one '.repeat(200))
  t.throws(() => new SqliteStore({ file: corrupt }), { name: 'StoreOpenError', message: new RegExp(corrupt) })

  const blocker = join(dir, 'a-file')
  writeFileSync(blocker, '')
  const uncreatable = join(blocker, 'sub', 'tokengate.db')
  t.throws(() => new SqliteStore({ file: uncreatable }), { name: 'StoreOpenError', message: new RegExp(`${uncreatable}.*directory cannot be created`) })

  if (process.getuid?.() !== 0) {
    const readOnly = join(dir, 'ro.db')
    new SqliteStore({ file: readOnly }).close().catch(() => {})
    chmodSync(readOnly, 0o400)
    t.throws(() => new SqliteStore({ file: readOnly }), StoreOpenError)
  }
})

t.test('two stores on one file share sessions and see each other\'s revocations through the feed', async (t) => {
  const file = join(tempDir(), 'shared.db')
  const a = open(t, file)
  const b = open(t, file)
  const seen: DenyEntry[] = []
  let beats = 0
  await b.subscribeDenylist((entry) => seen.push(entry), () => {}, () => { beats++ })
  const now = Date.now()
  const l = await login(a, { now })
  t.equal((await b.findByRefresh(hashOf(l.token), now))?.sid, l.sid, 'a session made through one is found through the other')
  await a.revoke({ kind: 'sid', value: l.sid, expiresAt: now + 60_000 })
  await eventually('the other store\'s revocation on the feed', () => seen.some((e) => e.kind === 'sid' && e.value === l.sid))
  t.ok(beats > 0, 'the feed reports itself current')
  const rotated = await b.rotate(rotation(l.token, now + 1).input)
  t.equal(rotated.kind, 'rotated')
  const reuse = await a.rotate(rotation(l.token, now + 10_000).input)
  t.equal(reuse.kind, 'reuse', 'a rotation through one is reuse through the other')
})

function hashOf (token: string): string {
  // the same hash the refresh route stores
  return rotation(token, 0).input.presentedHash
}
