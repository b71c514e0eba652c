import { Writable } from 'node:stream'
import t from 'tap'
import bcrypt from 'bcryptjs'
import { hash, Algorithm } from '@node-rs/argon2'
import { hashPassword } from '../../src/users/password.js'
import { loggerOptions } from '../../src/ops/logger.js'
import { addUser, cuttableHop, postgresUsers, scryptPhc, startGatewayWithUsers, storedHash, usersSchema } from '../helpers/postgres.js'
import { startUpstream } from '../helpers/upstream.js'

// Logins against users kept in PostgreSQL, with the hash kinds applications
// already store; each test in a schema of its own.

const PASSWORD = 'correct horse battery staple'

const login = (app: Awaited<ReturnType<typeof startGatewayWithUsers>>, username: string, password = PASSWORD) =>
  app.inject({ method: 'POST', url: '/auth/login', payload: { username, password, transport: 'body' } })

t.test('every hash kind logs in with the right password and not with a wrong one', async (t) => {
  const schema = await usersSchema(t)
  const bcrypt2b = bcrypt.hashSync(PASSWORD, 4)
  const kinds: Record<string, string> = {
    argon2id: await hashPassword(PASSWORD),
    argon2i: await hash(PASSWORD, { algorithm: Algorithm.Argon2i }),
    bcrypt2a: bcrypt2b.replace(/^\$2b\$/, '$2a$'),
    bcrypt2b,
    bcrypt2y: bcrypt2b.replace(/^\$2b\$/, '$2y$'),
    scrypt: scryptPhc(PASSWORD)
  }
  for (const [kind, h] of Object.entries(kinds)) await addUser(schema, { id: `u-${kind}`, username: kind, hash: h, roles: ['user'], scopes: ['orders:read'], email: `${kind}@example.com` })
  // Without rehashQuery the stored hashes stay as they are.
  const app = await startGatewayWithUsers(t, postgresUsers(schema, undefined, { rehashQuery: undefined }))
  for (const kind of Object.keys(kinds)) {
    const ok = await login(app, kind)
    t.equal(ok.statusCode, 200, `${kind}: right password`)
    const claims = app.accessTokens.verify(ok.json().access_token)
    t.equal(claims.sub, `u-${kind}`)
    t.same(claims.roles, ['user'])
    t.equal(claims.scope, 'orders:read')
    const bad = await login(app, kind, 'wrong password')
    t.equal(bad.statusCode, 401, `${kind}: wrong password`)
    t.equal(bad.json().code, 'TG_LOGIN_FAILED')
    t.equal(await storedHash(schema, `u-${kind}`), kinds[kind], `${kind}: not rehashed`)
  }
  // The login name is matched as the query says (here case-insensitively).
  t.equal((await login(app, 'ARGON2ID')).statusCode, 200)
})

t.test('rehashQuery upgrades a verified bcrypt hash to argon2id, and the new hash logs in', async (t) => {
  const schema = await usersSchema(t)
  await addUser(schema, { id: 'u-1', username: 'legacy', hash: bcrypt.hashSync(PASSWORD, 4) })
  const app = await startGatewayWithUsers(t, postgresUsers(schema))
  t.equal((await login(app, 'legacy', 'nope')).statusCode, 401)
  t.match(await storedHash(schema, 'u-1'), /^\$2b\$/, 'a failed login changes nothing')
  t.equal((await login(app, 'legacy')).statusCode, 200)
  t.match(await storedHash(schema, 'u-1'), /^\$argon2id\$/)
  t.equal((await login(app, 'legacy')).statusCode, 200, 'the upgraded hash verifies')
})

t.test('disabled and unknown users are refused exactly like a wrong password', async (t) => {
  const schema = await usersSchema(t)
  await addUser(schema, { id: 'u-1', username: 'dora', hash: await hashPassword(PASSWORD), disabled: true })
  const app = await startGatewayWithUsers(t, postgresUsers(schema))
  const disabled = await login(app, 'dora')
  const unknown = await login(app, 'nobody')
  const wrong = await login(app, 'dora', 'wrong password')
  for (const res of [disabled, unknown, wrong]) {
    t.equal(res.statusCode, 401)
    t.same(res.json(), wrong.json())
  }
  // A login name that looks like SQL is only ever a parameter.
  t.equal((await login(app, "x' OR '1'='1")).statusCode, 401)
})

