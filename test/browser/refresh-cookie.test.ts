import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { assertNothingReadable, type PageGlobals, browserSkip, callApi, launchBrowser, logIn, openApp, OUTPUT_DIR, startBrowserGateway, watchAccessTokens } from '../helpers/browser.js'

// After login the refresh token is a cookie the browser keeps and no script
// can read, and the access token lives only in the app's memory: not in
// either web storage, not in document.cookie. A reload gets a new access
// token from the cookie.

t.test('the refresh cookie is HttpOnly, SameSite=Strict, scoped to /auth, and the access token stays in memory', { skip: browserSkip() }, async (t) => {
  const gateway = await startBrowserGateway(t)
  const context = await launchBrowser(t)
  const page = context.pages()[0] ?? await context.newPage()
  const accessTokens = watchAccessTokens(page)

  await openApp(page, gateway)
  t.ok(await page.isVisible('#login-form'), 'no session yet: the app asks to log in')
  t.same(await context.cookies(), [], 'no cookie before login')
  await assertNothingReadable(t, page, 'before login', [])

  await logIn(page, 'alice')
  t.equal(await page.textContent('#who'), 'Alice Liddell (alice)')
  const cookies = await context.cookies()
  t.equal(cookies.length, 1, 'one cookie after login')
  const [cookie] = cookies
  t.match(cookie, { name: gateway.cookieName, path: '/auth', httpOnly: true, sameSite: 'Strict', domain: '127.0.0.1' }, 'the refresh cookie')
  t.ok(cookie.value.length >= 32, 'it holds the refresh token')
  const [loginToken] = await accessTokens()
  t.ok(loginToken?.startsWith('eyJ'), 'the login answer carried an access token')
  await assertNothingReadable(t, page, 'after login', [loginToken, cookie.value])
  t.equal(await page.evaluate(() => (globalThis as unknown as PageGlobals).document.cookie), '', 'document.cookie cannot read the refresh cookie')

  const call = await callApi(page)
  t.equal(call.status, 'GET /api/echo/hello → 200')
  t.match(call.output, '"x-user-id": "u-1"', 'the upstream saw the identity headers')
  t.notMatch(call.output, gateway.cookieName, 'the refresh cookie never reached the upstream')
  t.equal(gateway.upstreamSeen.length, 1)
  t.equal(gateway.upstreamSeen[0].headers['x-user-name'], 'alice')
  t.equal(gateway.upstreamSeen[0].headers.authorization, undefined, 'the bearer token stays at the gateway')
  await assertNothingReadable(t, page, 'after an API call', [loginToken, cookie.value])

  mkdirSync(OUTPUT_DIR, { recursive: true })
  const screenshot = join(OUTPUT_DIR, 'logged-in.png')
  await page.screenshot({ path: screenshot, fullPage: true })
  t.comment(`screenshot of the logged-in app: ${screenshot}`)

  await page.reload()
  await page.waitForSelector('body[data-ready="true"]', { state: 'attached' })
  t.ok(await page.isVisible('#session'), 'a reload forgets the access token, and the refresh cookie restores the session')
  const refreshes = gateway.answers.filter((a) => a.url === '/auth/refresh')
  t.match(refreshes.at(-1), { statusCode: 200, origin: gateway.origin, refreshCookie: cookie.value }, 'the reload refreshed with the cookie, from our own origin')
  const tokens = await accessTokens()
  t.equal(tokens.length, 2)
  await assertNothingReadable(t, page, 'after a reload', [...tokens, cookie.value, ...(await context.cookies()).map((c) => c.value)])
  t.equal((await callApi(page)).status, 'GET /api/echo/hello → 200')
})
