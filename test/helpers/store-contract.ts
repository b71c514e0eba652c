import { randomUUID } from 'node:crypto'
import type { Test } from 'tap'
import { generateRefreshToken, hashRefreshToken, openSuccessor, sealSuccessor, sidOfRefresh } from '../../src/tokens/refresh-token.js'
import type { CreateSessionInput, DenyEntry, RotateInput, SessionStore } from '../../src/sessions/session-store.js'
import { waitFor } from './wait-for.js'


// What every SessionStore must do, run against each implementation so that
// the in-process store is held to exactly the Redis store's semantics.

/** A fresh, empty store, closed on the test's teardown. */
export type MakeStore = (t: Test) => Promise<SessionStore>

const MINUTE = 60_000
export const ACCESS_TTL_MS = 15 * MINUTE
export const GRACE_MS = 5_000
export const IDLE_MS = 60 * MINUTE
export const REFRESH_TTL_MS = 14 * 24 * 60 * MINUTE

export interface Login {
  sid: string
  sub: string
  token: string
  input: CreateSessionInput
}

export async function login (store: SessionStore, over: Partial<CreateSessionInput> = {}): Promise<Login> {
  const sid = over.sid ?? randomUUID()
  const token = generateRefreshToken(sid)
  const now = over.now ?? Date.now()
  const input: CreateSessionInput = {
    sid,
    sub: `user-${randomUUID()}`,
    refreshHash: hashRefreshToken(token),
    now,
    expiresAt: now + REFRESH_TTL_MS,
    idleTimeoutMs: IDLE_MS,
    userAgent: 'tap',
    address: '127.0.0.1',
    ...over
  }
  await store.createSession(input)
  return { sid: input.sid, sub: input.sub, token, input }
}

/** A rotation of `presented` to a fresh token, the way the refresh route builds one. */
export function rotation (presented: string, now: number, over: Partial<RotateInput> = {}): { input: RotateInput, next: string } {
  const next = generateRefreshToken(sidOfRefresh(presented) ?? randomUUID())
  return {
    next,
    input: {
      presentedHash: hashRefreshToken(presented),
      newHash: hashRefreshToken(next),
      sealedNew: sealSuccessor(presented, next),
      now,
      graceMs: GRACE_MS,
      idleTimeoutMs: IDLE_MS,
      accessTtlMs: ACCESS_TTL_MS,
      ...over
    }
  }
}

export async function collectFeed (store: SessionStore): Promise<DenyEntry[]> {
  const seen: DenyEntry[] = []
  await store.subscribeDenylist((entry) => seen.push(entry), () => {}, () => {})
  return seen
}

