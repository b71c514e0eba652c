import t from 'tap'

import { assertNothingReadable, browserSkip, callApi, expiresAtMs, launchBrowser, logIn, openApp, startBrowserGateway, watchAccessTokens } from '../helpers/browser.js'
import { waitFor } from '../helpers/wait-for.js'

// An expired access token costs the user nothing: the app's next API call
// gets a 401, refreshes with the cookie, and retries once, and the upstream
// sees the retried request with the caller's identity.

t.test('the first API call after the access token expires refreshes silently and succeeds', { skip: browserSkip() }, async (t) => {
  const gateway = await startBrowserGateway(t, { tokens: { accessTtl: '2s', clockSkew: '0s' } })
  const context = await launchBrowser(t)
  const page = context.pages()[0] ?? await context.newPage()
  const accessTokens = watchAccessTokens(page)
  await openApp(page, gateway)
  await logIn(page, 'bob')
  const [first] = await accessTokens()
  const [cookie] = await context.cookies()
  await assertNothingReadable(t, page, 'after login', [first, cookie.value])

  await waitFor('the access token has expired', () => Date.now() > expiresAtMs(first) + 250, 100, 100)
  const answered = gateway.answers.length
  const seen = gateway.upstreamSeen.length
  const call = await callApi(page)
  t.equal(call.status, 'GET /api/echo/hello → 200 (after a silent refresh)')
  t.ok(call.loggedIn, 'still logged in')
  const answers = gateway.answers.slice(answered).filter((a) => a.url !== '/favicon.ico')
  t.match(answers, [
    { method: 'GET', url: '/api/echo/hello', statusCode: 401, code: 'TG_TOKEN_EXPIRED' },
    { method: 'POST', url: '/auth/refresh', statusCode: 200, origin: gateway.origin, refreshCookie: cookie.value },
    { method: 'GET', url: '/api/echo/hello', statusCode: 200 }
  ], 'expired, refreshed with the cookie from our own origin, retried once')
  t.equal(answers.length, 3, 'nothing more')

  t.equal(gateway.upstreamSeen.length - seen, 1, 'only the retried request reached the upstream')
  const retried = gateway.upstreamSeen[seen]
  t.match(retried, { url: '/hello', headers: { 'x-user-id': 'u-2', 'x-user-name': 'bob', 'x-user-roles': 'user', 'x-user-scopes': 'orders:read' } }, 'with the identity headers')
  t.equal(retried.headers.authorization, undefined)

  const tokens = await accessTokens()
  t.equal(tokens.length, 2, 'a new access token came from the refresh')
  t.not(tokens[1], first)
  const [rotated] = await context.cookies()
  t.not(rotated.value, cookie.value, 'the refresh cookie was rotated')
  t.match(rotated, { httpOnly: true, sameSite: 'Strict', path: '/auth' })
  await assertNothingReadable(t, page, 'after the silent refresh', [...tokens, cookie.value, rotated.value])

  // A 2s token may expire again by the next call; either way the call succeeds.
  t.match((await callApi(page)).status, /^GET \/api\/echo\/hello → 200/, 'the next call succeeds')
  await assertNothingReadable(t, page, 'after the next call', [...await accessTokens(), ...(await context.cookies()).map((c) => c.value)])
})
