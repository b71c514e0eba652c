import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import formbody from '@fastify/formbody'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { LoadedConfig } from '../src/config/load-config.js'
import { parseDuration } from '../src/config/duration.js'
import {
  ERR_FORBIDDEN, ERR_INVALID_CLIENT, ERR_INVALID_SCOPE, ERR_OAUTH_INVALID_REQUEST, ERR_RATE_LIMITED, ERR_STORE_UNAVAILABLE, ERR_UNSUPPORTED_GRANT_TYPE
} from '../src/errors.js'
import { clientAddress } from '../src/limits/client-address.js'
import { checkedAttempt } from '../src/limits/login-throttle.js'
import { grantedScopes, MachineClients, MalformedClientCredentials, presentedClient, type ClientConfig } from '../src/oauth/machine-clients.js'
import { discoveryDocument } from '../src/oauth/discovery.js'
import { generateRefreshToken, hashRefreshToken, isWellFormedRefreshToken } from '../src/tokens/refresh-token.js'
import type { AccessClaims } from '../src/tokens/access-token.js'

// The standard OAuth endpoints for machine clients: the client-credentials
// grant (RFC 6749 §4.4), introspection (RFC 7662), revocation (RFC 7009) and
// the discovery document (RFC 8414). Errors keep our body
// {statusCode, code, error, message}: `error` is the OAuth error name, which
// is all RFC 6749 §5.2 requires (error_description is optional).

export interface OAuthRoutesOptions {
  loaded: LoadedConfig
}

type FormBody = Record<string, unknown>

// No body schema on these routes: RFC 6749 §3.2 wants a repeated parameter
// (an array after form parsing) refused as invalid_request, which a schema
// failure would answer as our generic 400. `formOf` narrows what
// @fastify/formbody parsed; anything else (no body, JSON array) is empty.
function formOf (body: unknown): FormBody {
  return isForm(body) ? body : {}
}

function isForm (body: unknown): body is FormBody {
  return typeof body === 'object' && body !== null && !Array.isArray(body)
}

/** One form parameter, present at most once (RFC 6749 §3.2: repeated parameters are invalid). */
function param (body: FormBody, name: string): string | undefined {
  const value = body[name]
  if (value === undefined) return undefined
  if (typeof value !== 'string') throw new ERR_OAUTH_INVALID_REQUEST(`${name} must be given once`)
  return value
}

