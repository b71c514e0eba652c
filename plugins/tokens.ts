import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { AccessTokens } from '../src/tokens/access-token.js'
import type { LoadedConfig } from '../src/config/load-config.js'
import { parseDuration } from '../src/config/duration.js'

declare module 'fastify' {
  interface FastifyInstance {
    accessTokens: AccessTokens
  }
}

export interface TokensPluginOptions {
  loaded: LoadedConfig
}

async function tokensPlugin (fastify: FastifyInstance, { loaded }: TokensPluginOptions): Promise<void> {
  const { tokens } = loaded.config
  fastify.decorate('accessTokens', new AccessTokens(loaded.keys, {
    issuer: tokens.issuer,
    audience: tokens.audience,
    accessTtlMs: parseDuration(tokens.accessTtl),
    clockSkewMs: parseDuration(tokens.clockSkew)
  }))

  // Serialised once: the key set only changes with the config.
  const jwks = JSON.stringify({ keys: loaded.keys.verifying.flatMap((k) => k.jwk === undefined ? [] : [k.jwk]) })
  fastify.get('/.well-known/jwks.json', async (_request, reply) => {
    return reply.header('cache-control', 'public, max-age=300').type('application/json').send(jwks)
  })
}

export default fp(tokensPlugin, { name: 'tokengate-tokens', fastify: '5.x' })
