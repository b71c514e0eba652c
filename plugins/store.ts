import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { LoadedConfig } from '../src/config/load-config.js'
import { parseDuration } from '../src/config/duration.js'
import { DenylistMirror } from '../src/sessions/denylist-mirror.js'
import { openStore } from '../src/sessions/open-store.js'
import { denyHorizons, Revoker } from '../src/sessions/revoker.js'
import type { SessionStore } from '../src/sessions/session-store.js'

declare module 'fastify' {
  interface FastifyInstance {
    store: SessionStore
    denylist: DenylistMirror
    /** Ends sessions and denies access tokens the same way from every entry point. */
    revoker: Revoker
  }
}

export interface StorePluginOptions {
  loaded: LoadedConfig
  /** Tests and hot reload hand in a store they own; otherwise one is opened from the config's Redis or store.file. */
  store?: SessionStore
}

async function storePlugin (fastify: FastifyInstance, opts: StorePluginOptions): Promise<void> {
  const { config } = opts.loaded
  const owned = opts.store === undefined
  const store = opts.store ?? openStore(opts.loaded, fastify.log, fastify.metrics)
  const denylist = new DenylistMirror(store, { maxStalenessMs: parseDuration(config.denylist.maxStaleness), log: fastify.log })
  fastify.decorate('store', store)
  fastify.decorate('denylist', denylist)
  fastify.decorate('revoker', new Revoker(store, denylist, denyHorizons(config.tokens, parseDuration)))
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
  if (store.kind === 'sqlite' && config.store.file === ':memory:') fastify.log.warn('store.file is ":memory:": sessions and revocations are lost when the gateway stops')
}

export default fp(storePlugin, { name: 'tokengate-store', fastify: '5.x', dependencies: ['tokengate-metrics'] })
