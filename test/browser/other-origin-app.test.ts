import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { assertNothingReadable, browserSkip, callApi, expiresAtMs, launchBrowser, logIn, openApp, startCrossOriginBrowserGateway, watchAccessTokens, type GatewayAnswer } from '../helpers/browser.js'
import { PASSWORDS } from '../helpers/gateway.js'
import { waitFor } from '../helpers/wait-for.js'

// The example app served from an origin of its own (http://localhost:A) and
// calling the gateway on another (http://localhost:B), as an app on
// https://app.example.com calls https://api.example.com: two origins of one
// site, so the SameSite=Strict refresh cookie travels with
// `credentials: 'include'`, and CORS plus the Origin check decide who may
// use it. Everything below crosses origins.

/** What the app's own requests were answered, without preflights (the browser caches them; @fastify/cors answers them before the recording hooks). */
function exchanges (answers: GatewayAnswer[]): GatewayAnswer[] {
  return answers.filter((a) => a.method !== 'OPTIONS' && a.url !== '/favicon.ico')
}

t.test('the app on another origin logs in, calls the API, refreshes silently and logs out', { skip: browserSkip() }, async (t) => {
  const gateway = await startCrossOriginBrowserGateway(t, { tokens: { accessTtl: '3s', clockSkew: '0s' } })
  t.not(new URL(gateway.appOrigin).port, new URL(gateway.origin).port, 'the app and the gateway are two origins')
  const context = await launchBrowser(t)
  const page = context.pages()[0] ?? await context.newPage()
  const accessTokens = watchAccessTokens(page)

  await openApp(page, gateway)
  t.match(exchanges(gateway.answers), [{ method: 'POST', url: '/auth/refresh', statusCode: 401, code: 'TG_INVALID_GRANT', origin: gateway.appOrigin }],
    'the start-up refresh went to the gateway across origins; its 401 was readable (the app shows the login form)')
  t.ok(await page.isVisible('#login-form'))

  let answered = gateway.answers.length
  await logIn(page, 'alice')
  // A JSON POST is preflighted: the browser sent it only because the gateway approved the preflight.
  t.match(exchanges(gateway.answers.slice(answered)), [{ method: 'POST', url: '/auth/login', statusCode: 200, origin: gateway.appOrigin }], 'the JSON login from the other origin succeeded')
  const [first] = await accessTokens()
  const cookies = await context.cookies()
  t.equal(cookies.length, 1, 'the browser kept the refresh cookie from the cross-origin answer')
  const [cookie] = cookies
  t.match(cookie, { name: gateway.cookieName, domain: 'localhost', path: '/auth', httpOnly: true, sameSite: 'Strict' })
  await assertNothingReadable(t, page, 'after login', [first, cookie.value])

  // The bearer call, before the token expires (it lives 3 s): no refresh in between.
  answered = gateway.answers.length
  let seen = gateway.upstreamSeen.length
  const call = await callApi(page)
  t.match(call.status, /^GET \/api\/echo\/hello → 200/, 'the protected route answered the bearer token across origins')
  t.match(gateway.upstreamSeen[seen], { url: '/hello', headers: { 'x-user-id': 'u-1', 'x-user-name': 'alice' } }, 'with alice\'s identity upstream')
  t.equal(gateway.upstreamSeen[seen].headers.cookie, undefined, 'the refresh cookie (Path=/auth) never went to the API route')

  await waitFor('the access token has expired', () => Date.now() > expiresAtMs(first) + 250, 100, 100)
  answered = gateway.answers.length
  seen = gateway.upstreamSeen.length
  const silent = await callApi(page)
  t.equal(silent.status, 'GET /api/echo/hello → 200 (after a silent refresh)')
  t.match(exchanges(gateway.answers.slice(answered)), [
    { method: 'GET', url: '/api/echo/hello', statusCode: 401, code: 'TG_TOKEN_EXPIRED', origin: gateway.appOrigin },
    { method: 'POST', url: '/auth/refresh', statusCode: 200, origin: gateway.appOrigin, refreshCookie: cookie.value },
    { method: 'GET', url: '/api/echo/hello', statusCode: 200, origin: gateway.appOrigin }
  ], 'the expired token\'s 401 was readable; the refresh carried the cookie from the other origin; the retry succeeded')
  t.equal(gateway.upstreamSeen.length - seen, 1, 'only the retried request reached the upstream')
  const [rotated] = await context.cookies()
  t.not(rotated.value, cookie.value, 'the cross-origin refresh rotated the cookie')
  const tokens = await accessTokens()
  t.equal(tokens.length, 2)
  await assertNothingReadable(t, page, 'after the silent refresh', [...tokens, cookie.value, rotated.value])

  answered = gateway.answers.length
  await page.click('#logout')
  await page.waitForSelector('#login-form', { state: 'visible' })
  t.match(exchanges(gateway.answers.slice(answered)), [{ method: 'POST', url: '/auth/logout', statusCode: 204, origin: gateway.appOrigin, refreshCookie: rotated.value }],
    'logout carried the cookie across origins')
  t.same(await context.cookies(), [], 'the cross-origin logout answer cleared the cookie')
  const after = await fetch(`${gateway.origin}/api/echo/hello`, { headers: { authorization: `Bearer ${tokens[1]}` } })
  t.equal(after.status, 401, 'the last access token is revoked')
  const replayed = await fetch(`${gateway.origin}/auth/refresh`, { method: 'POST', headers: { cookie: `${gateway.cookieName}=${rotated.value}`, origin: gateway.appOrigin } })
  t.equal(replayed.status, 401, 'the logged-out refresh token is dead')
  await page.reload()
  await page.waitForSelector('body[data-ready="true"]', { state: 'attached' })
  t.ok(await page.isVisible('#login-form'), 'a reload finds no session')
})

