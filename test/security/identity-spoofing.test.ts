import t from 'tap'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'

// Upstreams believe the identity headers, so each way a client could slip
// its own past the gateway is one test. The upstream must see ours or none.

const variants: Array<[string, Record<string, string>]> = [
  ['exact name', { 'X-User-Id': 'root' }],
  ['lower case', { 'x-user-id': 'root' }],
  ['upper case', { 'X-USER-ID': 'root' }],
  ['underscores', { X_USER_ID: 'root' }],
  ['mixed separators', { 'x_user-id': 'root' }],
  ['named in Connection to drop ours', { connection: 'x-user-id', 'x-user-id': 'root' }]
]

for (const [name, headers] of variants) {
  t.test(`identity header spoofing: ${name}`, async (t) => {
    const up = await startUpstream(t)
    const { app } = await startGateway(t, {
      routes: [{ prefix: '/api', upstream: up.url }, { prefix: '/open', upstream: up.url, auth: 'none' }]
    })
    const { access_token: token } = await login(app, 'bob')
    await app.inject({ url: '/api/x', headers: { ...headers, authorization: `Bearer ${token}` } })
    await app.inject({ url: '/open/x', headers })
    const [authed, open] = up.seen
    t.equal(authed.headers['x-user-id'], 'u-2', 'ours on a protected route')
    t.equal(open.headers['x-user-id'], undefined, 'none on a public route')
    for (const seen of up.seen) {
      t.notOk(seen.rawHeaders.some((h, i) => i % 2 === 1 && h === 'root'), 'the forged value arrives under no name')
    }
  })
}
