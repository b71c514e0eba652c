import { Cluster, Redis, SentinelConnector, type ClusterOptions, type DNSLookupFunction, type RedisOptions, type SentinelConnectionOptions, type StandaloneConnectionOptions } from 'ioredis'
// ioredis's connector for one node, which its package root does not export
import { StandaloneConnector } from 'ioredis/built/connectors/index.js'
import { parseNode, type RedisNode } from '../config/redis-config.js'
import type { RedisTls } from '../config/redis-tls.js'
import type { GatewayConfig } from '../config/schema.js'

// How the gateway holds a Redis connection, for the store, its subscriber and
// the rate limiter alike: never wait on it, notice outages once, close it
// whatever state it is in.

/** Backs off exponentially, but never stops trying nor waits long between tries. */
function reconnectDelay (attempt: number): number {
  return Math.min(RECONNECT_BASE_MS * 2 ** Math.min(attempt, 10), RECONNECT_MAX_MS)
}

/** Where Redis is: one URL, the sentinels that know the primary, or a cluster's seed nodes. */
export interface RedisTarget {
  /** redis:// or rediss:// */
  url?: string
  sentinels?: RedisNode[]
  /** seed nodes of a Redis Cluster: any reachable one tells the client the rest */
  cluster?: RedisNode[]
  masterName?: string
  sentinelPassword?: string
  username?: string
  password?: string
  /** TLS on every connection (data nodes, sentinels, cluster nodes); `{}` checks certificates against the public CAs */
  tls?: RedisTls
}

/**
 * The target the config names, with the TLS material load-config read for
 * it (loadRedisTls); null for the embedded store.
 */
export function redisTargetOf (redis: GatewayConfig['redis'], tls: RedisTls | undefined): RedisTarget | null {
  const auth = {
    ...(redis.username === undefined ? {} : { username: redis.username }),
    ...(redis.password === undefined ? {} : { password: redis.password }),
    ...(tls === undefined ? {} : { tls })
  }
  if (redis.sentinels !== undefined) {
    return {
      sentinels: redis.sentinels.map((s) => parseNode(s)).filter((n): n is RedisNode => n !== null),
      ...(redis.masterName === undefined ? {} : { masterName: redis.masterName }),
      ...(redis.sentinelPassword === undefined ? {} : { sentinelPassword: redis.sentinelPassword }),
      ...auth
    }
  }
  if (redis.cluster !== undefined) {
    return { cluster: redis.cluster.map((s) => parseNode(s)).filter((n): n is RedisNode => n !== null), ...auth }
  }
  return redis.url === '' ? null : { url: redis.url, ...auth }
}

/** A client of one topology: a single connection (one node, Sentinel) or a Cluster client. */
export type RedisClient = Redis | Cluster

/**
 * The one place a Redis client is opened (store, subscriber, rate limiter,
 * login throttle), so every connection gets the same topology, credentials
 * and TLS.
 */
