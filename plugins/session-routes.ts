import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { ERR_SESSION_NOT_FOUND } from '../src/errors.js'
import { signedIn } from '../src/tokens/signed-in.js'

// A user's view of their own sessions: list them, end one, end all.

const SessionView = Type.Object({
  id: Type.String(),
  current: Type.Boolean(),
  createdAt: Type.String({ format: 'date-time' }),
  lastUsedAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.String({ format: 'date-time' }),
  userAgent: Type.String(),
  address: Type.String()
})

const SessionParams = Type.Object({ id: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' }) })

// typed from the schemas as plugins/auth-routes.ts explains
async function sessionRoutesPlugin (instance: FastifyInstance): Promise<void> {
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>()
  // The gateway's own tokens only: a trusted issuer's token names no session
  // here (401 TG_TOKEN_INVALID, as on a route that does not list its issuer).
  const authenticated = fastify.authenticateWith({ mode: 'required', scopes: [], roles: [], issuers: [fastify.accessTokens.issuer] })

  fastify.get('/auth/sessions', {
    onRequest: authenticated,
    schema: { response: { 200: Type.Object({ sessions: Type.Array(SessionView) }) } }
  }, async (request) => {
    const me = signedIn(request)
    const sessions = await fastify.store.listSessions(me.sub, Date.now())
    return {
      sessions: sessions.map((s) => ({
        id: s.sid,
        current: s.sid === me.sid,
        createdAt: new Date(s.createdAt).toISOString(),
        lastUsedAt: new Date(s.lastUsedAt).toISOString(),
        expiresAt: new Date(s.expiresAt).toISOString(),
        userAgent: s.userAgent,
        address: s.address
      }))
    }
  })

  fastify.delete('/auth/sessions/:id', {
    onRequest: authenticated,
    schema: { params: SessionParams }
  }, async (request, reply) => {
    const me = signedIn(request)
    const { id } = request.params
    // Only the caller's own sessions; someone else's is "not found", not "forbidden".
    const mine = await fastify.store.listSessions(me.sub, Date.now())
    if (!mine.some((s) => s.sid === id)) throw new ERR_SESSION_NOT_FOUND()
    await fastify.revoker.endSession(id)
    request.log.info({ event: 'session_ended', sub: me.sub, sid: id }, 'session ended by its user')
    return reply.code(204).send()
  })

  fastify.post('/auth/logout-all', { onRequest: authenticated }, async (request, reply) => {
    const me = signedIn(request)
    const sids = await fastify.revoker.endUser(me.sub)
    request.log.info({ event: 'logout_all', sub: me.sub, sessions: sids.length }, 'logout from every session')
    fastify.metrics.auth('logout_all')
    return reply.code(204).send()
  })
}

export default fp(sessionRoutesPlugin, {
  name: 'tokengate-session-routes',
  fastify: '5.x',
  dependencies: ['tokengate-metrics', 'tokengate-tokens', 'tokengate-authenticate', 'tokengate-store']
})
