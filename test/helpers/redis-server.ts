import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { connect as connectTls, type ConnectionOptions } from 'node:tls'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis, type RedisOptions } from 'ioredis'
import tap, { type Test } from 'tap'
import type { ThrowawayCa } from './throwaway-ca.js'

// Two kinds of Redis for tests: the shared one (always running, each test
// under its own key prefix, deleted on teardown) and a private redis-server
// on a free port that a test may stop and start to play a Redis outage.

export const SHARED_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379'

export function uniquePrefix (label: string): string {
  return `tgtest:${label}:${randomBytes(6).toString('hex')}:`
}

/** A prefix on the shared Redis whose keys are deleted when the test ends. */
export function sharedPrefix (t: Test, label: string): string {
  const prefix = uniquePrefix(label)
  t.teardown(() => deleteKeysWithPrefix(SHARED_REDIS_URL, prefix))
  return prefix
}

/** `options`: what the connection needs besides the URL (a TLS node's CA and client certificate: `RedisTransport.client`). */
export async function withRedis<T> (url: string, use: (redis: Redis) => Promise<T>, options: RedisOptions = {}): Promise<T> {
  // No reconnects, and disconnected whatever happens: a connection refused
  // by a node a test just killed would otherwise retry for ever, its timer
  // holding the test process open after its last test.
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1, ...options, retryStrategy: () => null })
  try {
    await redis.connect()
    return await use(redis)
  } finally {
    redis.disconnect()
  }
}

export async function scanKeys (redis: Redis, prefix: string): Promise<string[]> {
  const keys: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${escapeGlob(prefix)}*`, 'COUNT', 500)
    keys.push(...batch)
    cursor = next
  } while (cursor !== '0')
  return keys
}

export function deleteKeysWithPrefix (url: string, prefix: string): Promise<number> {
  return withRedis(url, async (redis) => {
    const keys = await scanKeys(redis, prefix)
    return keys.length === 0 ? 0 : redis.del(...keys)
  })
}

function escapeGlob (s: string): string {
  return s.replace(/[*?[\]\\]/g, (c) => `\\${c}`)
}

/**
 * How a test's redis-server processes are reached: plain TCP, or TLS only
 * (the gateway's side is its config; this is the servers' side, and the
 * admin connections the helpers make).
 */
export interface RedisTransport {
  /** redis-server arguments that make it listen on `port`, and nowhere else */
  listen (port: number): string[]
  /** an admin connection's URL to the node on `port` */
  url (port: number): string
  /** the ioredis options such a connection needs */
  client: RedisOptions
  /** the same for redis-cli */
  cli: string[]
  /** for a raw socket's TLS (the PING that waits for a node to start) */
  tls?: ConnectionOptions
}

export const PLAIN_TCP: RedisTransport = {
  listen: (port) => ['--port', String(port)],
  url: (port) => `redis://127.0.0.1:${port}`,
  client: {},
  cli: []
}

/**
 * TLS only (`--port 0`): the nodes present `ca.server` and talk TLS to each
 * other too (replication, the cluster bus, sentinels); with `authClients`
 * every client must present a certificate `ca` signed. Admin connections
 * present `ca.client`.
 */
export function tlsTransport (ca: ThrowawayCa, opts: { authClients?: boolean } = {}): RedisTransport {
  // checked against localhost, the one name every throwaway server certificate carries
  const tls: ConnectionOptions = { ca: readFileSync(ca.ca, 'utf8'), cert: readFileSync(ca.client.cert, 'utf8'), key: readFileSync(ca.client.key, 'utf8'), servername: 'localhost' }
  return {
    listen: (port) => ['--port', '0', '--tls-port', String(port), '--tls-cert-file', ca.server.cert, '--tls-key-file', ca.server.key,
      '--tls-ca-cert-file', ca.ca, '--tls-auth-clients', opts.authClients === true ? 'yes' : 'no', '--tls-replication', 'yes', '--tls-cluster', 'yes'],
    url: (port) => `rediss://127.0.0.1:${port}`,
    client: { tls },
    cli: ['--tls', '--sni', 'localhost', '--cacert', ca.ca, '--cert', ca.client.cert, '--key', ca.client.key],
    tls
  }
}

/**
 * What a test topology's nodes require of their clients: the default
 * user's password (the helpers' admin connections, replication), an ACL
 * user for the gateway, and on Sentinel the sentinels' own password.
 */
export interface RedisAuth {
  /** requirepass of every data node; replicas authenticate with it (masterauth) */
  password: string
  /** an ACL user with every right on every key and channel, as a gateway would be given */
  user?: { name: string, password: string }
  /** requirepass of every sentinel, which they also use between themselves */
  sentinelPassword?: string
}