async function oauthRoutesPlugin (fastify: FastifyInstance, { loaded }: OAuthRoutesOptions): Promise<void> {
  const { config } = loaded
  const clients = new MachineClients(config.auth.clients)
  const accessTtlMs = parseDuration(config.tokens.accessTtl)

  /** Authenticates the calling client, throttled like a login per client id and address. */
  const authenticateClient = async (request: FastifyRequest, reply: FastifyReply): Promise<ClientConfig> => {
    const body = formOf(request.body)
    let presented
    try {
      presented = presentedClient(request.headers.authorization, body)
    } catch (err) {
      if (err instanceof MalformedClientCredentials) throw new ERR_OAUTH_INVALID_REQUEST(err.message)
      throw err
    }
    if (presented === null) {
      reply.header('www-authenticate', 'Basic realm="tokengate"')
      throw new ERR_INVALID_CLIENT()
    }
    const attempt = { account: `client:${presented.id}`, address: clientAddress(request) }
    const verdict = await fastify.loginThrottle.take(attempt, Date.now())
    if (!verdict.allowed) {
      const seconds = Math.max(1, Math.ceil(verdict.retryAfterMs / 1000))
      request.log.warn({ event: 'client_auth_throttled' }, 'client authentication throttled')
      reply.header('retry-after', seconds)
      throw new ERR_RATE_LIMITED(`${seconds}s`)
    }
    const client = await checkedAttempt(fastify.loginThrottle, attempt, () => clients.authenticate(presented))
    if (client === null) {
      request.log.info({ event: 'client_auth_failed', client_id: presented.id.slice(0, 128) }, 'client authentication failed')
      // RFC 6749 §5.2: a 401 names the scheme the client tried, Basic for Basic.
      if (presented.method === 'client_secret_basic') reply.header('www-authenticate', 'Basic realm="tokengate"')
      throw new ERR_INVALID_CLIENT()
    }
    await fastify.loginThrottle.giveBack(attempt, Date.now())
    return client
  }

  /**
   * The claims of one of our live access tokens; null for anything expired,
   * revoked, malformed or foreign, a trusted issuer's token included: this
   * gateway did not issue it, so it is not active here (RFC 7662 §2.2) and
   * revoking it is a no-op answered 200 (RFC 7009 §2.2).
   */
  const liveClaims = (token: string, request: FastifyRequest): AccessClaims | null => {
    const now = Date.now()
    let claims: AccessClaims
    try {
      claims = fastify.accessTokens.verifyOwn(token, now, request)
    } catch {
      return null
    }
    // Fail closed: a mirror that cannot be trusted cannot say a token is active.
    if (!fastify.denylist.isTrusted(now)) throw new ERR_STORE_UNAVAILABLE()
    return fastify.denylist.isRevoked(claims, now) ? null : claims
  }

  await fastify.register(async function oauthEndpoints (oauth) {
    // Form bodies only here: the rest of the gateway speaks JSON.
    await oauth.register(formbody, { bodyLimit: 8192 })
    oauth.addHook('onSend', async (_request, reply, payload) => {
      // Tokens and their status must not be cached (RFC 6749 §5.1); discovery sets its own.
      if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
      return payload
    })

    oauth.post('/oauth/token', async (request, reply) => {
      const body = formOf(request.body)
      const grantType = param(body, 'grant_type')
      if (grantType === undefined) throw new ERR_OAUTH_INVALID_REQUEST('grant_type is required')
      if (grantType !== 'client_credentials') throw new ERR_UNSUPPORTED_GRANT_TYPE()
      const requested = param(body, 'scope')
      const client = await authenticateClient(request, reply)
      const scopes = grantedScopes(client, requested)
      if (scopes === null) throw new ERR_INVALID_SCOPE()
      // Each token is a session of its own in the store, with a refresh hash
      // nobody holds: POST /admin/revoke {sub} then ends it like a user's
      // session, even in the second it was issued (the sub entry has
      // one-second resolution), and a store that is down refuses here (503).
      const sid = `cc-${randomBytes(12).toString('base64url')}`
      const ttlMs = client.accessTtl === undefined ? accessTtlMs : parseDuration(client.accessTtl)
      const now = Date.now()
      await fastify.store.createSession({
        sid,
        sub: client.id,
        refreshHash: hashRefreshToken(generateRefreshToken(sid)),
        now,
        expiresAt: now + ttlMs,
        idleTimeoutMs: ttlMs,
        userAgent: String(request.headers['user-agent'] ?? '').slice(0, 256),
        address: request.ip
      })
      const access = fastify.accessTokens.issue({
        sub: client.id,
        sid,
        username: client.id,
        roles: client.roles,
        scopes,
        clientId: client.id,
        ttlMs
      }, now)
      request.log.info({ event: 'client_token', sub: client.id, sid }, 'client token issued')
      return { access_token: access.token, token_type: 'Bearer', expires_in: access.expiresIn, scope: scopes.join(' ') }
    })

    oauth.post('/oauth/introspect', async (request, reply) => {
      const client = await authenticateClient(request, reply)
      if (!client.introspect) throw new ERR_FORBIDDEN()
      const token = param(formOf(request.body), 'token')
      if (token === undefined) throw new ERR_OAUTH_INVALID_REQUEST('token is required')
      const claims = liveClaims(token, request)
      if (claims === null) return { active: false }
      // What a resource server needs to decide, nothing more: no email, name or session id.
      const clientId = (claims as AccessClaims & { client_id?: unknown }).client_id
      return {
        active: true,
        scope: claims.scope,
        ...(typeof clientId === 'string' ? { client_id: clientId } : {}),
        username: claims.username,
        token_type: 'Bearer',
        exp: claims.exp,
        iat: claims.iat,
        sub: claims.sub,
        aud: claims.aud,
        iss: claims.iss,
        jti: claims.jti,
        roles: claims.roles
      }
    })

    oauth.post('/oauth/revoke', async (request, reply) => {
      const client = await authenticateClient(request, reply)
      const token = param(formOf(request.body), 'token')
      if (token === undefined) throw new ERR_OAUTH_INVALID_REQUEST('token is required')
      // RFC 7009 §2.2: an unknown or already invalid token is answered 200 too.
      if (isWellFormedRefreshToken(token)) {
        // Only a trusted backend (introspect: true) may end a user's session.
        if (client.introspect) {
          const session = await fastify.store.findByRefresh(hashRefreshToken(token), Date.now())
          if (session !== null) {
            await fastify.revoker.endSession(session.sid)
            request.log.info({ event: 'oauth_revoke', by: client.id, sid: session.sid }, 'session revoked by a client')
          }
        }
        return reply.code(200).send()
      }
      const claims = liveClaims(token, request)
      const own = claims !== null && (claims as AccessClaims & { client_id?: unknown }).client_id === client.id
      if (claims !== null && (own || client.introspect)) {
        await fastify.revoker.revokeJti(claims.jti)
        request.log.info({ event: 'oauth_revoke', by: client.id, jti: claims.jti }, 'access token revoked by a client')
      }
      return reply.code(200).send()
    })

    const metadata = (request: FastifyRequest): Record<string, unknown> =>
      discoveryDocument(config, config.server.publicUrl ?? `${request.protocol}://${request.host}`)
    oauth.get('/.well-known/oauth-authorization-server', async (request, reply) => {
      return reply.header('cache-control', 'public, max-age=300').send(metadata(request))
    })
    oauth.get('/.well-known/openid-configuration', async (request, reply) => {
      return reply.header('cache-control', 'public, max-age=300').send(metadata(request))
    })
  })
}

export default fp(oauthRoutesPlugin, {
  name: 'tokengate-oauth-routes',
  fastify: '5.x',
  dependencies: ['tokengate-tokens', 'tokengate-store', 'tokengate-rate-limit']
})
