import t from 'tap'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'

// Revocation is keyed on claims, not on the token's spelling: a logged-out
// token replayed with its signature's last character swapped for a sibling
// that decodes to the same bits must stay dead.

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'

t.test('a logged-out token replayed with a malleated signature stays rejected', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url }] })
  const { access_token: token } = await login(app, 'alice')
  t.equal((await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${token}` } })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/auth/logout', headers: { authorization: `Bearer ${token}` } })).statusCode, 204)

  // An ES256 signature is 64 bytes: 86 base64url characters, the last one
  // carrying 2 unused bits, so three siblings decode to the same bytes.
  const last = ALPHABET.indexOf(token[token.length - 1])
  const siblings = [1, 2, 3].map((bits) => token.slice(0, -1) + ALPHABET[last ^ bits])
  for (const replay of [token, ...siblings]) {
    const res = await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${replay}` } })
    t.equal(res.statusCode, 401)
  }
  t.equal(up.seen.length, 1, 'only the request before logout arrived')
})
