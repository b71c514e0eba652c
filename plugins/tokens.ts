import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { AccessTokens } from '../src/tokens/access-token.js'
import { TrustedIssuers } from '../src/tokens/trusted-issuers.js'
import type { LoadedConfig } from '../src/config/load-config.js'
import { parseDuration } from '../src/config/duration.js'

declare module 'fastify' {
  interface FastifyInstance {
    accessTokens: AccessTokens
    /** Outside identity providers (tokens.trustedIssuers), for readiness and metrics. */
    trustedIssuers: TrustedIssuers
  }
}

export interface TokensPluginOptions {
  loaded: LoadedConfig
}

async function tokensPlugin (fastify: FastifyInstance, { loaded }: TokensPluginOptions): Promise<void> {
  const { tokens } = loaded.config
  const external = new TrustedIssuers(tokens.trustedIssuers, { clockSkewMs: parseDuration(tokens.clockSkew) }, parseDuration)
  fastify.decorate('trustedIssuers', external)
  // Keys are fetched before the gateway listens; an IdP that is down leaves
  // its issuer not ready (401 for its tokens, /readyz 503), never a crash.
  await external.start()
  fastify.addHook('onClose', async () => { external.close() })
  fastify.decorate('accessTokens', new AccessTokens(loaded.keys, {
    issuer: tokens.issuer,
    audience: tokens.audience,
    accessTtlMs: parseDuration(tokens.accessTtl),
    clockSkewMs: parseDuration(tokens.clockSkew)
  }, external))

  // Serialised once: the key set only changes with the config.
  const jwks = JSON.stringify({ keys: loaded.keys.verifying.flatMap((k) => k.jwk === undefined ? [] : [k.jwk]) })
  fastify.get('/.well-known/jwks.json', async (_request, reply) => {
    return reply.header('cache-control', 'public, max-age=300').type('application/json').send(jwks)
  })
}

export default fp(tokensPlugin, { name: 'tokengate-tokens', fastify: '5.x' })
