import type { FastifyBaseLogger } from 'fastify'
import type { GatewayConfig } from '../config/schema.js'
import { parseDuration } from '../config/duration.js'
import type { GatewayMetrics } from '../ops/gateway-metrics.js'
import { RedisStore } from './redis-store.js'
import type { SessionStore } from './session-store.js'
import { SqliteStore } from './sqlite-store.js'

/**
 * The store the config names: Redis when `redis.url` is set, else the embedded
 * SQLite file `store.file` (resolved against the config file by load-config).
 * Throws StoreOpenError, naming the file, when that file cannot be used.
 */
export function openStore (config: GatewayConfig, log: FastifyBaseLogger, metrics?: GatewayMetrics): SessionStore {
  if (config.redis.url === '') return new SqliteStore({ file: config.store.file })
  return new RedisStore({
    url: config.redis.url,
    keyPrefix: config.redis.keyPrefix,
    connectTimeoutMs: parseDuration(config.redis.connectTimeout),
    commandTimeoutMs: parseDuration(config.redis.commandTimeout),
    log,
    ...(metrics === undefined ? {} : { onCommandError: () => metrics.redisError('store') })
  })
}
