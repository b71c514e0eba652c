import type { FastifyBaseLogger } from 'fastify'
import type { LoadedConfig } from '../config/load-config.js'
import { parseDuration } from '../config/duration.js'
import { DEFAULT_WAIT_TIMEOUT, waitReplicasOf } from '../config/redis-config.js'
import type { GatewayMetrics } from '../ops/gateway-metrics.js'
import { heartbeatIntervalFor } from './denylist-mirror.js'
import { RedisStore } from './redis-store.js'
import type { SessionStore } from './session-store.js'
import { SqliteStore } from './sqlite-store.js'

/**
 * The store the config names: Redis when `redis.url`, `redis.sentinels` or
 * `redis.cluster` is set (`loaded.redisTarget`), else the embedded SQLite file `store.file` (resolved against the config
 * file by load-config). Throws StoreOpenError, naming the file, when that file
 * cannot be used.
 */
export function openStore ({ config, redisTarget: target }: Pick<LoadedConfig, 'config' | 'redisTarget'>, log: FastifyBaseLogger, metrics?: GatewayMetrics): SessionStore {
  const heartbeatIntervalMs = heartbeatIntervalFor(parseDuration(config.denylist.maxStaleness))
  if (target === null) return new SqliteStore({ file: config.store.file, log })
  return new RedisStore({
    target,
    keyPrefix: config.redis.keyPrefix,
    connectTimeoutMs: parseDuration(config.redis.connectTimeout),
    commandTimeoutMs: parseDuration(config.redis.commandTimeout),
    heartbeatIntervalMs,
    waitReplicas: waitReplicasOf(config.redis),
    waitTimeoutMs: parseDuration(config.redis.waitTimeout ?? DEFAULT_WAIT_TIMEOUT),
    log,
    ...(metrics === undefined ? {} : { onCommandError: () => metrics.redisError('store') })
  })
}
