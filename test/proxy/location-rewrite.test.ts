import t from 'tap'
import { targetLocationRewriter } from '../../src/proxy/location-rewrite.js'

// An absolute Location on one of the route's targets becomes the path the
// client reaches it by through the gateway; anything else is left alone.

const targets = ['http://10.0.1.5:3001', 'http://10.0.1.6:3001']

t.test('a target\'s own URL comes back under the route prefix, whichever target', async (t) => {
  const rewrite = targetLocationRewriter(targets, '/api/orders', '/orders')
  t.equal(rewrite('http://10.0.1.5:3001/orders/42'), '/api/orders/42')
  t.equal(rewrite('http://10.0.1.6:3001/orders/42?tab=items#top'), '/api/orders/42?tab=items#top')
  t.equal(rewrite('HTTP://10.0.1.6:3001/orders'), '/api/orders', 'the scheme is case-insensitive')
})

t.test('with the default rewritePrefix the path is put under the prefix', async (t) => {
  const rewrite = targetLocationRewriter(targets, '/api/echo', '/')
  t.equal(rewrite('http://10.0.1.5:3001/hello'), '/api/echo/hello')
})

t.test('other sites, other ports, path-only and broken values are left alone', async (t) => {
  const rewrite = targetLocationRewriter(targets, '/api/orders', '/orders')
  t.equal(rewrite('https://idp.example.com/login'), 'https://idp.example.com/login')
  t.equal(rewrite('http://10.0.1.5:3002/orders/1'), 'http://10.0.1.5:3002/orders/1', 'another port is another origin')
  t.equal(rewrite('https://10.0.1.5:3001/orders/1'), 'https://10.0.1.5:3001/orders/1', 'another scheme is another origin')
  t.equal(rewrite('/orders/1'), '/orders/1', 'path-only: @fastify/http-proxy rewrites those')
  t.equal(rewrite('http://[bad'), 'http://[bad')
})
