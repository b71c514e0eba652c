import type { FastifyBaseLogger } from 'fastify'
import type { GatewayConfig } from '../config/schema.js'
import { parseDuration } from '../config/duration.js'
import type { GatewayMetrics } from '../ops/gateway-metrics.js'
import { heartbeatIntervalFor } from './denylist-mirror.js'
import { MemoryStore } from './memory-store.js'
import { RedisStore } from './redis-store.js'
import type { SessionStore } from './session-store.js'

/** The store the config names: Redis when `redis.url` is set, else in process memory. */
export function openStore (config: GatewayConfig, log: FastifyBaseLogger, metrics?: GatewayMetrics): SessionStore {
  const heartbeatIntervalMs = heartbeatIntervalFor(parseDuration(config.denylist.maxStaleness))
  if (config.redis.url === '') return new MemoryStore({ heartbeatIntervalMs })
  return new RedisStore({
    url: config.redis.url,
    keyPrefix: config.redis.keyPrefix,
    connectTimeoutMs: parseDuration(config.redis.connectTimeout),
    commandTimeoutMs: parseDuration(config.redis.commandTimeout),
    heartbeatIntervalMs,
    log,
    ...(metrics === undefined ? {} : { onCommandError: () => metrics.redisError('store') })
  })
}
