import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { ACCESS_TOKEN_TYP, AccessTokens, verifierOptions, type JwtLayer } from '../src/tokens/access-token.js'
import { TrustedIssuers } from '../src/tokens/trusted-issuers.js'
import type { LoadedConfig } from '../src/config/load-config.js'
import { parseDuration } from '../src/config/duration.js'

declare module 'fastify' {
  interface FastifyInstance {
    accessTokens: AccessTokens
    /** Outside identity providers (tokens.trustedIssuers), for readiness and metrics. */
    trustedIssuers: TrustedIssuers
  }
  interface FastifyRequest {
    /** The token being verified, for @fastify/jwt's extractToken; '' otherwise. */
    [kToken]: string
  }
}

/** @fastify/jwt's request verifier as its code reads (index.js requestVerify); its types do not list (undefined, callback). */
type RequestVerify = (this: FastifyRequest, options: undefined, next: (err: Error | null, payload: unknown) => void) => void

/** Where jwtVerify finds the token: AccessTokens may verify one that is not in the Authorization header (introspection, logout). */
const kToken = Symbol('tokengate.verifyingToken')

export interface TokensPluginOptions {
  loaded: LoadedConfig
}

async function tokensPlugin (fastify: FastifyInstance, { loaded }: TokensPluginOptions): Promise<void> {
  const { tokens } = loaded.config
  const { keys } = loaded
  const clockSkewMs = parseDuration(tokens.clockSkew)
  const external = new TrustedIssuers(tokens.trustedIssuers, { clockSkewMs }, parseDuration)
  fastify.decorate('trustedIssuers', external)
  for (const issuer of external.byIssuer.values()) {
    issuer.observer = fastify.metrics.issuer(issuer.issuer)
    issuer.observer.trackKeys(() => issuer.keyCount)
  }
  // Keys are fetched before the gateway listens; an IdP that is down leaves
  // its issuer not ready (401 for its tokens, /readyz 503), never a crash.
  await external.start()
  fastify.addHook('onClose', async () => { external.close() })
  const accessTokens = new AccessTokens(keys, {
    issuer: tokens.issuer,
    audience: tokens.audience,
    accessTtlMs: parseDuration(tokens.accessTtl),
    clockSkewMs
  }, external)

  // @fastify/jwt, registered once, signs and verifies. Its request verifier
  // is the one that keeps a verifier per key: the secret callback below
  // returns a key string (ours or a trusted issuer's, picked by issuer and
  // kid), and @fastify/jwt caches one fast-jwt verifier per such string with
  // the `verify` options here (what fast-jwt checks: algorithms, exp/nbf with
  // the skew, required claims). Our checks and our verified-token cache sit
  // in front of it in AccessTokens, so a cache hit never reaches it.
  fastify.decorateRequest(kToken, '')
  await fastify.register(fastifyJwt, {
    secret: {
      private: keys.signing.key,
      // Synchronous (trusted issuers' keys are fetched in the background), so
      // the whole jwtVerify runs before it returns (its waterfall calls back
      // in the same turn when every step does).
      public: (_request: FastifyRequest, decoded: unknown, cb: (err: Error | null, secret: string | undefined) => void) => {
        const { header, payload } = decoded as { header: Record<string, unknown>, payload: Record<string, unknown> }
        let key: string
        try {
          key = accessTokens.keyFor(header, payload)
        } catch (err) {
          cb(err as Error, undefined)
          return
        }
        cb(null, key)
      }
    },
    sign: { algorithm: keys.algorithm, header: { alg: keys.algorithm, typ: ACCESS_TOKEN_TYP }, ...(keys.signing.kid === undefined ? {} : { kid: keys.signing.kid }) },
    decode: { complete: true },
    verify: { ...verifierOptions(accessTokens.algorithms, clockSkewMs), extractToken: (request: FastifyRequest) => request[kToken] }
  })

  const layer: JwtLayer = {
    sign (payload, typ = ACCESS_TOKEN_TYP) {
      // Access tokens use @fastify/jwt's global signer; another typ (the
      // identity assertion) needs per-call options, for which it builds a
      // signer each call: assertions are made once per token and route, so
      // that is paid per assertion, never per request.
      return typ === ACCESS_TOKEN_TYP ? fastify.jwt.sign(payload) : fastify.jwt.sign(payload, { header: { alg: keys.algorithm, typ } })
    },
    verify (token, context) {
      if (!isRequest(context)) return outsideRequest.verify(token, undefined)
      context[kToken] = token
      let result: { err: Error | null, payload?: unknown } | undefined
      // (undefined, callback), not (callback): with options absent it uses
      // its global options and its per-key verifier cache; called with the
      // callback alone it takes the callback for options and builds a new
      // fast-jwt verifier for every token.
      ;(context.jwtVerify as unknown as RequestVerify).call(context, undefined, (err, payload) => { result = { err, payload } })
      context[kToken] = ''
      // Every step above is synchronous; a result still missing would mean
      // @fastify/jwt changed that, and a token we could not check is refused.
      if (result === undefined) throw new Error('@fastify/jwt verification did not complete synchronously')
      if (result.err !== null) throw result.err
      return result.payload
    }
  }
  // @fastify/jwt's verifier with a key callback needs a request; verifying
  // without one (tests and tools calling app.accessTokens.verify directly)
  // keeps AccessTokens' own fast-jwt layer, with the same options.
  const outsideRequest = accessTokens.currentLayer
  accessTokens.useLayer(layer)
  fastify.decorate('accessTokens', accessTokens)

  // Serialised once: the key set only changes with the config.
  const jwks = JSON.stringify({ keys: keys.verifying.flatMap((k) => k.jwk === undefined ? [] : [k.jwk]) })
  fastify.get('/.well-known/jwks.json', async (_request, reply) => {
    return reply.header('cache-control', 'public, max-age=300').type('application/json').send(jwks)
  })
}

function isRequest (context: unknown): context is FastifyRequest {
  return context !== undefined && context !== null && typeof (context as FastifyRequest).jwtVerify === 'function'
}

export default fp(tokensPlugin, { name: 'tokengate-tokens', fastify: '5.x', dependencies: ['tokengate-metrics'] })
