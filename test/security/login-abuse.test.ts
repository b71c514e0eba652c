import t from 'tap'
import { PASSWORDS, startGateway } from '../helpers/gateway.js'

// The login endpoint is the one place an anonymous caller makes the gateway
// work hard (argon2id); its input is held to a schema and a size before any
// hashing happens.

t.test('a huge password is refused before hashing, without a 500', async (t) => {
  const { app } = await startGateway(t)
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'x'.repeat(50_000) } })
  t.equal(res.statusCode, 400)
  t.match(res.json(), { code: 'TG_VALIDATION' })
  const bigger = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'x'.repeat(200_000) } })
  t.equal(bigger.statusCode, 413)
  t.match(bigger.json(), { statusCode: 413, code: 'TG_BODY_TOO_LARGE' }, 'our body, not the framework\'s')
})

t.test('operator objects, arrays and __proto__ in the body are 400, never a login', async (t) => {
  const { app } = await startGateway(t)
  const bodies = [
    { username: 'alice', password: { $ne: '' } },
    { username: ['alice'], password: PASSWORDS.alice },
    { username: 'alice', password: [PASSWORDS.alice] },
    { username: { $gt: '' }, password: PASSWORDS.alice }
  ]
  for (const body of bodies) {
    const res = await app.inject({ method: 'POST', url: '/auth/login', payload: body })
    t.equal(res.statusCode, 400, JSON.stringify(body))
  }
  const proto = await app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/json' }, payload: `{"username":"alice","password":"${PASSWORDS.alice}","__proto__":{"admin":true}}` })
  t.equal(proto.statusCode, 400)
})

t.test('credentials in the query string are refused', async (t) => {
  const { app } = await startGateway(t)
  const res = await app.inject({ method: 'POST', url: `/auth/login?password=${PASSWORDS.alice}`, payload: { username: 'alice', password: PASSWORDS.alice } })
  t.equal(res.statusCode, 400)
})

t.test('unknown user and wrong password are told apart by nothing in the answer', async (t) => {
  const { app } = await startGateway(t)
  const unknown = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'mallory', password: 'whatever-password' } })
  const wrong = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: 'whatever-password' } })
  t.equal(unknown.statusCode, 401)
  t.equal(unknown.body, wrong.body)
  t.same(Object.keys(unknown.headers).filter((h) => h !== 'date' && h !== 'x-request-id').sort(), Object.keys(wrong.headers).filter((h) => h !== 'date' && h !== 'x-request-id').sort())
})

t.test('a text/plain login (the shape of a cross-site form post) is refused', async (t) => {
  const { app } = await startGateway(t)
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': 'text/plain' }, payload: JSON.stringify({ username: 'alice', password: PASSWORDS.alice }) })
  // Fastify parses text/plain as a string, which the login schema refuses.
  t.equal(res.statusCode, 400)
  t.notOk('access_token' in res.json())
})
