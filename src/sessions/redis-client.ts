import { Redis, type RedisOptions } from 'ioredis'
import { parseNode, type RedisNode } from '../config/redis-config.js'
import type { GatewayConfig } from '../config/schema.js'

// How the gateway holds a Redis connection, for the store, its subscriber and
// the rate limiter alike: never wait on it, notice outages once, close it
// whatever state it is in.

/** Backs off exponentially, but never stops trying nor waits long between tries. */
function reconnectDelay (attempt: number): number {
  return Math.min(RECONNECT_BASE_MS * 2 ** Math.min(attempt, 10), RECONNECT_MAX_MS)
}

/** Where Redis is: one URL, or the sentinels that know the primary. */
export interface RedisTarget {
  /** redis:// or rediss:// */
  url?: string
  sentinels?: RedisNode[]
  masterName?: string
  sentinelPassword?: string
  username?: string
  password?: string
  /** TLS; a rediss:// url implies it */
  tls?: boolean
}

/** The target the config names; null for the in-process store. */
export function redisTargetOf (redis: GatewayConfig['redis']): RedisTarget | null {
  const auth = {
    ...(redis.username === undefined ? {} : { username: redis.username }),
    ...(redis.password === undefined ? {} : { password: redis.password }),
    ...(redis.tls === undefined ? {} : { tls: redis.tls })
  }
  if (redis.sentinels !== undefined) {
    return {
      sentinels: redis.sentinels.map((s) => parseNode(s)).filter((n): n is RedisNode => n !== null),
      ...(redis.masterName === undefined ? {} : { masterName: redis.masterName }),
      ...(redis.sentinelPassword === undefined ? {} : { sentinelPassword: redis.sentinelPassword }),
      ...auth
    }
  }
  return redis.url === '' ? null : { url: redis.url, ...auth }
}

/**
 * The one place a Redis client is opened (store, subscriber, rate limiter,
 * login throttle), so every connection gets the same topology, credentials
 * and TLS.
 */
export function createRedisClient (target: RedisTarget, options: RedisOptions): Redis {
  const common: RedisOptions = {
    ...options,
    ...(target.username === undefined ? {} : { username: target.username }),
    ...(target.password === undefined ? {} : { password: target.password }),
    ...(target.tls === true ? { tls: {} } : {})
  }
  if (target.sentinels !== undefined) {
    return new Redis({
      ...common,
      sentinels: target.sentinels,
      name: target.masterName,
      ...(target.sentinelPassword === undefined ? {} : { sentinelPassword: target.sentinelPassword }),
      ...(target.tls === true ? { enableTLSForSentinelMode: true, sentinelTLS: {} } : {}),
      // the sentinels are asked again at every reconnect, so a failover is followed
      sentinelRetryStrategy: reconnectDelay
    })
  }
  if (target.url === undefined || target.url === '') throw new TypeError('a Redis target needs a url or sentinels')
  return new Redis(target.url, common)
}

/** Probes a connection that has gone quiet, so a dead peer is noticed by the OS too. */
const TCP_KEEPALIVE_MS = 5000
const RECONNECT_BASE_MS = 50
/** Keeps reconnecting forever, but never waits longer than this between attempts. */
const RECONNECT_MAX_MS = 1000

/**
 * Client options for a Redis the gateway must never wait on: a command fails
 * within `commandTimeoutMs`, or at once while disconnected, instead of queueing.
 */
export function fastFailClientOptions (connectTimeoutMs: number, commandTimeoutMs: number): RedisOptions {
  return {
    connectTimeout: connectTimeoutMs,
    commandTimeout: commandTimeoutMs,
    // Fail fast instead of queueing: a command queued while Redis is down
    // could run after its caller was told it failed (a consumed token).
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    // The OS notices a peer that vanished; the denylist heartbeat does not rely on it.
    keepAlive: TCP_KEEPALIVE_MS,
    retryStrategy: reconnectDelay
  }
}

/**
 * Calls `onDown` once per outage, not at every reconnect attempt. The 'error'
 * listener is also what keeps ioredis from crashing the process.
 */
export function watchOutages (client: Redis, onDown: (err: Error) => void, onUp?: () => void): void {
  let down = false
  client.on('error', (err: Error) => {
    if (down) return
    down = true
    onDown(err)
  })
  client.on('ready', () => {
    // the outage ends once, where it began once: one line each
    if (down) onUp?.()
    down = false
  })
}

/** Says goodbye to a Redis that answers; one that cannot is simply dropped. */
export async function closeClient (client: Redis): Promise<void> {
  if (client.status === 'ready') {
    try {
      await client.quit()
      return
    } catch {
      // fall through to disconnect
    }
  }
  client.disconnect()
}

/** Resolves once `client` is connected, rejects after `timeoutMs` or when it gives up. */
export function whenReady (client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') return Promise.resolve()
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer)
      client.off('ready', onReady)
      client.off('end', onEnd)
      if (err === undefined) resolve()
      else reject(err)
    }
    const onReady = (): void => done()
    const onEnd = (): void => done(new Error('Redis connection ended'))
    const timer = setTimeout(() => done(new Error(`Redis not reachable within ${timeoutMs} ms`)), timeoutMs)
    client.once('ready', onReady)
    client.once('end', onEnd)
  })
}
