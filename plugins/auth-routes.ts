import { randomBytes } from 'node:crypto'
import fp from 'fastify-plugin'
import '@fastify/cookie'
import { Type, type Static } from '@sinclair/typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { LoadedConfig } from '../src/config/load-config.js'
import { parseDuration } from '../src/config/duration.js'
import { TokenRejected } from '../src/tokens/access-token.js'
import {
  ERR_BAD_REQUEST, ERR_INVALID_GRANT, ERR_LOGIN_FAILED, ERR_RATE_LIMITED, ERR_TOKEN_INVALID, ERR_TOKEN_MISSING
} from '../src/errors.js'
import { MAX_PASSWORD_BYTES } from '../src/users/password.js'
import { refreshCookie } from '../src/tokens/refresh-cookie.js'
import { generateRefreshToken, hashRefreshToken, isWellFormedRefreshToken, openSuccessor, sealSuccessor, sidOfRefresh } from '../src/tokens/refresh-token.js'
import type { SessionInfo } from '../src/sessions/session-store.js'
import type { SourceUser } from '../src/users/user-source.js'
import { bearerToken, rejectionError } from '../src/tokens/bearer-token.js'
import { clientAddress } from '../src/limits/client-address.js'
import { checkedAttempt } from '../src/limits/login-throttle.js'
import { checkBrowserOrigin, trustedBrowserOrigins } from '../src/tokens/browser-origins.js'

// The token lifecycle a client follows: log in, refresh (rotating the refresh
// token, detecting reuse), log out. Browsers keep the refresh token in an
// HTTP-only cookie; other clients ask for it in the body.

export interface AuthRoutesOptions {
  loaded: LoadedConfig
}

const Transport = Type.Union([Type.Literal('cookie'), Type.Literal('body')])

const LoginBody = Type.Object({
  username: Type.String({ minLength: 1, maxLength: 128 }),
  password: Type.String({ minLength: 1, maxLength: MAX_PASSWORD_BYTES }),
  transport: Type.Optional(Transport)
}, { additionalProperties: false })

const RefreshBody = Type.Object({
  refresh_token: Type.Optional(Type.String({ maxLength: 128 }))
}, { additionalProperties: false })

const TokenResponse = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer(),
  refresh_token: Type.Optional(Type.String())
})

/**
 * A browser's cookie refresh or logout is a POST with no body at all. Fastify
 * validates an absent body against the schema too (`Type.Optional` does not
 * change that), so an absent body is validated as the empty object it means.
 */
async function bodyOptional (request: FastifyRequest): Promise<void> {
  if (request.body === undefined || request.body === null) request.body = {}
}

/** Credentials in a URL end up in access logs and browser history; refuse them outright. */
const CREDENTIAL_QUERY = /(^|[?&])(refresh_token|access_token|password|token)=/i