/** redis-server arguments that make a data node require `auth`. */
export function dataNodeAuthArgs (auth: RedisAuth | undefined): string[] {
  if (auth === undefined) return []
  const user = auth.user === undefined ? [] : ['--user', auth.user.name, 'on', `>${auth.user.password}`, '~*', '&*', '+@all']
  return ['--requirepass', auth.password, '--masterauth', auth.password, ...user]
}

/** `transport` for admin connections that authenticate as the default user with `password`. */
export function withPassword (transport: RedisTransport, password: string | undefined): RedisTransport {
  if (password === undefined) return transport
  return { ...transport, client: { ...transport.client, password }, cli: [...transport.cli, '-a', password, '--no-auth-warning'] }
}

/** An admin connection to the node on `port`, for `use`. */
export function withNode<T> (transport: RedisTransport, port: number, use: (redis: Redis) => Promise<T>): Promise<T> {
  return withRedis(transport.url(port), use, transport.client)
}

export interface PrivateRedisOptions {
  transport?: RedisTransport
  /** more redis-server arguments (an ACL, a password) */
  args?: string[]
}

export interface PrivateRedis {
  url: string
  port: number
  transport: RedisTransport
  /** SIGTERM, resolved once the process has exited */
  stop (): Promise<void>
  /** starts again on the same port, resolved once it answers PING */
  start (): Promise<void>
}

/**
 * A redis-server of the test's own; register `t.teardown(redis.stop)`.
 * Nothing is persisted across a restart.
 */
export async function startPrivateRedis (opts: PrivateRedisOptions = {}): Promise<PrivateRedis> {
  const transport = opts.transport ?? PLAIN_TCP
  let child: ChildProcess | undefined
  const killOnExit = (): void => { child?.kill('SIGKILL') }
  process.once('exit', killOnExit)
  const launch = (port: number): ChildProcess => {
    child = spawn('redis-server', [...transport.listen(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', tmpdir(), '--dbfilename', `tokengate-test-${port}.rdb`, ...(opts.args ?? [])], { stdio: 'ignore' })
    return child
  }
  // the first start picks the port; a restart (start() after stop()) keeps it
  const { port } = await startOnFreePort(launch, transport)

  const start = async (): Promise<void> => {
    if (child !== undefined) return
    await waitForPing(port, launch(port), transport)
  }
  const stop = async (): Promise<void> => {
    const proc = child
    child = undefined
    if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return
    const exited = once(proc, 'exit')
    proc.kill('SIGTERM')
    await exited
  }

  return { url: transport.url(port), port, transport, start, stop }
}

export async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

/** whether `port` on 127.0.0.1 can be listened on now */
export async function canListen (port: number): Promise<boolean> {
  const server = createServer()
  const listening = once(server, 'listening').then(() => true, () => false)
  server.once('error', () => {})
  server.listen(port, '127.0.0.1')
  if (!await listening) return false
  server.close()
  await once(server, 'close')
  return true
}

/**
 * Starts a redis-server with `launch(port)` on a port `pick` finds free and
 * resolves once it answers PING. Tap runs four test files at once, so a port
 * found free can be taken by another file's socket before redis-server binds
 * it: a server that exits at start is started again on another port, at most
 * five times. One that starts but does not answer is killed, not retried.
 */
export async function startOnFreePort<P extends ChildProcess> (launch: (port: number) => P, transport: RedisTransport, pick: () => Promise<number> = freePort): Promise<{ port: number, proc: P }> {
  for (let attempt = 1; ; attempt++) {
    const port = await pick()
    const proc = launch(port)
    try {
      await waitForPing(port, proc, transport)
      return { port, proc }
    } catch (err) {
      if (proc.exitCode === null) {
        // up but silent: not a port taken, and not left running either
        proc.kill('SIGKILL')
        throw err
      }
      if (attempt === 5) throw err
    }
  }
}

export async function waitForPing (port: number, proc: ChildProcess, transport: RedisTransport = PLAIN_TCP): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    if (proc.exitCode !== null) throw new Error(`redis-server on port ${port} exited with ${proc.exitCode}`)
    if (await answersPing(port, transport.tls)) return
    await sleep(25)
  }
  throw new Error(`redis-server on port ${port} did not answer PING`)
}

/** PING on a raw socket: an ACL'd or password-protected node answers NOAUTH, which also means it is up. */
function answersPing (port: number, tls: ConnectionOptions | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    const socket: Socket = tls === undefined ? connect(port, '127.0.0.1') : connectTls({ ...tls, port, host: '127.0.0.1' })
    let reply = ''
    const finish = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(500, () => finish(false))
    socket.on('error', () => finish(false))
    socket.on(tls === undefined ? 'connect' : 'secureConnect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk) => {
      reply += chunk.toString()
      if (reply.includes('\r\n')) finish(reply.startsWith('+PONG') || reply.startsWith('-NOAUTH'))
    })
  })
}

