import fp from 'fastify-plugin'
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify'
import { TokenRejected, type AccessClaims } from '../src/tokens/access-token.js'
import { bearerToken, rejectionError } from '../src/tokens/bearer-token.js'
import {
  ERR_INSUFFICIENT_SCOPE, ERR_STORE_UNAVAILABLE, ERR_TOKEN_INVALID, ERR_TOKEN_MISSING, ERR_TOKEN_REVOKED
} from '../src/errors.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** The verified access-token claims, or null when the request carried none (or the route ignores them). */
    identity: AccessClaims | null
  }
  interface FastifyInstance {
    /** A hook that authenticates and authorizes a request under `policy`; compile once per route. */
    authenticateWith (policy: AuthPolicy): AuthenticateHook
  }
}

/**
 * An onRequest hook (callback style: it never waits, so it makes no promise
 * per request) and the same check as a plain function that throws, for hooks
 * that compose it with other steps.
 */
export type AuthenticateHook = onRequestHookHandler & {
  /** Sets `request.identity` or throws the error the client gets. */
  check (request: FastifyRequest): void
}

export interface AuthPolicy {
  mode: 'required' | 'optional'
  /** all are required */
  scopes: readonly string[]
  /** any one suffices */
  roles: readonly string[]
  /** issuers whose tokens are accepted; default: the gateway's own only */
  issuers?: readonly string[]
}

async function authenticatePlugin (fastify: FastifyInstance): Promise<void> {
  fastify.decorateRequest('identity', null)

  fastify.decorate('authenticateWith', function authenticateWith (policy: AuthPolicy): AuthenticateHook {
    const scopes = [...policy.scopes]
    const roles = [...policy.roles]
    const authorize = scopes.length > 0 || roles.length > 0
    const issuers: ReadonlySet<string> = new Set(policy.issuers ?? [fastify.accessTokens.issuer])
    const metrics = fastify.metrics
    // Claims are cached and frozen per token (src/tokens/access-token.ts): this
    // route's verdict on a token is worked out on its first request only.
    const verdicts = new WeakMap<AccessClaims, boolean>()
    const allows = (claims: AccessClaims): boolean => {
      let verdict = verdicts.get(claims)
      if (verdict === undefined) {
        const granted = claims.scope === '' ? [] : claims.scope.split(' ')
        verdict = scopes.every((s) => granted.includes(s)) && (roles.length === 0 || roles.some((r) => claims.roles.includes(r)))
        verdicts.set(claims, verdict)
      }
      return verdict
    }

    function check (request: FastifyRequest): void {
      const token = bearerToken(request)
      if (token === undefined) {
        if (policy.mode === 'required') {
          metrics.auth('missing_token')
          throw new ERR_TOKEN_MISSING()
        }
        return
      }
      if (token === null) {
        metrics.auth('invalid_token')
        throw new ERR_TOKEN_INVALID()
      }

      const now = Date.now()
      let claims: AccessClaims
      try {
        claims = fastify.accessTokens.verify(token, now, request)
      } catch (err) {
        if (err instanceof TokenRejected) {
          request.log.info({ reason: err.reason, detail: err.message }, 'access token rejected')
          metrics.auth(err.reason === 'expired' ? 'expired_token' : 'invalid_token')
          throw rejectionError(err)
        }
        throw err
      }

      // A valid token from an issuer this route does not trust is no token here.
      if (!issuers.has(claims.iss)) {
        metrics.auth('invalid_token')
        throw new ERR_TOKEN_INVALID()
      }

      // A mirror that may have missed revocations cannot vouch for a token.
      if (!fastify.denylist.isTrusted(now)) throw new ERR_STORE_UNAVAILABLE()
      if (fastify.denylist.isRevoked(claims, now)) {
        metrics.auth('revoked')
        throw new ERR_TOKEN_REVOKED()
      }

      if (authorize && !allows(claims)) {
        metrics.auth('insufficient_scope')
        throw new ERR_INSUFFICIENT_SCOPE()
      }
      request.identity = claims
    }

    const hook: onRequestHookHandler = function authenticate (request, _reply, done) {
      try {
        check(request)
      } catch (err) {
        done(err as Error)
        return
      }
      done()
    }
    return Object.assign(hook, { check })
  })
}

export default fp(authenticatePlugin, {
  name: 'tokengate-authenticate',
  fastify: '5.x',
  dependencies: ['tokengate-metrics', 'tokengate-tokens', 'tokengate-store']
})