export function createRedisClient (target: RedisTarget & { cluster: RedisNode[] }, options: RedisOptions): Cluster
export function createRedisClient (target: RedisTarget & { cluster?: undefined }, options: RedisOptions): Redis
export function createRedisClient (target: RedisTarget, options: RedisOptions): RedisClient
export function createRedisClient (target: RedisTarget, options: RedisOptions): RedisClient {
  const common = nodeOptions(target, options)
  if (target.cluster !== undefined) {
    const { retryStrategy, enableOfflineQueue, ...perNode } = common
    const cluster: ClusterOptions = {
      // every node, the seeds and those the slot table names, with the same TLS
      redisOptions: perNode,
      // ioredis connects to a seed given by name at the address it resolved
      // the name to, and TLS would then check the certificate against that
      // address: keep the name, so the certificate is checked against it.
      ...(target.tls === undefined ? {} : { dnsLookup: keepHostname }),
      // the same fail-fast rules as one node: no queue while the cluster is
      // not ready, a failed command is an immediate error, never a wait
      enableOfflineQueue: enableOfflineQueue ?? true,
      enableReadyCheck: true,
      clusterRetryStrategy: retryStrategy === undefined || retryStrategy === null ? reconnectDelay : (times) => retryStrategy(times),
      // Writes go to primaries, and so do reads: a replica may lag behind a
      // revocation, and the store must never read its state from one.
      scaleReads: 'master',
      // A MOVED after a failover or a resharding refreshes the slot table at
      // once; this also picks up changes nobody's command ran into.
      slotsRefreshInterval: SLOTS_REFRESH_MS,
      slotsRefreshTimeout: options.connectTimeout ?? 1000,
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      retryDelayOnTryAgain: 100
    }
    return new Cluster(target.cluster, cluster)
  }
  if (target.sentinels !== undefined) {
    return new Redis({
      ...common,
      Connector: GuardedSentinelConnector,
      sentinels: target.sentinels,
      name: target.masterName,
      ...(target.sentinelPassword === undefined ? {} : { sentinelPassword: target.sentinelPassword }),
      // the sentinels with the same TLS as the data nodes (the CA, the client certificate)
      ...(target.tls === undefined ? {} : { enableTLSForSentinelMode: true, sentinelTLS: target.tls }),
      // the sentinels are asked again at every reconnect, so a failover is followed
      sentinelRetryStrategy: reconnectDelay,
      // ...but a primary gone silent without closing its sockets (frozen,
      // partitioned) gives nothing to reconnect on: commands would time out
      // there forever, long after the sentinels promoted a replica (ioredis
      // #1314). A socket that answers nothing for twice the command timeout
      // is dropped, so the reconnect asks the sentinels again. (ioredis'
      // failoverDetector drops even a connection already on the new primary,
      // once per sentinel's +switch-master: 503s after every failover.)
      ...(options.commandTimeout === undefined ? {} : { socketTimeout: 2 * options.commandTimeout }),
      // the silent primary never answers our FIN: do not wait long for it
      disconnectTimeout: DISCONNECT_TIMEOUT_MS
    })
  }
  if (target.url === undefined || target.url === '') throw new TypeError('a Redis target needs a url, sentinels or cluster nodes')
  return new Redis(target.url, common)
}

/** A connection to one node of a cluster (the denylist subscriber), with the target's credentials and TLS. */
export function createNodeClient (target: RedisTarget, node: RedisNode, options: RedisOptions): Redis {
  return new Redis({ ...nodeOptions(target, options), host: node.host, port: node.port })
}

type ErrorEmitter = Parameters<StandaloneConnector['connect']>[0]
type NetStream = Awaited<ReturnType<StandaloneConnector['connect']>>

/**
 * ioredis listens for its socket's 'error' with `once` (twice over: the
 * connector's and the client's listener both go on the first error), so a
 * socket that errs twice (a TLS alert, then the peer's reset, as Redis does
 * to a client certificate it refuses; or a socket reset after its client
 * closed) throws the second error out of the event loop and the process
 * exits. Every socket a connector hands over keeps a listener of its own:
 * ioredis still acts on the first error (reconnect, report), later ones on a
 * socket it has given up are dropped.
 */
function ignoreLateErrors (stream: NetStream): NetStream {
  stream.on('error', () => {})
  return stream
}

// ioredis builds a connector with the client's own options (typed unknown in its Connector option).
class GuardedStandaloneConnector extends StandaloneConnector {
  constructor (options: unknown) { super(options as StandaloneConnectionOptions) }
  override async connect (emit: ErrorEmitter): Promise<NetStream> { return ignoreLateErrors(await super.connect(emit)) }
}

class GuardedSentinelConnector extends SentinelConnector {
  constructor (options: unknown) { super(options as SentinelConnectionOptions) }
  override async connect (emit: ErrorEmitter): Promise<NetStream> { return ignoreLateErrors(await super.connect(emit)) }
}

function nodeOptions (target: RedisTarget, options: RedisOptions): RedisOptions {
  return {
    ...options,
    Connector: GuardedStandaloneConnector,
    ...(target.username === undefined ? {} : { username: target.username }),
    ...(target.password === undefined ? {} : { password: target.password }),
    ...(target.tls === undefined ? {} : { tls: target.tls })
  }
}

