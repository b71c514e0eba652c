import { setTimeout as sleep } from 'node:timers/promises'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import type { FastifyInstance, LightMyRequestResponse } from 'fastify'
import type { Test } from 'tap'
import type { LoadedConfig } from '../../src/config/load-config.js'
import { login, mergeConfig, PASSWORDS, startGateways, testConfig, type ConfigOverrides } from './gateway.js'

export { mergeConfig }
import { sharedPrefix, SHARED_REDIS_URL } from './redis-server.js'
import { startUpstream, type TestUpstream } from './upstream.js'
import { waitFor } from './wait-for.js'

// The token lifecycle is proven over HTTP against both stores with one test
// body: `eachStore` runs it once on the in-process store and once on the
// shared Redis under a prefix of its own.

export type StoreKind = 'sqlite' | 'redis'
export const STORE_KINDS: readonly StoreKind[] = ['sqlite', 'redis']

/** A proxied route every lifecycle test uses to ask "is this access token still accepted?". */
export const API = '/api'

/** Config for a store: the embedded file in the config's temp dir for sqlite, the shared Redis under a fresh prefix (deleted on teardown) for redis. */
export function storeConfig (t: Test, kind: StoreKind, label: string): ConfigOverrides {
  if (kind === 'sqlite') return {}
  return { redis: { url: SHARED_REDIS_URL, keyPrefix: sharedPrefix(t, label) } }
}

export interface LifecycleGateway {
  app: FastifyInstance
  loaded: LoadedConfig
  up: TestUpstream
}

/**
 * A gateway with one protected route (`/api` → a real upstream). Login rate
 * limiting is opened wide: these tests log in far more often than a person.
 */
export async function startLifecycle (t: Test, overrides: ConfigOverrides = {}): Promise<LifecycleGateway> {
  const [gateway] = await startLifecycleInstances(t, 1, overrides)
  return gateway
}

/**
 * `count` gateways built from one loaded config (same signing key, same store
 * config): with Redis they are separate instances sharing one state.
 */
export async function startLifecycleInstances (t: Test, count: number, overrides: ConfigOverrides = {}): Promise<LifecycleGateway[]> {
  const up = await startUpstream(t)
  const loaded = await testConfig(mergeConfig({
    auth: { loginRateLimit: { max: 10_000, timeWindow: '1m' } },
    routes: [{ prefix: API, upstream: up.url }]
  }, overrides))
  return (await startGateways(t, loaded, count)).map((app) => ({ app, loaded, up }))
}

/** Runs `body` as two subtests, one per store. */
export function eachStore (t: Test, name: string, body: (t: Test, store: ConfigOverrides, kind: StoreKind) => Promise<void>): void {
  for (const kind of STORE_KINDS) {
    t.test(`${name} [${kind}]`, async (t) => body(t, storeConfig(t, kind, kind), kind))
  }
}

export function callApi (app: FastifyInstance, accessToken: string, path = '/check'): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'GET', url: `${API}${path}`, headers: { authorization: `Bearer ${accessToken}` } })
}

export function refreshWithBody (app: FastifyInstance, refreshToken: string): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: refreshToken } })
}

/**
 * A refresh the way a client follows Retry-After: the same token again after
 * a 503 (the rotation may have landed: the grace window then gives the same
 * successor), at most `attempts` times. Every answer before the last is
 * returned too, so a test can hold them to 503s with Retry-After.
 */
export async function refreshFollowingRetryAfter (app: FastifyInstance, refreshToken: string, attempts = 5): Promise<{ last: LightMyRequestResponse, before: LightMyRequestResponse[] }> {
  const before: LightMyRequestResponse[] = []
  for (;;) {
    const res = await refreshWithBody(app, refreshToken)
    if (res.statusCode !== 503 || before.length + 1 >= attempts) return { last: res, before }
    before.push(res)
    await sleep(100)
  }
}

export function decodeJwt (token: string): { header: Record<string, unknown>, payload: Record<string, unknown> } {
  const [header, payload] = token.split('.')
  return {
    header: JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as Record<string, unknown>,
    payload: JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>
  }
}

/**
 * The token lifecycle across two instances on one store, as on every Redis
 * topology: a session from `a` is served by `b`, rotates on either, a reused
 * ancestor revokes its family, and a logout (and logout-all) on one is
 * refused on the other, access and refresh tokens alike.
 */
