import fp from 'fastify-plugin'
import { Type } from '@sinclair/typebox'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { FastifyInstance } from 'fastify'
import { ERR_PASSWORD_CHANGE_UNSUPPORTED, ERR_PASSWORD_INCORRECT, ERR_RATE_LIMITED } from '../src/errors.js'
import { clientAddress } from '../src/limits/client-address.js'
import { checkedAttempt } from '../src/limits/login-throttle.js'
import { hashPassword, MAX_PASSWORD_BYTES } from '../src/users/password.js'
import { signedIn } from '../src/tokens/signed-in.js'

// Changing one's own password where the user source can write. Everything
// else the user had open ends: a changed password is often a stolen one.

const PasswordBody = Type.Object({
  current_password: Type.String({ minLength: 1, maxLength: MAX_PASSWORD_BYTES }),
  new_password: Type.String({ minLength: 8, maxLength: MAX_PASSWORD_BYTES })
}, { additionalProperties: false })

// typed from the schemas as plugins/auth-routes.ts explains
async function passwordRoutesPlugin (instance: FastifyInstance): Promise<void> {
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>()
  fastify.post('/auth/password', {
    onRequest: fastify.authenticateWith({ mode: 'required', scopes: [], roles: [] }),
    schema: { body: PasswordBody }
  }, async (request, reply) => {
    const identity = signedIn(request)
    if (!fastify.userSource.canChangePassword) throw new ERR_PASSWORD_CHANGE_UNSUPPORTED()
    const { current_password: current, new_password: next } = request.body
    if (Buffer.byteLength(current, 'utf8') > MAX_PASSWORD_BYTES || Buffer.byteLength(next, 'utf8') > MAX_PASSWORD_BYTES) throw new ERR_PASSWORD_INCORRECT()
    // A stolen access token must not become a way to guess the password faster than login allows.
    const attempt = { account: identity.username.toLowerCase(), address: clientAddress(request) }
    const verdict = await fastify.loginThrottle.take(attempt, Date.now())
    if (!verdict.allowed) {
      const seconds = Math.max(1, Math.ceil(verdict.retryAfterMs / 1000))
      reply.header('retry-after', seconds)
      throw new ERR_RATE_LIMITED(`${seconds}s`)
    }
    if (!await checkedAttempt(fastify.loginThrottle, attempt, () => fastify.userSource.checkPassword(identity.sub, current))) {
      request.log.info({ event: 'password_change_failed', sub: identity.sub }, 'password change: wrong current password')
      throw new ERR_PASSWORD_INCORRECT()
    }
    await fastify.loginThrottle.giveBack(attempt, Date.now())
    await fastify.userSource.changePassword(identity.sub, await hashPassword(next))
    // Every other session ends (their access tokens too); this one lives on.
    const sessions = await fastify.store.listSessions(identity.sub, Date.now())
    let ended = 0
    for (const session of sessions) {
      if (session.sid === identity.sid) continue
      await fastify.revoker.endSession(session.sid)
      ended++
    }
    request.log.warn({ event: 'password_changed', sub: identity.sub, ended }, 'password changed')
    return { changed: true, sessions_ended: ended }
  })
}

export default fp(passwordRoutesPlugin, {
  name: 'tokengate-password-routes',
  fastify: '5.x',
  dependencies: ['tokengate-authenticate', 'tokengate-store', 'tokengate-user-source', 'tokengate-rate-limit']
})
