import t from 'tap'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'

// The signed identity assertion is what upstreams trust once the network is
// not enough; each way a client could get a false one to an upstream, or
// turn one into something else, is a test.

const HEADER = 'x-tokengate-assertion'

t.test('assertion forgery: a client-sent assertion header is stripped when the feature is off', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url }, { prefix: '/open', upstream: up.url, auth: 'none' }] })
  const { access_token: token } = await login(app, 'bob')
  await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${token}`, 'X-Tokengate-Assertion': 'forged' } })
  await app.inject({ url: '/open/x', headers: { X_TOKENGATE_ASSERTION: 'forged' } })
  t.equal(up.seen.length, 2)
  for (const seen of up.seen) {
    t.equal(seen.headers[HEADER], undefined)
    t.notOk(seen.rawHeaders.includes('forged'), 'the forged value arrives under no name')
  }
})

t.test('assertion forgery: a client-sent assertion is replaced by ours where it is on, and dropped on a public route', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, {
    identity: { assertion: { header: 'X-Signed-Identity' } },
    routes: [{ prefix: '/api', upstream: up.url }, { prefix: '/open', upstream: up.url, auth: 'none' }]
  })
  const { access_token: token } = await login(app, 'bob')
  await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${token}`, 'x-signed-identity': 'forged', 'x-tokengate-assertion': 'forged' } })
  await app.inject({ url: '/open/x', headers: { 'x-signed-identity': 'forged' } })
  const [authed, open] = up.seen
  t.match(authed.headers['x-signed-identity'], /^eyJ/, 'ours, a JWT')
  t.equal(authed.headers[HEADER], undefined, 'the default name is stripped too')
  t.equal(open.headers['x-signed-identity'], undefined, 'no identity, no assertion')
  for (const seen of up.seen) t.notOk(seen.rawHeaders.includes('forged'))
})

t.test('assertion forgery: an assertion presented to the gateway as a bearer token is refused', async (t) => {
  const up = await startUpstream(t)
  // Even with aud = tokens.audience, its typ is not at+jwt.
  const { app } = await startGateway(t, { identity: { assertion: { audience: 'api' } }, routes: [{ prefix: '/api', upstream: up.url }] })
  const { access_token: token } = await login(app, 'bob')
  await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${token}` } })
  const assertion = up.seen[0].headers[HEADER] as string
  t.match(assertion, /^eyJ/)
  const res = await app.inject({ url: '/api/y', headers: { authorization: `Bearer ${assertion}` } })
  t.equal(res.statusCode, 401)
  t.equal(up.seen.length, 1, 'it never reached the upstream')
})