export async function lifecycleAcrossInstances (t: Test, a: FastifyInstance, b: FastifyInstance): Promise<void> {
  const alice = await login(a, 'alice')
  t.match(alice.refresh_token, /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/, 'the refresh token carries its session id')
  t.equal(alice.refresh_token?.split('.')[0], decodeJwt(alice.access_token).payload.sid, 'the sid of its access token')
  t.equal((await callApi(b, alice.access_token)).statusCode, 200, 'a token from a is accepted on b')

  const rotated = await refreshWithBody(b, alice.refresh_token ?? '')
  t.equal(rotated.statusCode, 200, 'rotated on b')
  const next = rotated.json() as { access_token: string, refresh_token: string }
  t.equal((await callApi(a, next.access_token)).statusCode, 200)

  // reuse: an older ancestor is never inside the grace rules
  const third = await refreshWithBody(a, next.refresh_token)
  t.equal(third.statusCode, 200, 'rotated again on a')
  const reused = await refreshWithBody(a, alice.refresh_token ?? '')
  t.equal(reused.statusCode, 401, 'an ancestor presented again is refused')
  const thirdTokens = third.json() as { access_token: string, refresh_token: string }
  await waitFor('b refuses the family revoked for reuse', async () => (await callApi(b, thirdTokens.access_token)).statusCode === 401, 200, 25)
  t.equal((await refreshWithBody(b, thirdTokens.refresh_token)).statusCode, 401, 'its current refresh token died with it')

  const bob = await login(b, 'bob')
  t.equal((await a.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${bob.access_token}` } })).statusCode, 204, 'bob logs out on a')
  await waitFor('b refuses bob\'s access token', async () => (await callApi(b, bob.access_token)).statusCode === 401, 200, 25)
  t.equal((await refreshWithBody(b, bob.refresh_token ?? '')).statusCode, 401, 'and his refresh token')

  const carol1 = await login(a, 'carol')
  const carol2 = await login(b, 'carol')
  t.equal((await b.inject({ method: 'POST', url: '/auth/logout-all', headers: { authorization: `Bearer ${carol1.access_token}` } })).statusCode, 204, 'carol logs out everywhere on b')
  for (const app of [a, b]) {
    await waitFor('both of carol\'s sessions are refused', async () => (await callApi(app, carol2.access_token)).statusCode === 401, 200, 25)
  }
  t.equal((await refreshWithBody(a, carol2.refresh_token ?? '')).statusCode, 401, 'her other session\'s refresh token is dead')
}

/** Two instances started with `rateLimit.max: max` on one shared counter: 20 requests alternating between them, exactly `max` served. */
export async function rateLimitAcrossInstances (t: Test, a: FastifyInstance, b: FastifyInstance, max: number): Promise<void> {
  const alice = await login(a, 'alice')
  const statuses = await Promise.all(Array.from({ length: 20 }, (_, i) => callApi(i % 2 === 0 ? a : b, alice.access_token)))
  const codes = statuses.map((r) => r.statusCode)
  t.equal(codes.filter((c) => c === 200).length, max, `exactly max requests served across both: ${JSON.stringify(codes)}`)
  t.equal(codes.filter((c) => c === 429).length, 20 - max, 'the rest refused')
}

/** The Set-Cookie header lines of a response, always as an array. */
export function setCookies (res: LightMyRequestResponse): string[] {
  const raw = res.headers['set-cookie']
  if (raw === undefined) return []
  return Array.isArray(raw) ? raw : [raw]
}

/** True when a Set-Cookie line deletes its cookie (Max-Age=0 or an Expires in the past). */
export function clearsCookie (line: string): boolean {
  if (/;\s*max-age=0(;|$)/i.test(line)) return true
  const expires = /;\s*expires=([^;]+)/i.exec(line)
  return expires !== null && Date.parse(expires[1]) <= Date.now()
}

/** Polls until a condition holds; the number of tries is never asserted. */

export interface NetworkLink {
  /** redis:// URL that goes through the link */
  url: string
  /** drops every connection and refuses new ones, as a network partition would */
  cut (): Promise<void>
  /** accepts connections again on the same port */
  restore (): Promise<void>
}

/**
 * A TCP relay between the gateway and a real Redis. Cutting it is an outage
 * as the gateway sees it (connections reset, then refused) while Redis keeps
 * its data, which a redis-server restart without persistence cannot offer.
 */
export async function startNetworkLink (t: Test, target: { host: string, port: number }): Promise<NetworkLink> {
  const sockets = new Set<Socket>()
  let server: Server | undefined
  let port = 0
  const listen = async (): Promise<void> => {
    const s = createServer((client) => {
      const upstream = connect(target.port, target.host)
      for (const sock of [client, upstream]) {
        sockets.add(sock)
        sock.on('close', () => sockets.delete(sock))
        sock.on('error', () => { client.destroy(); upstream.destroy() })
      }
      client.pipe(upstream)
      upstream.pipe(client)
    })
    s.listen(port, '127.0.0.1')
    await once(s, 'listening')
    const address = s.address()
    if (address === null || typeof address === 'string') throw new Error('no port')
    port = address.port
    server = s
  }
  const cut = async (): Promise<void> => {
    const s = server
    server = undefined
    for (const sock of sockets) sock.destroy()
    if (s !== undefined) await new Promise<void>((resolve) => s.close(() => resolve()))
  }
  await listen()
  t.teardown(cut)
  return { url: `redis://127.0.0.1:${port}`, cut, restore: listen }
}

/**
 * Logs in on `login` and out on `logout` until a logout is confirmed (204); a
 * login answered 503 (a login waits for a replica too) is tried again.
 * Right after a failover the restored node may still be resyncing: a
 * revocation then cannot be confirmed on a replica and answers 503, which
 * tells the client it may not have landed. Such a session is not used for a
 * revoke-then-kill try (a failover may rightly undo it); a new one is.
 */
export async function confirmedLogout (loginOn: FastifyInstance, logoutOn: FastifyInstance, username: 'alice' | 'bob' | 'carol', attempts = 60): Promise<{ session: { access_token: string, refresh_token?: string }, unconfirmed: number }> {
  for (let unconfirmed = 0; unconfirmed < attempts; unconfirmed++) {
    // a login waits for a replica too: 503 while the restored node resyncs
    const signIn = await loginOn.inject({ method: 'POST', url: '/auth/login', payload: { username, password: PASSWORDS[username], transport: 'body' } })
    if (signIn.statusCode === 503) {
      await new Promise((resolve) => setTimeout(resolve, 500))
      continue
    }
    if (signIn.statusCode !== 200) throw new Error(`login answered ${signIn.statusCode}: ${signIn.body}`)
    const session = signIn.json() as { access_token: string, refresh_token?: string }
    const out = await logoutOn.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${session.access_token}` } })
    if (out.statusCode === 204) return { session, unconfirmed }
    if (out.statusCode !== 503) throw new Error(`logout answered ${out.statusCode}: ${out.body}`)
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  throw new Error(`no logout confirmed in ${attempts} attempts`)
}
