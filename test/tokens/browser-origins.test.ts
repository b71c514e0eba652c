import t from 'tap'
import { checkBrowserOrigin, trustedBrowserOrigins } from '../../src/tokens/browser-origins.js'

// Which browser origins may use the refresh cookie: the configured ones, the
// public URL's, and the one the request was addressed to; nothing else.

const config = (allowedOrigins: string[], publicUrl?: string): Parameters<typeof trustedBrowserOrigins>[0] =>
  ({ auth: { allowedOrigins }, server: { publicUrl } }) as unknown as Parameters<typeof trustedBrowserOrigins>[0]

t.test('trusted origins: auth.allowedOrigins plus the origin of server.publicUrl, as browsers serialise them', async (t) => {
  const trusted = trustedBrowserOrigins(config(['https://App.example.com:443'], 'https://gw.example.com/base/path'))
  t.ok(trusted.has('https://app.example.com'), 'allowed origin in serialised form')
  t.ok(trusted.has('https://gw.example.com'), 'public URL reduced to its origin')
  t.notOk(trusted.has('https://evil.example.com'))
  t.same([...trustedBrowserOrigins(config([]))], [], 'nothing configured: nothing trusted beyond the gateway itself')
})

t.test('the check: trusted or own origin passes; foreign, missing or cross-site is TG_CSRF', async (t) => {
  const trusted = trustedBrowserOrigins(config(['https://app.example.com']))
  const request = (headers: Record<string, string>): Parameters<typeof checkBrowserOrigin>[0] => ({ headers, protocol: 'https', host: 'gw.example.com' })
  t.doesNotThrow(() => checkBrowserOrigin(request({ origin: 'https://app.example.com' }), trusted))
  t.doesNotThrow(() => checkBrowserOrigin(request({ origin: 'https://gw.example.com' }), trusted), 'the gateway\'s own origin')
  t.doesNotThrow(() => checkBrowserOrigin(request({ origin: 'https://GW.example.com:443' }), trusted), 'own origin compared serialised')
  t.throws(() => checkBrowserOrigin(request({ origin: 'https://evil.example.com' }), trusted), { code: 'TG_CSRF', statusCode: 403 })
  t.throws(() => checkBrowserOrigin(request({}), trusted), { code: 'TG_CSRF' }, 'no Origin')
  t.throws(() => checkBrowserOrigin(request({ origin: 'https://app.example.com', 'sec-fetch-site': 'cross-site' }), trusted), { code: 'TG_CSRF' }, 'the browser says cross-site')
  t.throws(() => checkBrowserOrigin(request({ origin: 'null' }), trusted), { code: 'TG_CSRF' }, 'an opaque origin')
})
