import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { login } from '../helpers/gateway.js'
import {
  callApi, decodeJwt, eachStore, refreshWithBody, startLifecycle, startLifecycleInstances, storeConfig
} from '../helpers/lifecycle.js'
import { scanKeys, SHARED_REDIS_URL, withRedis } from '../helpers/redis-server.js'

// POST /auth/refresh: rotation, reuse detection revoking the whole session,
// the grace window for concurrent tabs, and a concurrent storm across two
// gateway instances on one Redis.

const REFRESH_TOKEN = /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/

interface Tokens { access_token: string, refresh_token: string }

async function rotate (app: FastifyInstance, token: string): Promise<Tokens> {
  const res = await refreshWithBody(app, token)
  if (res.statusCode !== 200) throw new Error(`refresh failed: ${res.statusCode} ${res.body}`)
  return res.json()
}

eachStore(t, 'rotation: a new refresh token and a new access token for the same session', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const first = await login(app, 'alice')
  const res = await refreshWithBody(app, first.refresh_token ?? '')
  t.equal(res.statusCode, 200)
  t.equal(res.headers['cache-control'], 'no-store')
  const next = res.json()
  t.match(next, { token_type: 'Bearer', expires_in: 900, refresh_token: REFRESH_TOKEN, access_token: String })
  t.not(next.refresh_token, first.refresh_token, 'the refresh token changed')
  t.not(next.access_token, first.access_token)
  const a = decodeJwt(first.access_token).payload
  const b = decodeJwt(next.access_token).payload
  t.equal(b.sid, a.sid, 'same session')
  t.not(b.jti, a.jti)
  t.equal((await callApi(app, next.access_token)).statusCode, 200)
  t.equal((await callApi(app, first.access_token)).statusCode, 200, 'rotation alone does not revoke earlier access tokens')
  const again = await rotate(app, next.refresh_token)
  t.not(again.refresh_token, next.refresh_token, 'and the new one rotates in turn')
})

eachStore(t, 'reuse (no grace): 401 invalid_grant, the current refresh token dies, every access token of the session is rejected', async (t, store) => {
  const { app, up } = await startLifecycle(t, { ...store, tokens: { reuseGrace: '0s' } })
  const first = await login(app, 'alice')
  const bystander = await login(app, 'alice')
  const second = await rotate(app, first.refresh_token ?? '')

  const reuse = await refreshWithBody(app, first.refresh_token ?? '')
  t.equal(reuse.statusCode, 401)
  t.match(reuse.json(), { statusCode: 401, code: 'TG_INVALID_GRANT', error: 'invalid_grant' })
  t.notMatch(reuse.body, /access_token|refresh_token/)

  const current = await refreshWithBody(app, second.refresh_token)
  t.equal(current.statusCode, 401, 'the thief\'s (or the victim\'s) current token is dead too')
  t.match(current.json(), { code: 'TG_INVALID_GRANT' })

  const seen = up.seen.length
  for (const [what, token] of [['from login', first.access_token], ['from the refresh', second.access_token]]) {
    const res = await callApi(app, token)
    t.equal(res.statusCode, 401, `access token ${what}`)
    t.match(res.headers['www-authenticate'], /error="invalid_token"/)
    t.match(res.json(), { code: 'TG_TOKEN_REVOKED' })
  }
  t.equal(up.seen.length, seen, 'the upstream saw none of them')

  t.equal((await callApi(app, bystander.access_token)).statusCode, 200, 'the user\'s other session is untouched')
  t.equal((await refreshWithBody(app, bystander.refresh_token ?? '')).statusCode, 200)
  const list = await app.inject({ url: '/auth/sessions', headers: { authorization: `Bearer ${bystander.access_token}` } })
  t.same(list.json().sessions.map((s: { id: string }) => s.id), [decodeJwt(bystander.access_token).payload.sid], 'the reused session is gone from the list')
})

