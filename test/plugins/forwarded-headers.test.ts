import t from 'tap'
import { startGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'

// X-Forwarded-* are the gateway's to say; a client's own only count through
// a hop that server.trustProxy names.

t.test('without trustProxy a client cannot choose its forwarded address, proto or host', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/p', upstream: up.url, auth: 'none' }] })
  await app.inject({ url: '/p/x', headers: { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.example', host: 'gw.example' } })
  t.equal(up.seen[0].headers['x-forwarded-for'], '127.0.0.1')
  t.equal(up.seen[0].headers['x-forwarded-proto'], 'http')
  t.equal(up.seen[0].headers['x-forwarded-host'], 'gw.example')
})

t.test('with a trusted proxy hop, the chain it reports is kept and extended', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { server: { trustProxy: ['127.0.0.1'] }, routes: [{ prefix: '/p', upstream: up.url, auth: 'none' }] })
  await app.inject({ url: '/p/x', headers: { 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'api.example' } })
  t.equal(up.seen[0].headers['x-forwarded-for'], '203.0.113.7, 127.0.0.1')
  t.equal(up.seen[0].headers['x-forwarded-proto'], 'https')
  t.equal(up.seen[0].headers['x-forwarded-host'], 'api.example')
})

t.test('a client request id is kept when it is safe, replaced when it is not', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { routes: [{ prefix: '/p', upstream: up.url, auth: 'none' }] })
  const bad = await app.inject({ url: '/p/x', headers: { 'x-request-id': 'a b<script>' } })
  t.match(bad.headers['x-request-id'], /^[0-9a-f-]{36}$/)
  t.equal(up.seen[0].headers['x-request-id'], bad.headers['x-request-id'])
})