async function authRoutesPlugin (fastify: FastifyInstance, { loaded }: AuthRoutesOptions): Promise<void> {
  const { config } = loaded
  const cookie = refreshCookie(config.auth.cookie)
  const refreshTtlMs = parseDuration(config.tokens.refreshTtl)
  const idleTimeoutMs = parseDuration(config.tokens.idleTimeout)
  const graceMs = parseDuration(config.tokens.reuseGrace)
  const trustedOrigins = trustedBrowserOrigins(config)
  const revoker = fastify.revoker
  // A session revoked for reuse stays on the denylist as long as any other sid entry.
  const denyHorizonMs = revoker.horizons.sessionMs

  const issueTokens = (reply: FastifyReply, user: SourceUser, sid: string, refreshToken: string, transport: 'cookie' | 'body', sessionExpiresAt: number): Static<typeof TokenResponse> => {
    const access = fastify.accessTokens.issue({
      sub: user.id, sid, username: user.username, email: user.email, name: user.name, roles: user.roles, scopes: user.scopes
    })
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
    const body: Static<typeof TokenResponse> = { access_token: access.token, token_type: 'Bearer', expires_in: access.expiresIn }
    if (transport === 'body') {
      body.refresh_token = refreshToken
    } else {
      reply.setCookie(cookie.name, refreshToken, { ...cookie.options, maxAge: Math.max(0, Math.floor((sessionExpiresAt - Date.now()) / 1000)) })
    }
    return body
  }

  const clearCookie = (reply: FastifyReply): void => {
    reply.clearCookie(cookie.name, cookie.options)
  }

  /** The refresh token a request carries, and whether it came from the cookie (which needs the CSRF check). */
  const presentedRefresh = (request: FastifyRequest, body: Static<typeof RefreshBody>): { token: string, fromCookie: boolean } | null => {
    if (body.refresh_token !== undefined) return { token: body.refresh_token, fromCookie: false }
    const fromCookie = request.cookies[cookie.name]
    return fromCookie === undefined ? null : { token: fromCookie, fromCookie: true }
  }

  /**
   * The session a successor token must carry: the presented token's. A token
   * from before tokens carried their sid is looked up (only a store that
   * still holds it, the embedded one, finds it); when it is not current, any
   * sid does: the rotation can then only answer grace (the current token,
   * sealed), reuse or invalid, and plants nothing.
   */
  const successorSid = async (presented: string, now: number): Promise<string> =>
    sidOfRefresh(presented) ??
    (await fastify.store.findByRefresh(hashRefreshToken(presented), now))?.sid ??
    randomBytes(16).toString('base64url')

  const userFor = async (session: SessionInfo): Promise<SourceUser | undefined> => await fastify.userSource.findById(session.sub) ?? undefined

  // The endpoints in a scope of their own, so the credential-query check covers them and nothing else.
  await fastify.register(async function authEndpoints (scope) {
    // The pattern for every route plugin: take the instance with the TypeBox
    // type provider, and each handler's request.body/params/query and reply
    // are typed from the route's own schema (no casts).
    const auth = scope.withTypeProvider<TypeBoxTypeProvider>()
    auth.addHook('onRequest', async (request) => {
      const query = request.url.indexOf('?')
      if (query !== -1 && CREDENTIAL_QUERY.test(request.url.slice(query))) throw new ERR_BAD_REQUEST()
    })
  auth.post('/auth/login', {
    schema: { body: LoginBody, response: { 200: TokenResponse } }
  }, async (request, reply) => {
    const { username, password, transport } = request.body
    const account = username.toLowerCase()
    // Throttled before any hashing: a spent budget costs the gateway nothing.
    // A Redis that cannot count is a 503 (StoreUnavailableError), never a free pass.
    const attempt = { account, address: clientAddress(request) }
    const verdict = await fastify.loginThrottle.take(attempt, Date.now())
    if (!verdict.allowed) {
      const seconds = Math.max(1, Math.ceil(verdict.retryAfterMs / 1000))
      request.log.warn({ event: 'login_throttled' }, 'login throttled')
      fastify.metrics.auth('rate_limited')
      reply.header('retry-after', seconds)
      throw new ERR_RATE_LIMITED(`${seconds}s`)
    }
    if (Buffer.byteLength(password, 'utf8') > MAX_PASSWORD_BYTES) throw new ERR_LOGIN_FAILED()
    // The source costs unknown and disabled users the same hashing work as a wrong password.
    const user = await checkedAttempt(fastify.loginThrottle, attempt, () => fastify.userSource.authenticate(username, password))
    if (user === null) {
      request.log.info({ event: 'login_failed' }, 'login failed')
      fastify.metrics.auth('login_failed')
      throw new ERR_LOGIN_FAILED()
    }
    await fastify.loginThrottle.giveBack(attempt, Date.now())
    const now = Date.now()
    const sid = randomBytes(16).toString('base64url')
    const refreshToken = generateRefreshToken(sid)
    const expiresAt = now + refreshTtlMs
    await fastify.store.createSession({
      sid,
      sub: user.id,
      refreshHash: hashRefreshToken(refreshToken),
      now,
      expiresAt,
      idleTimeoutMs,
      userAgent: String(request.headers['user-agent'] ?? '').slice(0, 256),
      address: request.ip
    })
    request.log.info({ event: 'login', sub: user.id, sid }, 'login')
    fastify.metrics.auth('login')
    return issueTokens(reply, user, sid, refreshToken, transport ?? 'cookie', expiresAt)
  })

  auth.post('/auth/refresh', {
    preValidation: bodyOptional,
    schema: { body: RefreshBody, response: { 200: TokenResponse } }
  }, async (request, reply) => {
    const presented = presentedRefresh(request, request.body)
    if (presented === null) {
      fastify.metrics.auth('refresh_failed')
      throw new ERR_INVALID_GRANT()
    }
    if (presented.fromCookie) checkBrowserOrigin(request, trustedOrigins)
    if (!isWellFormedRefreshToken(presented.token)) {
      fastify.metrics.auth('refresh_failed')
      if (presented.fromCookie) clearCookie(reply)
      throw new ERR_INVALID_GRANT()
    }
    const now = Date.now()
    // Asked before rotating: a user source found down after the rotation would
    // leave the client holding a spent token (reuse, once the grace is over).
    await fastify.userSource.ping()
    const next = generateRefreshToken(await successorSid(presented.token, now))
    const outcome = await fastify.store.rotate({
      presentedHash: hashRefreshToken(presented.token),
      newHash: hashRefreshToken(next),
      sealedNew: sealSuccessor(presented.token, next),
      now,
      graceMs,
      idleTimeoutMs,
      accessTtlMs: denyHorizonMs
    })
    const transport = presented.fromCookie ? 'cookie' : 'body'
    const refused = (): never => {
      if (presented.fromCookie) clearCookie(reply)
      throw new ERR_INVALID_GRANT()
    }
    switch (outcome.kind) {
      case 'invalid':
        fastify.metrics.auth('refresh_failed')
        return refused()
      case 'reuse':
        // The store has ended the session and denylisted it; make it true here at once.
        fastify.denylist.apply({ kind: 'sid', value: outcome.sid, expiresAt: now + denyHorizonMs })
        request.log.warn({ event: 'refresh_reuse', sub: outcome.sub, sid: outcome.sid }, 'refresh token reuse: session revoked')
        fastify.metrics.auth('reuse_detected')
        return refused()
      case 'rotated':
      case 'grace': {
        const token = outcome.kind === 'rotated' ? next : openSuccessor(presented.token, outcome.sealedCurrent)
        const user = await userFor(outcome.session)
        if (token === null || user === undefined) {
          await revoker.endSession(outcome.session.sid, now)
          fastify.metrics.auth('refresh_failed')
          return refused()
        }
        request.log.info({ event: outcome.kind === 'rotated' ? 'refresh' : 'refresh_grace', sub: user.id, sid: outcome.session.sid }, 'refresh')
        fastify.metrics.auth(outcome.kind === 'rotated' ? 'refresh' : 'refresh_grace')
        return issueTokens(reply, user, outcome.session.sid, token, transport, outcome.session.expiresAt)
      }
    }
  })


  auth.post('/auth/logout', {
    preValidation: bodyOptional,
    schema: { body: RefreshBody }
  }, async (request, reply) => {
    const sids = new Set<string>()
    const presented = presentedRefresh(request, request.body)
    const bearer = bearerToken(request)
    if (presented === null && bearer === undefined) throw new ERR_TOKEN_MISSING()
    if (presented?.fromCookie === true) checkBrowserOrigin(request, trustedOrigins)

    let bearerRefused: Error | undefined = bearer === null ? new ERR_TOKEN_INVALID() : undefined
    if (typeof bearer === 'string') {
      try {
        sids.add(fastify.accessTokens.verifyOwn(bearer, Date.now(), request).sid)
      } catch (err) {
        // An expired or foreign access token ends nothing; the refresh token
        // may. A trusted issuer's token is foreign here: its session lives at
        // its IdP, and it is answered as on a route that does not list that
        // issuer (401 TG_TOKEN_INVALID).
        if (err instanceof TokenRejected) request.log.info({ reason: err.reason, detail: err.message }, 'logout: the access token names no session')
        bearerRefused = err instanceof TokenRejected ? rejectionError(err) : new ERR_TOKEN_INVALID()
      }
    }
    // With only a bearer token that does not verify, no session can be named:
    // a 204 would tell the client it is logged out while its session lives on.
    if (presented === null && bearerRefused !== undefined) throw bearerRefused
    if (presented !== null && isWellFormedRefreshToken(presented.token)) {
      const session = await fastify.store.findByRefresh(hashRefreshToken(presented.token), Date.now())
      if (session !== null) sids.add(session.sid)
    }
    for (const sid of sids) await revoker.endSession(sid)
    request.log.info({ event: 'logout', sids: [...sids] }, 'logout')
    fastify.metrics.auth('logout')
    if (presented?.fromCookie === true || request.cookies[cookie.name] !== undefined) clearCookie(reply)
    return reply.code(204).send()
  })
  })
}

export default fp(authRoutesPlugin, {
  name: 'tokengate-auth-routes',
  fastify: '5.x',
  dependencies: ['tokengate-metrics', 'tokengate-tokens', 'tokengate-store', 'tokengate-authenticate', 'tokengate-rate-limit', 'tokengate-user-source']
})
