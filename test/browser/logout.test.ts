import t from 'tap'
import { assertNothingReadable, browserSkip, callApi, launchBrowser, logIn, openApp, startBrowserGateway, watchAccessTokens } from '../helpers/browser.js'

// Logging out in the app ends the session at the gateway and clears the
// refresh cookie: the old access token is refused, no refresh is possible,
// and a reload does not bring the session back.

t.test('after logout the cookie is gone and API calls get 401', { skip: browserSkip() }, async (t) => {
  const gateway = await startBrowserGateway(t)
  const context = await launchBrowser(t)
  const page = context.pages()[0] ?? await context.newPage()
  const accessTokens = watchAccessTokens(page)
  await openApp(page, gateway)
  await logIn(page, 'alice')
  t.equal((await callApi(page)).status, 'GET /api/echo/hello → 200')
  const [token] = await accessTokens()
  const [cookie] = await context.cookies()

  await page.click('#logout')
  await page.waitForSelector('#login-form', { state: 'visible' })
  t.equal(await page.textContent('#login-error'), 'Logged out.')
  t.match(gateway.answers.filter((a) => a.url === '/auth/logout'), [{ method: 'POST', statusCode: 204, origin: gateway.origin, refreshCookie: cookie.value }], 'logged out with the cookie, from our own origin')
  t.same(await context.cookies(), [], 'the refresh cookie is gone')
  await assertNothingReadable(t, page, 'after logout', [token, cookie.value])

  const seen = gateway.upstreamSeen.length
  const afterLogout = await page.evaluate(async (token) => {
    const status = async (res: Promise<Response>): Promise<{ status: number, code: string }> => {
      const answer = await res
      return { status: answer.status, code: ((await answer.json()) as { code: string }).code }
    }
    return {
      oldToken: await status(fetch('/api/echo/hello', { headers: { authorization: `Bearer ${token}` } })),
      noToken: await status(fetch('/api/echo/hello')),
      refresh: await status(fetch('/auth/refresh', { method: 'POST' }))
    }
  }, token)
  t.same(afterLogout, {
    oldToken: { status: 401, code: 'TG_TOKEN_REVOKED' },
    noToken: { status: 401, code: 'TG_TOKEN_MISSING' },
    refresh: { status: 401, code: 'TG_INVALID_GRANT' }
  }, 'the old access token is revoked, and there is nothing to refresh with')
  t.equal(gateway.upstreamSeen.length, seen, 'none of them reached the upstream')

  await page.reload()
  await page.waitForSelector('body[data-ready="true"]', { state: 'attached' })
  t.ok(await page.isVisible('#login-form'), 'a reload does not bring the session back')
  await assertNothingReadable(t, page, 'after a reload', [token, cookie.value])
})
