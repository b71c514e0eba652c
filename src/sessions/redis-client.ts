import type { Redis, RedisOptions } from 'ioredis'

// How the gateway holds a Redis connection, for the store, its subscriber and
// the rate limiter alike: never wait on it, notice outages once, close it
// whatever state it is in.

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
    retryStrategy: (attempt) => Math.min(RECONNECT_BASE_MS * 2 ** Math.min(attempt, 10), RECONNECT_MAX_MS)
  }
}

/**
 * Calls `onDown` once per outage, not at every reconnect attempt. The 'error'
 * listener is also what keeps ioredis from crashing the process.
 */
export function watchOutages (client: Redis, onDown: (err: Error) => void): void {
  let down = false
  client.on('error', (err: Error) => {
    if (down) return
    down = true
    onDown(err)
  })
  client.on('ready', () => { down = false })
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
