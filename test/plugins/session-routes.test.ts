import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { PASSWORDS } from '../helpers/gateway.js'
import {
  callApi, decodeJwt, eachStore, refreshWithBody, startLifecycle, startLifecycleInstances, storeConfig
} from '../helpers/lifecycle.js'
import { waitFor } from '../helpers/wait-for.js'

// GET /auth/sessions, DELETE /auth/sessions/:id, POST /auth/logout-all: a
// user's own sessions, and only theirs.

interface Session { access: string, refresh: string, sid: string }

async function signIn (app: FastifyInstance, username: keyof typeof PASSWORDS, userAgent = 'test-agent'): Promise<Session> {
  const res = await app.inject({
    method: 'POST', url: '/auth/login', headers: { 'user-agent': userAgent }, payload: { username, password: PASSWORDS[username], transport: 'body' }
  })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  const body = res.json()
  return { access: body.access_token, refresh: body.refresh_token, sid: decodeJwt(body.access_token).payload.sid as string }
}

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })
const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/

eachStore(t, 'GET /auth/sessions lists the caller\'s sessions, marks the current one, and no one else\'s', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const laptop = await signIn(app, 'alice', 'Mozilla/5.0 (laptop)')
  const phone = await signIn(app, 'alice', 'Mozilla/5.0 (phone)')
  const bob = await signIn(app, 'bob', 'curl/8')

  const res = await app.inject({ url: '/auth/sessions', headers: bearer(phone.access) })
  t.equal(res.statusCode, 200)
  const { sessions } = res.json()
  t.equal(sessions.length, 2, 'both of alice\'s sessions, not bob\'s')
  const byId = new Map(sessions.map((s: { id: string }) => [s.id, s]))
  t.match(byId.get(laptop.sid), { id: laptop.sid, current: false, userAgent: 'Mozilla/5.0 (laptop)', address: '127.0.0.1', createdAt: ISO, lastUsedAt: ISO, expiresAt: ISO })
  t.match(byId.get(phone.sid), { id: phone.sid, current: true, userAgent: 'Mozilla/5.0 (phone)', address: '127.0.0.1' })
  t.notOk(byId.has(bob.sid))
  t.notMatch(res.body, /refresh|u-2|curl/, 'nothing of bob and no token material')

  const bobs = (await app.inject({ url: '/auth/sessions', headers: bearer(bob.access) })).json().sessions
  t.same(bobs.map((s: { id: string }) => s.id), [bob.sid])

  const unauthenticated = await app.inject({ url: '/auth/sessions' })
  t.equal(unauthenticated.statusCode, 401)
  t.match(unauthenticated.json(), { code: 'TG_TOKEN_MISSING' })
})

eachStore(t, 'a refresh moves lastUsedAt, not createdAt', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const s = await signIn(app, 'carol')
  const before = (await app.inject({ url: '/auth/sessions', headers: bearer(s.access) })).json().sessions[0]
  await new Promise((resolve) => setTimeout(resolve, 5))
  const rotated = await refreshWithBody(app, s.refresh)
  t.equal(rotated.statusCode, 200)
  const after = (await app.inject({ url: '/auth/sessions', headers: bearer(rotated.json().access_token) })).json().sessions[0]
  t.equal(after.id, before.id)
  t.equal(after.createdAt, before.createdAt)
  t.ok(Date.parse(after.lastUsedAt) > Date.parse(before.lastUsedAt), 'lastUsedAt moved forward')
})

eachStore(t, 'DELETE /auth/sessions/:id ends that session on the next request; the caller\'s stays', async (t, store) => {
  const { app, up } = await startLifecycle(t, store)
  const lost = await signIn(app, 'alice', 'stolen laptop')
  const me = await signIn(app, 'alice')
  t.equal((await callApi(app, lost.access)).statusCode, 200)

  const res = await app.inject({ method: 'DELETE', url: `/auth/sessions/${lost.sid}`, headers: bearer(me.access) })
  t.equal(res.statusCode, 204)
  const seen = up.seen.length
  const api = await callApi(app, lost.access)
  t.equal(api.statusCode, 401)
  t.match(api.headers['www-authenticate'], /error="invalid_token"/)
  t.equal(up.seen.length, seen)
  t.equal((await refreshWithBody(app, lost.refresh)).statusCode, 401, 'its refresh token is dead')
  t.equal((await callApi(app, me.access)).statusCode, 200, 'the caller\'s session lives on')
  const list = (await app.inject({ url: '/auth/sessions', headers: bearer(me.access) })).json().sessions
  t.same(list.map((s: { id: string }) => s.id), [me.sid])

  const again = await app.inject({ method: 'DELETE', url: `/auth/sessions/${lost.sid}`, headers: bearer(me.access) })
  t.equal(again.statusCode, 404, 'an ended session is not found')
})