export interface RedisUser {
  /** connects as this user */
  url: string
  username: string
  password: string
  /** disables the user and drops its connections: Redis keeps running, with its data, but this user cannot reconnect */
  lockOut (): Promise<void>
  letIn (): Promise<void>
}

/** An ACL user on a private Redis, to cut one client off while others go on using the same data. */
export async function createRedisUser (redis: PrivateRedis, name: string): Promise<RedisUser> {
  const password = randomBytes(12).toString('hex')
  const admin = <T>(use: (r: Redis) => Promise<T>): Promise<T> => withNode(redis.transport, redis.port, use)
  await admin((r) => r.call('ACL', 'SETUSER', name, 'on', `>${password}`, '~*', '&*', '+@all'))
  const url = new URL(redis.url)
  url.username = name
  url.password = password
  return {
    url: url.href,
    username: name,
    password,
    lockOut: () => admin(async (r) => {
      await r.call('ACL', 'SETUSER', name, 'off')
      await r.call('CLIENT', 'KILL', 'USER', name)
    }),
    letIn: () => admin(async (r) => {
      await r.call('ACL', 'SETUSER', name, 'on')
    })
  }
}

/** The redis-server processes of one topology (Sentinel, Cluster) and their temp dir. */
export interface RedisProcessGroup<N extends { port: number, proc: ChildProcess }> {
  dir: string
  nodes: N[]
  /** kill -STOP of the node on `port`: it keeps its sockets open and answers nothing (one at a time) */
  freeze (port: number): void
  /** kill -CONT of the frozen node (no-op when none is frozen) */
  thawFrozen (): void
  frozen (): N | undefined
}

/**
 * A temp dir and the list a topology's redis-server processes go in: every
 * one still running is killed when the test ends, or when the test process
 * exits first, and a frozen one is continued first (never left stopped).
 */
export function redisProcessGroup<N extends { port: number, proc: ChildProcess }> (t: Test, label: string): RedisProcessGroup<N> {
  const dir = mkdtempSync(join(tmpdir(), `tokengate-${label}-`))
  const nodes: N[] = []
  let frozen: N | undefined
  const thawFrozen = (): void => {
    frozen?.proc.kill('SIGCONT')
    frozen = undefined
  }
  const killOnExit = (): void => { for (const n of nodes) n.proc.kill('SIGKILL') }
  process.once('exit', killOnExit)
  t.teardown(async () => {
    process.off('exit', killOnExit)
    thawFrozen()
    await Promise.all(nodes.map(async (n) => {
      if (n.proc.exitCode !== null || n.proc.signalCode !== null) return
      const exited = once(n.proc, 'exit')
      n.proc.kill('SIGKILL')
      await exited
    }))
    rmSync(dir, { recursive: true, force: true })
  })
  reportLingeringOnce()
  return {
    dir,
    nodes,
    freeze (port) {
      const node = nodes.find((n) => n.port === port)
      if (node === undefined) throw new Error(`no node on port ${port}`)
      if (frozen !== undefined) throw new Error('a node is frozen already')
      node.proc.kill('SIGSTOP')
      frozen = node
    },
    thawFrozen,
    frozen: () => frozen
  }
}

/**
 * Once a file's tests are done, nothing of the gateway should hold its
 * process open: a Redis client that survived its close (reconnecting to the
 * killed nodes forever) would hang the file until tap's timeout with nothing
 * said. The timer is unref'd, so it fires only if something keeps the
 * process alive; it then names what does, and fails the file.
 */
let lingerWatch = false
function reportLingeringOnce (): void {
  if (lingerWatch) return
  lingerWatch = true
  tap.teardown(() => {
    setTimeout(() => {
      const handles = (process as unknown as { _getActiveHandles (): unknown[] })._getActiveHandles()
      const named = handles.map((h) => {
        const o = h as { constructor?: { name?: string }, remotePort?: number, pid?: number, spawnfile?: string }
        return [o.constructor?.name ?? typeof h, o.remotePort === undefined ? '' : `remote:${o.remotePort}`, o.pid === undefined ? '' : `pid:${o.pid} ${o.spawnfile ?? ''}`].join(' ').trim()
      })
      process.stderr.write(`# still alive 20 s after the last test: ${JSON.stringify(process.getActiveResourcesInfo())} ${JSON.stringify(named)}\n`)
      process.exitCode = 1
    }, 20_000).unref()
  })
}