interface Attempt { status?: number, type?: string, body?: string, error?: string }
type AttackResult = Record<string, Attempt> & { readableCookie: string }

/** A page that, once loaded, tries everything against the gateway with the visitor's cookies, and keeps what it got in window.attack. */
function attackerPage (gateway: string): string {
  return `<!doctype html><title>totally harmless</title><script>
window.attack = (async () => {
  const attempt = async (path, init) => {
    try {
      const res = await fetch(${JSON.stringify(gateway)} + path, { credentials: 'include', ...init })
      return { status: res.status, type: res.type, body: await res.text() }
    } catch (err) {
      return { error: String(err) }
    }
  }
  const json = { 'content-type': 'application/json' }
  return {
    refresh: await attempt('/auth/refresh', { method: 'POST' }),
    refreshNoCors: await attempt('/auth/refresh', { method: 'POST', mode: 'no-cors' }),
    api: await attempt('/api/echo/hello', {}),
    login: await attempt('/auth/login', { method: 'POST', headers: json, body: JSON.stringify({ username: 'bob', password: ${JSON.stringify(PASSWORDS.bob)} }) }),
    loginNoCors: await attempt('/auth/login', { method: 'POST', mode: 'no-cors', headers: { 'content-type': 'text/plain' }, body: JSON.stringify({ username: 'bob', password: ${JSON.stringify(PASSWORDS.bob)} }) }),
    sessions: await attempt('/auth/sessions', {}),
    logoutNoCors: await attempt('/auth/logout', { method: 'POST', mode: 'no-cors' }),
    readableCookie: document.cookie
  }
})()
</script>`
}

async function startAttacker (t: Test, gateway: string): Promise<number> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
    res.end(attackerPage(gateway))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()) }))
  return (server.address() as AddressInfo).port
}

t.test('a page on an origin not in cors.origins reads nothing and cannot use the victim\'s cookie; the victim\'s session survives', { skip: browserSkip() }, async (t) => {
  const gateway = await startCrossOriginBrowserGateway(t)
  const context = await launchBrowser(t)
  const victim = context.pages()[0] ?? await context.newPage()
  await openApp(victim, gateway)
  await logIn(victim, 'alice')
  const [cookie] = await context.cookies()
  const port = await startAttacker(t, gateway.origin)

  // localhost on another port is the same site as the app: the browser sends
  // the victim's cookie along, and only CORS and the Origin check stand in the
  // way. 127.0.0.1 is another site: SameSite=Strict keeps the cookie home.
  for (const attackerOrigin of [`http://localhost:${port}`, `http://127.0.0.1:${port}`]) {
    const attacker = await context.newPage()
    const attackerTokens = watchAccessTokens(attacker)
    const answered = gateway.answers.length
    await attacker.goto(`${attackerOrigin}/`)
    const result = await attacker.evaluate(() => (globalThis as unknown as { attack: Promise<AttackResult> }).attack)
    await attacker.close()

    for (const name of ['refresh', 'api', 'login', 'sessions']) {
      t.match(result[name], { error: /TypeError|Failed to fetch/ }, `${attackerOrigin}: the CORS ${name} request fails, nothing readable`)
    }
    for (const name of ['refreshNoCors', 'loginNoCors', 'logoutNoCors']) {
      t.match(result[name], { status: 0, type: 'opaque', body: '' }, `${attackerOrigin}: the no-cors ${name} answer is opaque`)
    }
    t.equal(result.readableCookie, '')
    t.notMatch(JSON.stringify(result), /eyJ|access_token/, 'no token anywhere the attacker page can read')
    t.same(await attackerTokens(), [], 'the gateway handed the attacker page no token')

    const theirs = gateway.answers.slice(answered).filter((a) => a.origin === attackerOrigin)
    t.ok(theirs.length > 0, 'the attacks reached the gateway')
    for (const answer of theirs) {
      t.ok(answer.statusCode >= 400, `${answer.method} ${answer.url} from ${attackerOrigin} was refused (${answer.statusCode} ${answer.code ?? ''})`)
    }
    const cookieBorne = theirs.filter((a) => a.method === 'POST' && (a.url === '/auth/refresh' || a.url === '/auth/logout'))
    t.ok(cookieBorne.length >= 2, 'the no-cors refresh and logout were sent')
    for (const answer of cookieBorne) {
      if (answer.refreshCookie !== undefined) t.match(answer, { statusCode: 403, code: 'TG_CSRF', refreshCookie: cookie.value }, `${answer.url} with the victim's cookie: refused by the Origin check`)
    }
    if (attackerOrigin.includes('localhost')) t.ok(cookieBorne.every((a) => a.refreshCookie === cookie.value), 'same site: the browser did send the victim\'s cookie')
    else t.ok(cookieBorne.every((a) => a.refreshCookie === undefined), 'another site: SameSite=Strict kept the cookie from it')
    t.notOk(theirs.some((a) => a.url === '/auth/login' && a.statusCode === 200), 'no login from the attacker page succeeded (no login CSRF)')
  }

  t.same((await context.cookies()).map((c) => c.value), [cookie.value], 'the victim\'s refresh cookie is untouched')
  t.match((await callApi(victim)).status, /^GET \/api\/echo\/hello → 200/, 'the victim is still logged in')
  await victim.reload()
  await victim.waitForSelector('body[data-ready="true"]', { state: 'attached' })
  t.ok(await victim.isVisible('#session'), 'and the refresh token still works: the attacks burned nothing')
  t.match(exchanges(gateway.answers).filter((a) => a.url === '/auth/refresh').at(-1), { statusCode: 200, origin: gateway.appOrigin, refreshCookie: cookie.value })
})
