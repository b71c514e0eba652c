import t from 'tap'

import { assertNothingReadable, browserSkip, callApi, expiresAtMs, launchBrowser, logIn, openApp, startBrowserGateway, watchAccessTokens } from '../helpers/browser.js'
import { waitFor } from '../helpers/wait-for.js'

// Two tabs share one refresh cookie. When both find their access token
// expired and refresh at the same moment, both present the same refresh
// token: one rotates it, the other is answered from the grace window with
// the same successor. Neither is logged out, and no reuse is detected.

/** Holds refresh requests until `count` of them are in, so they meet at the gateway at once. */
function refreshBarrier (count: number): { arm (): void, held: (string | undefined)[], hook (request: { url: string, cookies: Record<string, string | undefined> }, cookieName: string): Promise<void> } {
  let armed = false
  const held: (string | undefined)[] = []
  const waiting: (() => void)[] = []
  const releaseAll = (): void => { armed = false; for (const release of waiting.splice(0)) release() }
  return {
    held,
    arm () { armed = true },
    hook (request, cookieName) {
      if (!armed || request.url !== '/auth/refresh') return Promise.resolve()
      held.push(request.cookies[cookieName])
      return new Promise<void>((resolve) => {
        waiting.push(resolve)
        if (waiting.length === count) releaseAll()
        // Bounded: a tab that never refreshes shows up as held.length < count, not as a hung test.
        else setTimeout(releaseAll, 10_000).unref()
      })
    }
  }
}

t.test('two tabs refreshing at the same moment both stay logged in', { skip: browserSkip() }, async (t) => {
  const barrier = refreshBarrier(2)
  let cookieName = ''
  const gateway = await startBrowserGateway(t, { tokens: { accessTtl: '2s', clockSkew: '0s', reuseGrace: '5s' } }, (app) => {
    app.addHook('onRequest', async (request) => barrier.hook(request, cookieName))
  })
  cookieName = gateway.cookieName
  const context = await launchBrowser(t)
  const tabA = context.pages()[0] ?? await context.newPage()
  const tabB = await context.newPage()
  const tokensA = watchAccessTokens(tabA)
  const tokensB = watchAccessTokens(tabB)

  await openApp(tabA, gateway)
  await logIn(tabA, 'alice')
  await openApp(tabB, gateway)
  t.ok(await tabB.isVisible('#session'), 'the second tab got its own access token from the cookie')
  const [tokenA] = await tokensA()
  const [tokenB] = await tokensB()
  t.ok(tokenA !== undefined && tokenB !== undefined && tokenA !== tokenB)
  const [before] = await context.cookies()

  await waitFor('both access tokens have expired', () => Date.now() > Math.max(expiresAtMs(tokenA), expiresAtMs(tokenB)) + 250, 100, 100)
  const answered = gateway.answers.length
  barrier.arm()
  const [callA, callB] = await Promise.all([callApi(tabA), callApi(tabB)])

  t.equal(barrier.held.length, 2, 'both refreshes were at the gateway at once')
  t.same(barrier.held, [before.value, before.value], 'both presented the same refresh token')
  const refreshes = gateway.answers.slice(answered).filter((a) => a.url === '/auth/refresh')
  t.same(refreshes.map((a) => a.statusCode), [200, 200], 'the rotation and the grace answer')
  t.equal(callA.status, 'GET /api/echo/hello → 200 (after a silent refresh)', 'tab A')
  t.equal(callB.status, 'GET /api/echo/hello → 200 (after a silent refresh)', 'tab B')
  t.ok(callA.loggedIn && callB.loggedIn, 'both tabs are still logged in')
  t.match(callA.output, '"x-user-id": "u-1"')
  t.match(callB.output, '"x-user-id": "u-1"')

  const cookies = await context.cookies()
  t.equal(cookies.length, 1)
  t.not(cookies[0].value, before.value, 'one successor cookie')
  // The session is intact: a later refresh with the successor works in either tab.
  await tabB.reload()
  await tabB.waitForSelector('body[data-ready="true"]', { state: 'attached' })
  t.ok(await tabB.isVisible('#session'), 'a reload after the race still restores the session')
  t.equal(gateway.answers.filter((a) => a.url === '/auth/refresh').at(-1)?.statusCode, 200)
  // (its access token may have expired by now: then it refreshes again, which works too)
  t.match((await callApi(tabA)).status, /^GET \/api\/echo\/hello → 200/, 'tab A keeps working')
  const all = [...await tokensA(), ...await tokensB(), before.value, ...(await context.cookies()).map((c) => c.value)]
  await assertNothingReadable(t, tabA, 'tab A', all)
  await assertNothingReadable(t, tabB, 'tab B', all)
})
