import t from 'tap'
import { climbsOut, upstreamPool } from '../../src/proxy/upstream-forwarder.js'

// The forwarder's own logic: which rewritten paths could climb out of where
// a route points on an upstream that decodes them. The hop itself over HTTP
// is covered in test/plugins/upstream-hop.test.ts.

const climbing = ['/..', '/a/../b', '/%2e%2e/x', '/%2E%2E/x', '/%252e%252e/x', '/%25252e%25252e/x', '/..;jsessionid=1/x', '/a\\..\\b', '/a%5c..%5cb', '/.%2e/x']
const staying = ['/', '/a/b', '/a..b/c', '/...', '/a/.hidden', '/100%', '/%zz', '/%2e/x', '/a%2fb']

for (const path of climbing) {
  t.test(`${path} climbs out`, async (t) => { t.equal(climbsOut(path), true) })
}
for (const path of staying) {
  t.test(`${path} stays`, async (t) => { t.equal(climbsOut(path), false) })
}

t.test('an upstream pool is made for the upstream origin and can be closed', async (t) => {
  const pool = upstreamPool('http://127.0.0.1:1/base')
  t.equal(pool.closed, false)
  await pool.close()
  t.equal(pool.closed, true)
})