eachStore(t, 'grace window: the immediate predecessor gets the SAME current token; an older ancestor is reuse', async (t, store) => {
  // wide enough that a slow machine stays inside it
  const { app } = await startLifecycle(t, { ...store, tokens: { reuseGrace: '60s' } })
  const t0 = await login(app, 'bob')
  const t1 = await rotate(app, t0.refresh_token ?? '')

  const tab2 = await refreshWithBody(app, t0.refresh_token ?? '')
  t.equal(tab2.statusCode, 200, 'a second tab presenting the just-rotated token')
  t.equal(tab2.json().refresh_token, t1.refresh_token, 'is handed the current token, not a fork')
  t.equal(decodeJwt(tab2.json().access_token).payload.sid, decodeJwt(t1.access_token).payload.sid)
  t.equal((await callApi(app, tab2.json().access_token)).statusCode, 200)

  const t2 = await rotate(app, t1.refresh_token)
  const tab3 = await refreshWithBody(app, t1.refresh_token)
  t.equal(tab3.statusCode, 200, 'the new immediate predecessor is in its grace window')
  t.equal(tab3.json().refresh_token, t2.refresh_token)

  const ancestor = await refreshWithBody(app, t0.refresh_token ?? '')
  t.equal(ancestor.statusCode, 401, 'the grandparent, inside the window, is reuse')
  t.match(ancestor.json(), { code: 'TG_INVALID_GRANT' })
  t.equal((await refreshWithBody(app, t2.refresh_token)).statusCode, 401, 'and the session is gone')
  t.equal((await callApi(app, t2.access_token)).statusCode, 401)
  t.equal((await callApi(app, tab3.json().access_token)).statusCode, 401)
})

eachStore(t, 'grace window with cookies: the second tab gets the same cookie value', async (t, store) => {
  const { app } = await startLifecycle(t, { ...store, tokens: { reuseGrace: '60s' } })
  const loginRes = await login(app, 'alice', { transport: 'cookie' })
  t.notOk('refresh_token' in loginRes)
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'alice-test-password' } })
  const t0 = res.cookies.find((c) => c.name === 'tg_refresh')?.value ?? ''
  const refresh = (): Promise<LightMyRequestResponse> => app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: 'http://localhost:80' }, cookies: { tg_refresh: t0 } })
  const [a, b] = [await refresh(), await refresh()]
  t.equal(a.statusCode, 200)
  t.equal(b.statusCode, 200)
  const va = a.cookies.find((c) => c.name === 'tg_refresh')?.value
  t.ok(va)
  t.equal(b.cookies.find((c) => c.name === 'tg_refresh')?.value, va)
})

eachStore(t, 'an idle session ends: its refresh token is 401', async (t, store) => {
  const { app } = await startLifecycle(t, { ...store, tokens: { idleTimeout: '300ms' } })
  const { refresh_token: token } = await login(app, 'carol')
  await sleep(600)
  const res = await refreshWithBody(app, token ?? '')
  t.equal(res.statusCode, 401)
  t.match(res.json(), { code: 'TG_INVALID_GRANT' })
})

eachStore(t, 'unknown or malformed refresh tokens: 401 invalid_grant', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  for (const token of ['x'.repeat(43), 'short', '']) {
    const res = await refreshWithBody(app, token)
    t.equal(res.statusCode, 401, JSON.stringify(token))
    t.match(res.json(), { code: 'TG_INVALID_GRANT', error: 'invalid_grant' })
  }
})

// The store's guarantee: one atomic rotation wins; every other concurrent
// presentation of the same token arrives as the winner's immediate
// predecessor inside the grace window and is handed the winner's token. So
// all N answers carry one and the same refresh token: the session's one
// current head. No fork exists to be revoked later.
async function storm (t: Test, apps: FastifyInstance[], n: number): Promise<void> {
  const [first] = apps
  const start = await login(first, 'alice')
  const sid = decodeJwt(start.access_token).payload.sid
  const answers = await Promise.all(Array.from({ length: n }, (_, i) => refreshWithBody(apps[i % apps.length], start.refresh_token ?? '')))
  t.same(answers.map((r) => r.statusCode), Array(n).fill(200), 'every concurrent refresh succeeded (rotated or grace)')
  const heads = new Set(answers.map((r) => r.json().refresh_token as string))
  t.equal(heads.size, 1, 'exactly one refresh token came out of the storm')
  const [head] = heads
  t.not(head, start.refresh_token)
  t.ok(answers.every((r) => decodeJwt(r.json().access_token).payload.sid === sid), 'all for the one session')

  for (const [i, app] of apps.entries()) {
    for (const r of answers.slice(0, 2)) t.equal((await callApi(app, r.json().access_token)).statusCode, 200, `instance ${i} accepts the access tokens`)
  }
  const after = await refreshWithBody(apps[apps.length - 1], head)
  t.equal(after.statusCode, 200, 'the head rotates, on any instance')
  t.equal((await refreshWithBody(first, after.json().refresh_token)).statusCode, 200, 'and its successor is the only head')
}

