// Counts fast-jwt verifiers as they are made: set up before @fastify/jwt
// loads, since it takes createVerifier from fast-jwt when it is required.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const fastJwt = require('fast-jwt') as typeof import('fast-jwt')
let made = 0
const createVerifier = fastJwt.createVerifier
Object.assign(fastJwt, { createVerifier: (...args: Parameters<typeof createVerifier>) => { made++; return createVerifier(...args) } })

import t from 'tap'
import { login, startGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'

// A verified-token cache miss goes through @fastify/jwt's request verifier,
// which keeps one fast-jwt verifier per key: distinct tokens signed with one
// key must not build a verifier each (that would cost every new token a key
// import on top of its signature check).

t.test('distinct tokens under one key share one verifier', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/api', upstream: up.url }] })
  const before = made
  for (let i = 0; i < 10; i++) {
    const { access_token: token } = await login(app, 'bob')
    t.equal((await app.inject({ url: '/api/x', headers: { authorization: `Bearer ${token}` } })).statusCode, 200)
  }
  t.equal(made - before, 1, 'one verifier for the one key, built on first use')
})
