import t from 'tap'
import { hashPassword } from '../../src/users/password.js'
import { login, startGateway } from '../helpers/gateway.js'
import { addUser, postgresUsers, startGatewayWithUsers, storedHash, usersSchema } from '../helpers/postgres.js'

// POST /auth/password: where the user source can write, the password changes
// and every other session of the user ends; the users file cannot.

const OLD = 'old-password-0123'
const NEW = 'new-password-4567'

t.test('the users file answers 405 with a clear message', async (t) => {
  const { app } = await startGateway(t)
  const { access_token: token } = await login(app, 'alice')
  const res = await app.inject({ method: 'POST', url: '/auth/password', headers: { authorization: `Bearer ${token}` }, payload: { current_password: 'alice-test-password', new_password: NEW } })
  t.equal(res.statusCode, 405)
  t.equal(res.json().code, 'TG_PASSWORD_CHANGE_UNSUPPORTED')
  t.match(res.json().message, /read-only/)
})

t.test('PostgreSQL: the password changes to argon2id, other sessions end, this one stays', async (t) => {
  const schema = await usersSchema(t)
  await addUser(schema, { id: 'u-7', username: 'grace', hash: await hashPassword(OLD) })
  const app = await startGatewayWithUsers(t, postgresUsers(schema))
  const signIn = async (password: string) => app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'grace', password, transport: 'body' } })
  const here = (await signIn(OLD)).json()
  const elsewhere = (await signIn(OLD)).json()
  const change = (body: Record<string, string>) => app.inject({ method: 'POST', url: '/auth/password', headers: { authorization: `Bearer ${here.access_token}` }, payload: body })

  const wrong = await change({ current_password: 'not-it', new_password: NEW })
  t.equal(wrong.statusCode, 403)
  t.equal(wrong.json().code, 'TG_PASSWORD_INCORRECT')
  t.equal((await signIn(OLD)).statusCode, 200, 'nothing changed')

  const ok = await change({ current_password: OLD, new_password: NEW })
  t.equal(ok.statusCode, 200)
  t.match(await storedHash(schema, 'u-7'), /^\$argon2id\$/)
  t.equal((await signIn(OLD)).statusCode, 401)
  t.equal((await signIn(NEW)).statusCode, 200)

  const sessions = await app.inject({ method: 'GET', url: '/auth/sessions', headers: { authorization: `Bearer ${here.access_token}` } })
  t.equal(sessions.statusCode, 200, 'the current access token still works')
  const otherAccess = await app.inject({ method: 'GET', url: '/auth/sessions', headers: { authorization: `Bearer ${elsewhere.access_token}` } })
  t.equal(otherAccess.statusCode, 401, 'the other session\'s access token is revoked')
  t.equal((await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: elsewhere.refresh_token } })).statusCode, 401)
  t.equal((await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: here.refresh_token } })).statusCode, 200)
})

t.test('wrong current passwords are throttled like logins', async (t) => {
  const schema = await usersSchema(t)
  await addUser(schema, { id: 'u-8', username: 'heidi', hash: await hashPassword(OLD) })
  const app = await startGatewayWithUsers(t, postgresUsers(schema), { auth: { loginRateLimit: { max: 2, timeWindow: '1m' } } })
  const { access_token: token } = (await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'heidi', password: OLD, transport: 'body' } })).json()
  const change = (current: string) => app.inject({ method: 'POST', url: '/auth/password', headers: { authorization: `Bearer ${token}` }, payload: { current_password: current, new_password: NEW } })
  t.equal((await change('guess-1')).statusCode, 403)
  t.equal((await change('guess-2')).statusCode, 403)
  const throttled = await change(OLD)
  t.equal(throttled.statusCode, 429)
  t.ok(throttled.headers['retry-after'])
})

t.test('without a valid access token nothing is asked of the source', async (t) => {
  const { app } = await startGateway(t)
  const res = await app.inject({ method: 'POST', url: '/auth/password', payload: { current_password: 'x', new_password: NEW } })
  t.equal(res.statusCode, 401)
})
