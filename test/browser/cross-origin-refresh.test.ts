import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import type { Test } from 'tap'
import { browserSkip, callApi, launchBrowser, logIn, openApp, startBrowserGateway, watchAccessTokens } from '../helpers/browser.js'

// A page on another origin, in the victim's own browser, posts to the
// gateway's /auth/refresh with credentials: 'include'. It must get nothing
// usable, and the victim's session must survive it: the 403 burns nothing.
// From 127.0.0.1 on another port the page is same-site, so SameSite=Strict
// does not stop the cookie and the Origin check is what refuses it; from
// localhost it is cross-site and the browser does not even send the cookie.

interface Attempt { status?: number, type?: string, body?: string, error?: string }
interface AttackResult { cors: Attempt, noCors: Attempt, readableCookie: string }

/** A page that attacks `target` as soon as it loads, and keeps what it got in window.attack. */
function attackerPage (target: string): string {
  return `<!doctype html><title>totally harmless</title><script>
window.attack = (async () => {
  const attempt = async (init) => {
    try {
      const res = await fetch(${JSON.stringify(target)}, { method: 'POST', credentials: 'include', ...init })
      return { status: res.status, type: res.type, body: await res.text() }
    } catch (err) {
      return { error: String(err) }
    }
  }
  return { cors: await attempt({}), noCors: await attempt({ mode: 'no-cors' }), readableCookie: document.cookie }
})()
</script>`
}

async function startAttacker (t: Test, target: string): Promise<number> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
    res.end(attackerPage(target))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return (server.address() as AddressInfo).port
}

for (const { host, site, cookieSent, refused } of [
  { host: '127.0.0.1', site: 'same-site', cookieSent: true, refused: { statusCode: 403, code: 'TG_CSRF', why: 'refused by the Origin check' } },
  // No cookie arrives, so there is no refresh token to check the Origin for.
  { host: 'localhost', site: 'cross-site', cookieSent: false, refused: { statusCode: 401, code: 'TG_INVALID_GRANT', why: 'refused: no refresh token arrived' } }
]) {
  t.test(`a ${site} page (http://${host}, another port) posting to /auth/refresh with credentials gets nothing usable`, { skip: browserSkip() }, async (t) => {
    const gateway = await startBrowserGateway(t)
    const context = await launchBrowser(t)
    const victim = context.pages()[0] ?? await context.newPage()
    const accessTokens = watchAccessTokens(victim)
    await openApp(victim, gateway)
    await logIn(victim, 'alice')
    const [cookie] = await context.cookies()

    const attackerOrigin = `http://${host}:${await startAttacker(t, `${gateway.origin}/auth/refresh`)}`
    const attacker = await context.newPage()
    const attackerTokens = watchAccessTokens(attacker)
    const answered = gateway.answers.length
    await attacker.goto(`${attackerOrigin}/`)
    const result = await attacker.evaluate(() => (globalThis as unknown as { attack: Promise<AttackResult> }).attack)

    t.match(result.cors, { error: /TypeError|Failed to fetch/ }, 'the CORS request fails: no Access-Control-Allow-Origin')
    t.match(result.noCors, { status: 0, type: 'opaque', body: '' }, 'the no-cors answer is opaque')
    t.equal(result.readableCookie, '', 'the attacker page reads no cookie')
    t.notMatch(JSON.stringify(result), /eyJ|access_token/, 'no token anywhere the attacker page can read')
    t.same(await attackerTokens(), [], 'the gateway handed the attacker page no token')

    const attempts = gateway.answers.slice(answered).filter((a) => a.url === '/auth/refresh')
    t.equal(attempts.length, 2, 'both requests reached the gateway')
    for (const attempt of attempts) {
      t.match(attempt, { method: 'POST', statusCode: refused.statusCode, code: refused.code, origin: attackerOrigin }, refused.why)
      t.equal(attempt.refreshCookie, cookieSent ? cookie.value : undefined, cookieSent ? 'even though the browser sent the cookie (same-site)' : 'SameSite=Strict kept the cookie from a cross-site page')
    }

    t.same((await context.cookies()).map((c) => c.value), [cookie.value], 'the refresh cookie is untouched')
    t.equal((await callApi(victim)).status, 'GET /api/echo/hello → 200', 'the victim is still logged in')
    await victim.reload()
    await victim.waitForSelector('body[data-ready="true"]', { state: 'attached' })
    t.ok(await victim.isVisible('#session'), 'and the refresh token still works: the 403 burned nothing')
    t.match(gateway.answers.filter((a) => a.url === '/auth/refresh').at(-1), { statusCode: 200, origin: gateway.origin, refreshCookie: cookie.value })
    t.equal((await accessTokens()).length, 2)
  })
}