eachStore(t, 'DELETE of another user\'s session id: 404, and that session lives on', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const bob = await signIn(app, 'bob')
  const alice = await signIn(app, 'alice')
  for (const id of [bob.sid, 'no-such-session']) {
    const res = await app.inject({ method: 'DELETE', url: `/auth/sessions/${id}`, headers: bearer(alice.access) })
    t.equal(res.statusCode, 404, id)
    t.match(res.json(), { statusCode: 404, code: 'TG_SESSION_NOT_FOUND' })
  }
  t.equal((await callApi(app, bob.access)).statusCode, 200)
  t.equal((await refreshWithBody(app, bob.refresh)).statusCode, 200)

  const bad = await app.inject({ method: 'DELETE', url: '/auth/sessions/a.b', headers: bearer(alice.access) })
  t.equal(bad.statusCode, 400)
  const anonymous = await app.inject({ method: 'DELETE', url: `/auth/sessions/${bob.sid}` })
  t.equal(anonymous.statusCode, 401)
})

eachStore(t, 'logout-all ends every session of the user, no one else\'s; a new login works at once', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const one = await signIn(app, 'alice')
  const two = await signIn(app, 'alice')
  const bob = await signIn(app, 'bob')

  const res = await app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer(one.access) })
  t.equal(res.statusCode, 204)
  for (const s of [one, two]) {
    const api = await callApi(app, s.access)
    t.equal(api.statusCode, 401)
    t.match(api.headers['www-authenticate'], /error="invalid_token"/)
    t.equal((await refreshWithBody(app, s.refresh)).statusCode, 401)
  }
  t.equal((await callApi(app, bob.access)).statusCode, 200, 'bob is untouched')
  t.equal((await refreshWithBody(app, bob.refresh)).statusCode, 200)

  const fresh = await signIn(app, 'alice')
  t.equal((await callApi(app, fresh.access)).statusCode, 200, 'logging in again right away works')
  const list = (await app.inject({ url: '/auth/sessions', headers: bearer(fresh.access) })).json().sessions
  t.same(list.map((s: { id: string }) => s.id), [fresh.sid])

  t.equal((await app.inject({ method: 'POST', url: '/auth/logout-all' })).statusCode, 401, 'needs a token')
})

t.test('across instances: DELETE /auth/sessions/:id and logout-all on A are enforced on B [redis]', async (t) => {
  const [a, b] = await startLifecycleInstances(t, 2, storeConfig(t, 'redis', 'sessions-ab'))
  const lost = await signIn(a.app, 'alice')
  const me = await signIn(a.app, 'alice')
  const other = await signIn(b.app, 'alice')
  t.equal((await callApi(b.app, lost.access)).statusCode, 200, 'B accepts A\'s token before')

  t.equal((await a.app.inject({ method: 'DELETE', url: `/auth/sessions/${lost.sid}`, headers: bearer(me.access) })).statusCode, 204)
  await waitFor('B rejects the ended session', async () => (await callApi(b.app, lost.access)).statusCode === 401)
  t.equal((await callApi(b.app, me.access)).statusCode, 200)

  const listOnB = (await b.app.inject({ url: '/auth/sessions', headers: bearer(me.access) })).json().sessions
  t.same(listOnB.map((s: { id: string }) => s.id).sort(), [me.sid, other.sid].sort(), 'B lists what A created')

  t.equal((await b.app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer(other.access) })).statusCode, 204)
  await waitFor('A rejects every session after logout-all on B', async () => (await callApi(a.app, me.access)).statusCode === 401)
  t.equal((await refreshWithBody(a.app, me.refresh)).statusCode, 401)
})