t.test('a refresh sees the user disabled since login and ends the session', async (t) => {
  const schema = await usersSchema(t)
  await addUser(schema, { id: 'u-1', username: 'erin', hash: await hashPassword(PASSWORD) })
  const app = await startGatewayWithUsers(t, postgresUsers(schema))
  const first = (await login(app, 'erin')).json()
  const refreshed = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: first.refresh_token } })
  t.equal(refreshed.statusCode, 200)
  await schema.client.query(`UPDATE ${schema.name}.users SET disabled = true WHERE id = 'u-1'`)
  const refused = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: refreshed.json().refresh_token } })
  t.equal(refused.statusCode, 401)
})

t.test('PostgreSQL unreachable: login 503 with Retry-After, proxied routes unaffected, and it comes back by itself', async (t) => {
  const schema = await usersSchema(t)
  await addUser(schema, { id: 'u-1', username: 'frank', hash: await hashPassword(PASSWORD) })
  const hop = await cuttableHop(t)
  const upstream = await startUpstream(t)
  let logs = ''
  const stream = new Writable({ write (chunk: Buffer, _encoding, callback) { logs += chunk.toString('utf8'); callback() } })
  const app = await startGatewayWithUsers(t, postgresUsers(schema, hop.url), { routes: [{ prefix: '/api', upstream: upstream.url, auth: 'required' }] }, { logger: loggerOptions('info', false, stream) })
  const first = (await login(app, 'frank')).json()
  const token = first.access_token
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)

  hop.cut()
  const down = await login(app, 'frank')
  t.equal(down.statusCode, 503)
  t.equal(down.json().code, 'TG_USERS_UNAVAILABLE')
  t.ok(down.headers['retry-after'])
  const ready = await app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 503)
  t.equal(ready.json().checks.users, 'unavailable')
  const proxied = await app.inject({ method: 'GET', url: '/api/x', headers: { authorization: `Bearer ${token}` } })
  t.equal(proxied.statusCode, 200, 'a token already issued still passes')

  const refreshDown = await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: first.refresh_token } })
  t.equal(refreshDown.statusCode, 503, 'a refresh waits for the user source too')
  t.equal((await login(app, 'frank')).statusCode, 503, 'still down')
  t.equal(logs.split('\n').filter((l) => l.includes('user database unavailable')).length, 1, 'one log line for the outage')
  t.notMatch(logs, /"statusCode":500|TG_INTERNAL/)

  hop.mend()
  t.equal((await login(app, 'frank')).statusCode, 200)
  t.match(logs, 'user database reachable again')
  // The refresh refused during the outage did not spend the token.
  t.equal((await app.inject({ method: 'POST', url: '/auth/refresh', payload: { refresh_token: first.refresh_token } })).statusCode, 200)
  t.equal((await app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
})

t.test('logins answered 503 while PostgreSQL is unreachable are not failed guesses: nobody is locked out once it is back', async (t) => {
  const schema = await usersSchema(t)
  await addUser(schema, { id: 'u-1', username: 'dave', hash: await hashPassword(PASSWORD) })
  const hop = await cuttableHop(t)
  const app = await startGatewayWithUsers(t, postgresUsers(schema, hop.url), { auth: { loginRateLimit: { max: 3, timeWindow: '1m' } } })

  hop.cut()
  for (let i = 0; i < 6; i++) {
    const down = await login(app, 'dave')
    t.equal(down.statusCode, 503, `retry ${i + 1} during the outage is a 503, not a 429`)
    t.equal(down.json().code, 'TG_USERS_UNAVAILABLE')
  }
  hop.mend()
  t.equal((await login(app, 'dave')).statusCode, 200, 'the right password works at once when it is back')

  // Real failures still count: three wrong passwords spend the budget.
  for (let i = 0; i < 3; i++) t.equal((await login(app, 'dave', 'wrong')).statusCode, 401)
  const locked = await login(app, 'dave')
  t.equal(locked.statusCode, 429, 'then even the right one waits for the window')
  t.equal(locked.json().code, 'TG_RATE_LIMITED')
})
