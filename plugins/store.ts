import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { GatewayConfig } from '../src/config/schema.js'
import { parseDuration } from '../src/duration.js'
import { DenylistMirror } from '../src/denylist-mirror.js'
import { MemoryStore } from '../src/store/memory-store.js'
import { RedisStore } from '../src/store/redis-store.js'
import type { SessionStore } from '../src/store/session-store.js'
import type { GatewayMetrics } from '../src/gateway-metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    store: SessionStore
    denylist: DenylistMirror
  }
}

export interface StorePluginOptions {
  config: GatewayConfig
  /** Tests and hot reload hand in a store they own; otherwise one is opened from `redis.url`. */
  store?: SessionStore
}

export function openStore (config: GatewayConfig, log: FastifyInstance['log'], metrics?: GatewayMetrics): SessionStore {
  if (config.redis.url === '') return new MemoryStore()
  return new RedisStore({
    url: config.redis.url,
    keyPrefix: config.redis.keyPrefix,
    connectTimeoutMs: parseDuration(config.redis.connectTimeout),
    commandTimeoutMs: parseDuration(config.redis.commandTimeout),
    log,
    ...(metrics === undefined ? {} : { onCommandError: () => metrics.redisError('store') })
  })
}

async function storePlugin (fastify: FastifyInstance, opts: StorePluginOptions): Promise<void> {
  const owned = opts.store === undefined
  const store = opts.store ?? openStore(opts.config, fastify.log, fastify.metrics)
  const denylist = new DenylistMirror(store, { maxStalenessMs: parseDuration(opts.config.denylist.maxStaleness), log: fastify.log })
  fastify.decorate('store', store)
  fastify.decorate('denylist', denylist)
  fastify.metrics.trackDenylist(() => denylist.size)
  fastify.addHook('onReady', async () => {
    // A store that is down at start is not fatal: protected routes answer 503
    // until the mirror has loaded, and /readyz says why.
    try {
      await denylist.start()
    } catch (err) {
      fastify.log.error({ err }, 'denylist could not be loaded; protected routes answer 503 until it is')
    }
  })
  fastify.addHook('onClose', async () => {
    denylist.stop()
    if (owned) await store.close()
  })
  if (store.kind === 'memory') fastify.log.info('state is kept in process memory: run a single instance, or configure redis.url')
}

export default fp(storePlugin, { name: 'tokengate-store', fastify: '5.x', dependencies: ['tokengate-metrics'] })