t.test('concurrent refresh storm on one instance [memory]', async (t) => {
  const { app } = await startLifecycle(t, { tokens: { reuseGrace: '60s' } })
  await storm(t, [app], 10)
})

t.test('concurrent refresh storm across two gateway instances on one Redis prefix [redis]', async (t) => {
  const [a, b] = await startLifecycleInstances(t, 2, { ...storeConfig(t, 'redis', 'storm'), tokens: { reuseGrace: '60s' } })
  await storm(t, [a.app, b.app], 10)
  await storm(t, [a.app, b.app], 20)
})

t.test('what Redis holds: every key under the prefix expires, no refresh token in the clear [redis]', async (t) => {
  const store = storeConfig(t, 'redis', 'state')
  const prefix = (store.redis as { keyPrefix: string }).keyPrefix
  const { app } = await startLifecycle(t, { ...store, tokens: { reuseGrace: '60s' } })
  const issued: string[] = []
  const a = await login(app, 'alice')
  issued.push(a.refresh_token ?? '')
  const a1 = await rotate(app, a.refresh_token ?? '')
  issued.push(a1.refresh_token)
  issued.push((await rotate(app, a.refresh_token ?? '')).refresh_token) // grace
  issued.push((await rotate(app, a1.refresh_token)).refresh_token)
  const b = await login(app, 'bob')
  issued.push(b.refresh_token ?? '')
  const c = await login(app, 'carol')
  issued.push(c.refresh_token ?? '')
  await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${c.access_token}` } })
  await app.inject({ method: 'POST', url: '/admin/revoke', headers: { authorization: `Bearer ${a1.access_token}` }, payload: { sub: 'u-2' } })

  await withRedis(SHARED_REDIS_URL, async (redis) => {
    const keys = await scanKeys(redis, prefix)
    t.ok(keys.length >= 4, `state was written (${keys.length} keys)`)
    const dump: string[] = []
    for (const key of keys) {
      const pttl = await redis.pttl(key)
      t.ok(pttl > 0, `${key.slice(prefix.length)} expires (PTTL ${pttl})`)
      const type = await redis.type(key)
      dump.push(key)
      if (type === 'string') dump.push(String(await redis.get(key)))
      else if (type === 'hash') dump.push(...Object.entries(await redis.hgetall(key)).flat())
      else if (type === 'zset') dump.push(...await redis.zrange(key, 0, -1))
      else if (type === 'set') dump.push(...await redis.smembers(key))
      else if (type === 'list') dump.push(...await redis.lrange(key, 0, -1))
      else t.fail(`unexpected key type ${type}`)
    }
    const text = dump.join('\n')
    for (const token of new Set(issued)) {
      t.ok(REFRESH_TOKEN.test(token))
      t.notOk(text.includes(token), 'no refresh token in any key or value')
    }
    for (const jwt of [a.access_token, a1.access_token]) t.notOk(text.includes(jwt.split('.')[2]), 'no access token either')
  })
})

eachStore(t, 'a session revoked for reuse stays revoked as long as its access tokens verify (accessTtl + clockSkew)', async (t, store) => {
  // exp is accepted up to clockSkew late: a denylist entry that ends at
  // now + accessTtl would let the session's last access token back in.
  const { app } = await startLifecycle(t, { ...store, tokens: { reuseGrace: '0s', accessTtl: '1s', clockSkew: '5s' } })
  const first = await login(app, 'alice')
  await rotate(app, first.refresh_token ?? '')
  t.equal((await refreshWithBody(app, first.refresh_token ?? '')).statusCode, 401, 'reuse')
  t.equal((await callApi(app, first.access_token)).statusCode, 401)
  await sleep(1500)
  const late = await callApi(app, first.access_token)
  t.equal(late.statusCode, 401, 'still rejected after accessTtl, inside the clock-skew tolerance')
})
