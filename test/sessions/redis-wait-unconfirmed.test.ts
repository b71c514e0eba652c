import t from 'tap'
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import type { Test } from 'tap'
import { login, PASSWORDS } from '../helpers/gateway.js'
import { callApi, decodeJwt, refreshWithBody, startLifecycle } from '../helpers/lifecycle.js'
import { startPrivateRedis, uniquePrefix, withNode, type PrivateRedis } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'

// redis.waitReplicas: 1 on a primary whose one replica is gone: the writes
// land on the primary, but no replica confirms them, so a failover now could
// lose them. Every write a client must be able to count on (login, logout,
// logout-all, admin revoke, the revocation a refresh-token reuse makes)
// answers 503 with our error body and Retry-After, never a 2xx. As the
// README says, a revocation the primary took is in force all the same (this
// instance refuses the token once its mirror hears it) and a retry once the
// replica is back is confirmed.

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

function holdsToUnconfirmed (t: Test, res: LightMyRequestResponse, what: string): void {
  t.equal(res.statusCode, 503, `${what} answers 503, not a success a failover could undo`)
  t.match(res.json(), { statusCode: 503, code: 'TG_STORE_UNAVAILABLE', error: String, message: String }, `${what}: our JSON error body`)
  t.notMatch(res.body, /WAIT|replica|Redis/i, `${what}: the body names no internals`)
  t.match(res.headers['retry-after'], /^\d+$/, `${what}: Retry-After says when to try again`)
}

async function replicaCount (primary: PrivateRedis): Promise<number> {
  const info = await withNode(primary.transport, primary.port, (r) => r.info('replication'))
  return Number(/connected_slaves:(\d+)/.exec(info)?.[1] ?? 0)
}

async function replicaInSync (primary: PrivateRedis): Promise<boolean> {
  const info = await withNode(primary.transport, primary.port, (r) => r.info('replication'))
  return /slave0:[^\r\n]*state=online/.test(info)
}

t.test('waitReplicas: 1 with the replica down: logins and revocations answer 503 with Retry-After', async (t) => {
  // a replica (re)joining syncs at once, not after the default 5 s wait for company
  const primary = await startPrivateRedis({ args: ['--repl-diskless-sync-delay', '0'] })
  t.teardown(primary.stop)
  const replica = await startPrivateRedis({ args: ['--replicaof', '127.0.0.1', String(primary.port)] })
  t.teardown(replica.stop)
  await waitFor('the replica is in sync', () => replicaInSync(primary), 200, 50)

  const { app } = await startLifecycle(t, {
    redis: { url: primary.url, keyPrefix: uniquePrefix('wait-unconfirmed'), waitReplicas: 1, waitTimeout: '1s', commandTimeout: '2s' },
    // any ancestor presented again is reuse, not a grace answer
    tokens: { reuseGrace: '0s' }
  })

  // sessions made while the replica confirms them
  const admin = await login(app, 'alice')
  const bob = await login(app, 'bob')
  const bobToo = await login(app, 'bob')
  const carol = await login(app, 'carol')
  const reused = await login(app, 'alice')
  const rotated = await refreshWithBody(app, reused.refresh_token ?? '')
  t.equal(rotated.statusCode, 200, 'a rotation is confirmed while the replica is up')
  const successor = rotated.json() as { access_token: string, refresh_token: string }

  await replica.stop()
  await waitFor('the primary has no replica left', async () => (await replicaCount(primary)) === 0, 200, 25)

  const signIn = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'carol', password: PASSWORDS.carol, transport: 'body' } })
  holdsToUnconfirmed(t, signIn, 'a login')

  holdsToUnconfirmed(t, await app.inject({ method: 'POST', url: '/auth/logout', headers: bearer(bob.access_token) }), 'a logout')
  holdsToUnconfirmed(t, await app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer(carol.access_token) }), 'a logout-all')
  const jti = decodeJwt(bobToo.access_token).payload.jti as string
  holdsToUnconfirmed(t, await app.inject({ method: 'POST', url: '/admin/revoke', headers: bearer(admin.access_token), payload: { jti } }), 'an admin revoke')
  holdsToUnconfirmed(t, await refreshWithBody(app, reused.refresh_token ?? ''), 'a refresh-token reuse')

  // The primary took each revocation: in force on this instance, as the README says.
  const refusedHere = (what: string, token: string): Promise<void> =>
    waitFor(`${what} is refused on this instance`, async () => (await callApi(app, token)).statusCode === 401, 200, 25)
  await refusedHere('bob\'s logged-out token', bob.access_token)
  await refusedHere('carol\'s token after her logout-all', carol.access_token)
  await refusedHere('the token the admin revoked', bobToo.access_token)
  await refusedHere('the session revoked for reuse', successor.access_token)
  t.equal((await callApi(app, admin.access_token)).statusCode, 200, 'a token nobody revoked is still served')

  // Once a replica is back, the same requests again are confirmed.
  await replica.start()
  await waitFor('the replica is back in sync', () => replicaInSync(primary), 200, 50)
  await retried(t, app, 'the logout retried', { method: 'POST', url: '/auth/logout', headers: bearer(bob.access_token), payload: { refresh_token: bob.refresh_token ?? '' } }, 204)
  t.equal((await refreshWithBody(app, bob.refresh_token ?? '')).statusCode, 401, 'and bob\'s refresh token is dead')
  await retried(t, app, 'the admin revoke retried', { method: 'POST', url: '/admin/revoke', headers: bearer(admin.access_token), payload: { jti } }, 200)
  // logout-all's own token is refused once its first try is in force
  const again = await app.inject({ method: 'POST', url: '/auth/logout-all', headers: bearer(carol.access_token) })
  t.equal(again.statusCode, 401, 'the logout-all retried answers 401: its token is revoked already')
  t.equal(again.json().code, 'TG_TOKEN_REVOKED')
  t.equal((await refreshWithBody(app, carol.refresh_token ?? '')).statusCode, 401, 'and carol\'s session was ended by the first try')
  await retried(t, app, 'the login retried', { method: 'POST', url: '/auth/login', payload: { username: 'carol', password: PASSWORDS.carol, transport: 'body' } }, 200)
})

/** The request again until it gets `status`: a replica just back may still be catching up (503 meanwhile). */
async function retried (t: Test, app: FastifyInstance, what: string, request: InjectOptions, status: number): Promise<void> {
  let last: LightMyRequestResponse | undefined
  await waitFor(what, async () => {
    last = await app.inject(request)
    return last.statusCode !== 503
  }, 100, 50)
  t.equal(last?.statusCode, status, `${what} answers ${status}`)
}