const keepHostname: DNSLookupFunction = (hostname, callback) => { callback(null, hostname) }

/** How often a Cluster client asks for the slot table even when no MOVED told it to. */
const SLOTS_REFRESH_MS = 2000

/** How long a dropped connection waits for the peer's goodbye before it is destroyed. */
const DISCONNECT_TIMEOUT_MS = 500

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
export function watchOutages (client: RedisClient, onDown: (err: Error) => void, onUp?: () => void): void {
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

/** OpenSSL's verify results for a certificate chain the gateway does not trust. */
const UNTRUSTED_CHAIN = /^(SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_UNTRUSTED|CERT_SIGNATURE_FAILURE)$/
const CREDENTIALS_REFUSED = /^(WRONGPASS|NOAUTH)|Last error: (WRONGPASS|NOAUTH)/
const SENTINELS_UNREACHABLE = /^All sentinels are unreachable/
/** ioredis' Sentinel folds the last error into its own message, without the code. */
const UNTRUSTED_CHAIN_TEXT = /self[- ]signed certificate|unable to verify the first certificate|unable to get (local )?issuer certificate/

/**
 * The log line of a failed Redis connection: for a reason the config can fix
 * (TLS, credentials), it says what to look at.
 */
export function outageMessage (name: string, err: Error): string {
  const hint = outageHint(err)
  return `${name} connection failed${hint === undefined ? '' : ` (${hint})`}; retrying in the background`
}

function outageHint (err: Error): string | undefined {
  // A Cluster client that no seed answered says only "Failed to refresh
  // slots cache."; the reason is the last node's error.
  const nodeError = (err as { lastNodeError?: unknown }).lastNodeError
  if (nodeError instanceof Error) return outageHint(nodeError)
  // ioredis folds a sentinel's refusal into "All sentinels are unreachable … Last error: WRONGPASS …"
  if (SENTINELS_UNREACHABLE.test(err.message) && CREDENTIALS_REFUSED.test(err.message)) return 'the sentinels refused the credentials: check redis.sentinelPassword'
  const code = (err as NodeJS.ErrnoException).code ?? ''
  if (UNTRUSTED_CHAIN.test(code) || UNTRUSTED_CHAIN_TEXT.test(err.message)) return 'Redis\'s TLS certificate is not signed by a CA the gateway trusts: name that CA in redis.tls.ca'
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return 'Redis\'s TLS certificate does not carry the name connected to: connect by a name it carries, or set redis.tls.servername'
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return 'Redis\'s TLS certificate is outside its validity dates'
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER') return 'Redis does not speak TLS on that port: use redis:// without redis.tls, or its tls-port'
  if (/^ERR_SSL_.*ALERT/.test(code)) return 'Redis refused the TLS handshake: it may not accept the client certificate (redis.tls.cert, redis.tls.key)'
  if (CREDENTIALS_REFUSED.test(err.message)) return 'Redis refused the credentials: check redis.username and redis.password'
  return undefined
}

/** Says goodbye to a Redis that answers; one that cannot is simply dropped. */
export async function closeClient (client: RedisClient): Promise<void> {
  // ioredis' Cluster goes ready when a ready check that was out at the close
  // answers (its handler does not ask whether the client was closed
  // meanwhile), and from then on refreshes its slot table every 2 s, from
  // nodes long gone, holding the process open. A client we closed stays
  // closed.
  client.on('ready', () => { client.disconnect() })
  if (client.status === 'ready') {
    try {
      await client.quit()
    } catch {
      // disconnected below
    }
  }
  // After a quit too: a Cluster's quit says goodbye to the nodes that
  // answer, and one that was reconnecting to a killed node may still hold a
  // retry timer. disconnect() clears every timer and ends every node.
  client.disconnect()
}

/** Resolves once `client` is connected, rejects after `timeoutMs` or when it gives up. */
export function whenReady (client: RedisClient, timeoutMs: number): Promise<void> {
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
