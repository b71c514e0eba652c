import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { LoadedConfig } from '../src/config/load-config.js'
import { parseDuration } from '../src/config/duration.js'
import { FileUserSource } from '../src/users/file-user-source.js'
import { PostgresUserSource } from '../src/users/postgres-user-source.js'
import type { UserSource } from '../src/users/user-source.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Where logins are checked: the users file or PostgreSQL (`auth.users`). */
    userSource: UserSource
  }
}

export interface UserSourcePluginOptions {
  loaded: LoadedConfig
}

async function userSourcePlugin (fastify: FastifyInstance, { loaded }: UserSourcePluginOptions): Promise<void> {
  // The loader has checked that exactly one of file / postgres is set.
  const pgConfig = loaded.config.auth.users.postgres
  const source: UserSource = pgConfig !== undefined
    ? new PostgresUserSource({
      url: pgConfig.url,
      query: pgConfig.query,
      idQuery: pgConfig.idQuery,
      rehashQuery: pgConfig.rehashQuery,
      passwordUpdateQuery: pgConfig.passwordUpdateQuery,
      connectTimeoutMs: parseDuration(pgConfig.connectTimeout),
      statementTimeoutMs: parseDuration(pgConfig.statementTimeout),
      log: fastify.log
    })
    : new FileUserSource(loaded.users)
  fastify.decorate('userSource', source)
  fastify.addHook('onClose', async () => { await source.close() })
}

export default fp(userSourcePlugin, { name: 'tokengate-user-source', fastify: '5.x' })
