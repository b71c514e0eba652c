import t from 'tap'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import { login } from '../helpers/gateway.js'
import {
  callApi, decodeJwt, eachStore, refreshWithBody, startLifecycle, startLifecycleInstances, storeConfig
} from '../helpers/lifecycle.js'
import { waitFor } from '../helpers/wait-for.js'

// POST /admin/revoke {jti|sid|sub}: operator revocation, for the admin role
// only, taking effect on the next request. alice is the admin, bob is not.

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

function revoke (app: FastifyInstance, adminToken: string, payload: unknown): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/admin/revoke', headers: bearer(adminToken), payload: payload as Record<string, string> })
}

eachStore(t, 'a non-admin gets 403 and revokes nothing; no token gets 401', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const bob = await login(app, 'bob')
  const alice = await login(app, 'alice')
  const sid = decodeJwt(alice.access_token).payload.sid
  for (const payload of [{ sub: 'u-1' }, { sid }, { jti: decodeJwt(alice.access_token).payload.jti }]) {
    const res = await revoke(app, bob.access_token, payload)
    t.equal(res.statusCode, 403, JSON.stringify(payload))
    t.match(res.json(), { statusCode: 403, code: 'TG_INSUFFICIENT_SCOPE', error: 'insufficient_scope' })
  }
  t.equal((await callApi(app, alice.access_token)).statusCode, 200, 'alice is untouched')
  const anonymous = await app.inject({ method: 'POST', url: '/admin/revoke', payload: { sub: 'u-1' } })
  t.equal(anonymous.statusCode, 401)
})

eachStore(t, 'revoke by jti: that access token is rejected next request; its session lives on', async (t, store) => {
  const { app, up } = await startLifecycle(t, store)
  const admin = await login(app, 'alice')
  const bob = await login(app, 'bob')
  const jti = decodeJwt(bob.access_token).payload.jti
  const res = await revoke(app, admin.access_token, { jti })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { revoked: { jti } })
  const seen = up.seen.length
  const api = await callApi(app, bob.access_token)
  t.equal(api.statusCode, 401)
  t.match(api.headers['www-authenticate'], /error="invalid_token"/)
  t.equal(up.seen.length, seen)
  const refreshed = await refreshWithBody(app, bob.refresh_token ?? '')
  t.equal(refreshed.statusCode, 200, 'one token, not the session')
  t.equal((await callApi(app, refreshed.json().access_token)).statusCode, 200)
})

eachStore(t, 'revoke by sid: the session\'s access and refresh tokens die; the user\'s other session stays', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const admin = await login(app, 'alice')
  const target = await login(app, 'bob')
  const other = await login(app, 'bob')
  const sid = decodeJwt(target.access_token).payload.sid
  const res = await revoke(app, admin.access_token, { sid })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { revoked: { sid } })
  t.equal((await callApi(app, target.access_token)).statusCode, 401)
  t.equal((await refreshWithBody(app, target.refresh_token ?? '')).statusCode, 401)
  t.equal((await callApi(app, other.access_token)).statusCode, 200)
})

eachStore(t, 'revoke by sub: every token of the user dies; they can log in again at once and the NEW token works', async (t, store) => {
  const { app } = await startLifecycle(t, store)
  const admin = await login(app, 'alice')
  const one = await login(app, 'bob')
  const two = await login(app, 'bob')
  const carol = await login(app, 'carol')
  const res = await revoke(app, admin.access_token, { sub: 'u-2' })
  t.equal(res.statusCode, 200)
  t.same(res.json(), { revoked: { sub: 'u-2', sessions: 2 } })
  for (const s of [one, two]) {
    t.equal((await callApi(app, s.access_token)).statusCode, 401)
    t.equal((await refreshWithBody(app, s.refresh_token ?? '')).statusCode, 401)
  }
  t.equal((await callApi(app, carol.access_token)).statusCode, 200, 'carol is untouched')
  t.equal((await callApi(app, admin.access_token)).statusCode, 200)

  const again = await login(app, 'bob')
  t.equal((await callApi(app, again.access_token)).statusCode, 200, 'a login right after the revocation works')
  const rotated = await refreshWithBody(app, again.refresh_token ?? '')
  t.equal(rotated.statusCode, 200)
  t.equal((await callApi(app, rotated.json().access_token)).statusCode, 200)
})

t.test('malformed revoke bodies: 400, nothing revoked', async (t) => {
  const { app } = await startLifecycle(t)
  const admin = await login(app, 'alice')
  const bob = await login(app, 'bob')
  for (const payload of [{}, { sub: 'u-2', jti: 'x' }, { sub: '' }, { sub: 'u 2' }, { user: 'u-2' }, [{ sub: 'u-2' }], { sub: ['u-2'] }]) {
    const res = await revoke(app, admin.access_token, payload)
    t.equal(res.statusCode, 400, JSON.stringify(payload))
    t.match(res.json(), { statusCode: 400 })
  }
  t.equal((await callApi(app, bob.access_token)).statusCode, 200)
})

t.test('across instances: a revocation on A is enforced on B [redis]', async (t) => {
  const [a, b] = await startLifecycleInstances(t, 2, storeConfig(t, 'redis', 'admin-ab'))
  const admin = await login(a.app, 'alice')
  const bob = await login(b.app, 'bob')
  const carol = await login(b.app, 'carol')
  t.equal((await callApi(b.app, bob.access_token)).statusCode, 200)
  t.equal((await revoke(a.app, admin.access_token, { sub: 'u-2' })).statusCode, 200)
  await waitFor('B rejects bob', async () => (await callApi(b.app, bob.access_token)).statusCode === 401)
  t.equal((await revoke(a.app, admin.access_token, { jti: decodeJwt(carol.access_token).payload.jti })).statusCode, 200)
  await waitFor('B rejects carol\'s token', async () => (await callApi(b.app, carol.access_token)).statusCode === 401)
  const again = await login(b.app, 'bob')
  t.equal((await callApi(a.app, again.access_token)).statusCode, 200, 'bob\'s new token works on A')
  t.equal((await callApi(b.app, again.access_token)).statusCode, 200, 'and on B')
})
