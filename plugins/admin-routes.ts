import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { signedIn } from '../src/tokens/signed-in.js'

// Operator revocation: one token (jti), one session (sid), or every token of a
// user (sub). The user may log in again afterwards; only what exists now dies.

const Id = Type.String({ minLength: 1, maxLength: 256, pattern: '^[\\x21-\\x7e]+$' })
const RevokeBody = Type.Union([
  Type.Object({ jti: Id }, { additionalProperties: false }),
  Type.Object({ sid: Id }, { additionalProperties: false }),
  Type.Object({ sub: Id }, { additionalProperties: false })
])

export interface AdminRoutesOptions {
  adminRole: string
}

// typed from the schemas as plugins/auth-routes.ts explains
async function adminRoutesPlugin (instance: FastifyInstance, { adminRole }: AdminRoutesOptions): Promise<void> {
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>()
  fastify.post('/admin/revoke', {
    onRequest: fastify.authenticateWith({ mode: 'required', scopes: [], roles: [adminRole] }),
    schema: { body: RevokeBody }
  }, async (request) => {
    const body = request.body
    const by = signedIn(request).sub
    if ('jti' in body) {
      await fastify.revoker.revokeJti(body.jti)
      request.log.warn({ event: 'admin_revoke', by, jti: body.jti }, 'access token revoked by an operator')
      return { revoked: { jti: body.jti } }
    }
    if ('sid' in body) {
      await fastify.revoker.endSession(body.sid)
      request.log.warn({ event: 'admin_revoke', by, sid: body.sid }, 'session revoked by an operator')
      return { revoked: { sid: body.sid } }
    }
    const sessions = await fastify.revoker.endUser(body.sub)
    request.log.warn({ event: 'admin_revoke', by, sub: body.sub, sessions: sessions.length }, 'user revoked by an operator')
    return { revoked: { sub: body.sub, sessions: sessions.length } }
  })
}

export default fp(adminRoutesPlugin, {
  name: 'tokengate-admin-routes',
  fastify: '5.x',
  dependencies: ['tokengate-authenticate', 'tokengate-store']
})