export function storeContract (t: Test, makeStore: MakeStore): void {
  t.test('a new session is found by its refresh token and listed for its user', async (t) => {
    const store = await makeStore(t)
    const a = await login(store, { userAgent: 'Firefox', address: '10.0.0.1' })
    const expected = {
      sid: a.sid,
      sub: a.sub,
      createdAt: a.input.now,
      lastUsedAt: a.input.now,
      expiresAt: a.input.expiresAt,
      userAgent: 'Firefox',
      address: '10.0.0.1'
    }
    t.same(await store.findByRefresh(hashRefreshToken(a.token), a.input.now + 1), expected)
    t.same(await store.listSessions(a.sub, a.input.now + 1), [expected])
    t.equal(await store.findByRefresh(hashRefreshToken(generateRefreshToken(randomUUID())), a.input.now), null, 'an unknown token finds nothing')
    t.equal(await store.findByRefresh(hashRefreshToken(generateRefreshToken(a.sid)), a.input.now), null, 'nor does a made-up token carrying its sid')
    t.same(await store.listSessions('nobody', a.input.now), [])
  })

  t.test('rotating the current token makes the new one current and the old one a rotated ancestor', async (t) => {
    const store = await makeStore(t)
    const a = await login(store)
    const now = a.input.now + 1000
    const r = rotation(a.token, now)
    const outcome = await store.rotate(r.input)
    t.equal(outcome.kind, 'rotated')
    if (outcome.kind === 'rotated') {
      t.equal(outcome.session.sid, a.sid)
      t.equal(outcome.session.lastUsedAt, now)
    }
    t.equal((await store.findByRefresh(hashRefreshToken(r.next), now))?.sid, a.sid, 'the successor names the session')
    t.equal(await store.findByRefresh(hashRefreshToken(a.token), now), null, 'a rotated token no longer names it')
    t.equal((await store.rotate(rotation(r.next, now + 1).input)).kind, 'rotated', 'the successor rotates in turn')
  })

  t.test('the immediate predecessor inside the grace window gets the sealed current token and changes nothing', async (t) => {
    const store = await makeStore(t)
    const a = await login(store)
    const now = a.input.now + 1000
    const first = rotation(a.token, now)
    await store.rotate(first.input)

    const second = rotation(a.token, now + GRACE_MS)
    const outcome = await store.rotate(second.input)
    t.equal(outcome.kind, 'grace')
    if (outcome.kind === 'grace') {
      t.equal(openSuccessor(a.token, outcome.sealedCurrent), first.next, 'the concurrent tab gets the same successor, not a fork')
      t.equal(outcome.session.lastUsedAt, now + GRACE_MS)
    }
    t.equal(await store.findByRefresh(second.input.newHash, now + GRACE_MS), null, 'the grace request did not plant its own token')
    t.equal((await store.rotate(rotation(first.next, now + GRACE_MS).input)).kind, 'rotated', 'the successor is still current')
  })

  t.test('a rotated token outside the rules ends the whole family and denylists the sid', async (t) => {
    const cases: Array<{ name: string, replay: (a: Login, tokens: string[], now: number) => RotateInput }> = [
      { name: 'an older ancestor, even inside the window', replay: (a, _tokens, now) => rotation(a.token, now + 1).input },
      { name: 'the predecessor just outside the window', replay: (_a, tokens, now) => rotation(tokens[0] as string, now + GRACE_MS + 1).input },
      { name: 'the predecessor with grace turned off', replay: (_a, tokens, now) => rotation(tokens[0] as string, now, { graceMs: 0 }).input }
    ]
    for (const c of cases) {
      t.test(c.name, async (t) => {
        const store = await makeStore(t)
        const feed = await collectFeed(store)
        const a = await login(store)
        const now = a.input.now + 1000
        const r1 = rotation(a.token, now)
        await store.rotate(r1.input)
        const r2 = rotation(r1.next, now)
        await store.rotate(r2.input)

        // tokens: [the immediate predecessor of the current one]
        const replay = c.replay(a, [r1.next], now)
        t.same(await store.rotate(replay), { kind: 'reuse', sid: a.sid, sub: a.sub })
        t.same((await store.rotate(rotation(r2.next, replay.now).input)).kind, 'invalid', 'the current token died with its family')
        t.same(await store.listSessions(a.sub, replay.now), [])
        const expected: DenyEntry = { kind: 'sid', value: a.sid, expiresAt: replay.now + ACCESS_TTL_MS }
        t.same(await store.loadDenylist(replay.now), [expected], 'its access tokens are denied as long as they can live')
        await waitFor('the reuse entry on the feed', () => feed.length === 1)
        t.same(feed, [expected])
        t.same(await store.rotate(replay), { kind: 'invalid' }, 'a second replay finds nothing left to revoke')
      })
    }
  })

  t.test('unknown, expired and idle tokens are invalid', async (t) => {
    const store = await makeStore(t)
    t.same(await store.rotate(rotation(generateRefreshToken(randomUUID()), Date.now()).input), { kind: 'invalid' }, 'unknown')

    // The sid in a token is no secret (access tokens carry it): a made-up
    // token naming a real session must not pass for a rotated one (reuse
    // would end the session of whoever the sid belongs to).
    const victim = await login(store)
    t.same(await store.rotate(rotation(generateRefreshToken(victim.sid), Date.now()).input), { kind: 'invalid' }, 'made up, with a real sid')
    t.equal((await store.rotate(rotation(victim.token, Date.now()).input)).kind, 'rotated', 'the session lives on')

    const short = await login(store, { expiresAt: Date.now() + 100_000 })
    t.same(await store.rotate(rotation(short.token, short.input.expiresAt).input), { kind: 'invalid' }, 'at its absolute end')
    t.equal(await store.findByRefresh(short.input.refreshHash, short.input.expiresAt), null)

    const idle = await login(store)
    t.same(await store.rotate(rotation(idle.token, idle.input.now + IDLE_MS).input), { kind: 'invalid' }, 'unused for the idle timeout')
    t.same(await store.listSessions(idle.sub, idle.input.now + IDLE_MS), [])
  })

  t.test('use extends the idle deadline, never past the absolute end', async (t) => {
    const store = await makeStore(t)
    const start = Date.now()
    const a = await login(store, { now: start, expiresAt: start + 2 * IDLE_MS })
    const r1 = rotation(a.token, start + IDLE_MS - 1)
    t.equal((await store.rotate(r1.input)).kind, 'rotated')
    const r2 = rotation(r1.next, start + 2 * IDLE_MS - 2)
    t.equal((await store.rotate(r2.input)).kind, 'rotated', 'alive past the first idle deadline because it was used')
    t.same(await store.rotate(rotation(r2.next, start + 2 * IDLE_MS).input), { kind: 'invalid' }, 'used a moment ago, but at its absolute end')

    const b = await login(store, { now: start })
    const grace1 = rotation(b.token, start + IDLE_MS - 1)
    await store.rotate(grace1.input)
    t.equal((await store.rotate(rotation(b.token, start + IDLE_MS).input)).kind, 'grace')
    t.equal((await store.findByRefresh(grace1.input.newHash, start + 2 * IDLE_MS - 1))?.lastUsedAt, start + IDLE_MS, 'a grace answer counts as use')
  })

  t.test('endSession ends one family and writes no denylist entry', async (t) => {
    const store = await makeStore(t)
    const a = await login(store)
    const other = await login(store, { sub: a.sub })
    const ended = await store.endSession(a.sid)
    t.equal(ended?.sid, a.sid)
    t.equal(await store.endSession(a.sid), null, 'a second end finds nothing')
    t.equal(await store.endSession('no-such-sid'), null)
    t.same(await store.rotate(rotation(a.token, Date.now()).input), { kind: 'invalid' })
    t.same((await store.listSessions(a.sub, Date.now())).map((s) => s.sid), [other.sid])
    t.same(await store.loadDenylist(Date.now()), [])
  })

  t.test('endUser denies the user, ends every session of that user only and denies their sids', async (t) => {
    const store = await makeStore(t)
    const a1 = await login(store)
    const a2 = await login(store, { sub: a1.sub, now: a1.input.now + 1 })
    const b = await login(store)
    const before = Math.floor(Date.now() / 1000)
    const expiresAt = Date.now() + MINUTE
    const entries = await store.endUser(a1.sub, before, expiresAt)
    t.same(entries[0], { kind: 'sub', value: a1.sub, before, expiresAt }, 'the user first')
    t.same(entries.slice(1).map((e) => e.value).sort(), [a1.sid, a2.sid].sort())
    t.ok(entries.slice(1).every((e) => e.kind === 'sid' && e.expiresAt === expiresAt))
    t.same(await store.listSessions(a1.sub, Date.now()), [])
    t.same(await store.rotate(rotation(a2.token, Date.now()).input), { kind: 'invalid' })
    t.same((await store.listSessions(b.sub, Date.now())).map((s) => s.sid), [b.sid], 'another user keeps theirs')
    const denied = await store.loadDenylist(Date.now())
    t.same(denied.map((e) => `${e.kind}:${e.value}`).sort(), entries.map((e) => `${e.kind}:${e.value}`).sort(), 'every entry is in the denylist')
    t.same((await store.endUser(a1.sub, before, expiresAt)).map((e) => e.kind), ['sub'], 'no session left the second time')
  })

  t.test('listSessions shows live sessions, oldest first', async (t) => {
    const store = await makeStore(t)
    const now = Date.now()
    const newer = await login(store, { now: now + 10 })
    const older = await login(store, { sub: newer.sub, now })
    const dying = await login(store, { sub: newer.sub, now: now + 5, expiresAt: now + MINUTE })
    t.same((await store.listSessions(newer.sub, now + 20)).map((s) => s.sid), [older.sid, dying.sid, newer.sid])
    t.same((await store.listSessions(newer.sub, now + MINUTE)).map((s) => s.sid), [older.sid, newer.sid])
  })

  t.test('revoke writes entries that loadDenylist returns while in force and the feed delivers', async (t) => {
    const store = await makeStore(t)
    const feed = await collectFeed(store)
    const now = Date.now()
    const jti: DenyEntry = { kind: 'jti', value: 'j-1', expiresAt: now + MINUTE }
    const sid: DenyEntry = { kind: 'sid', value: 's-1', expiresAt: now + 2 * MINUTE }
    const sub: DenyEntry = { kind: 'sub', value: 'u-1', before: Math.floor(now / 1000), expiresAt: now + 3 * MINUTE }
    for (const e of [jti, sid, sub]) await store.revoke(e)
    const byValue = (a: DenyEntry, b: DenyEntry): number => a.value.localeCompare(b.value)
    t.same((await store.loadDenylist(now)).sort(byValue), [jti, sid, sub].sort(byValue))
    t.same((await store.loadDenylist(now + MINUTE)).sort(byValue), [sid, sub].sort(byValue), 'an entry is dropped once it expires')
    t.same(await store.loadDenylist(now + 3 * MINUTE), [])
    await waitFor('three entries on the feed', () => feed.length === 3)
    t.same(feed, [jti, sid, sub])
  })

  t.test('a user revoked twice keeps the later cut-off and the longer life', async (t) => {
    const store = await makeStore(t)
    const now = Date.now()
    await store.revoke({ kind: 'sub', value: 'u-2', before: 2000, expiresAt: now + 3 * MINUTE })
    await store.revoke({ kind: 'sub', value: 'u-2', before: 3000, expiresAt: now + 2 * MINUTE })
    await store.revoke({ kind: 'sub', value: 'u-2', before: 1000, expiresAt: now + MINUTE })
    t.same(await store.loadDenylist(now), [{ kind: 'sub', value: 'u-2', before: 3000, expiresAt: now + 3 * MINUTE }])
  })

  t.test('concurrent rotations of one token leave exactly one current token', async (t) => {
    const store = await makeStore(t)
    const a = await login(store)
    const now = a.input.now + 1000
    const attempts = Array.from({ length: 20 }, () => rotation(a.token, now))
    const outcomes = await Promise.all(attempts.map((r) => store.rotate(r.input)))
    const winners = attempts.filter((_r, i) => outcomes[i]?.kind === 'rotated')
    t.equal(winners.length, 1, 'one rotation won')
    t.equal(outcomes.filter((o) => o.kind === 'grace').length, 19, 'the others got the grace answer')
    const winner = winners[0]
    if (winner === undefined) return
    for (const o of outcomes) {
      if (o.kind === 'grace') t.equal(openSuccessor(a.token, o.sealedCurrent), winner.next)
    }
    const live = await Promise.all(attempts.map((r) => store.findByRefresh(r.input.newHash, now)))
    t.equal(live.filter((s) => s !== null).length, 1, 'one live head')
  })
}
