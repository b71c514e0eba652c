import t, { type Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { PASSWORDS, startGateway } from '../helpers/gateway.js'

// A foreign page can make the browser send the refresh cookie, but it cannot
// choose the Origin header. Each shape of cross-site request is refused with
// 403 and burns nothing: the same cookie still refreshes from our origin.

async function victim (t: Test): Promise<{ app: FastifyInstance, cookie: string }> {
  const { app } = await startGateway(t, { auth: { loginRateLimit: { max: 1000, timeWindow: '1m' } } })
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'bob', password: PASSWORDS.bob } })
  const line = ([] as string[]).concat(res.headers['set-cookie'] ?? []).find((c) => c.startsWith('tg_refresh='))
  return { app, cookie: line?.split(';')[0] ?? '' }
}

// [name, path, headers, body, expected status, expected code]
const attacks: Array<[string, string, Record<string, string>, string | undefined, number, string]> = [
  ['cookie refresh from a foreign Origin', '/auth/refresh', { origin: 'https://evil.example' }, undefined, 403, 'TG_CSRF'],
  ['cookie refresh from a look-alike Origin', '/auth/refresh', { origin: 'http://localhost.evil.example' }, undefined, 403, 'TG_CSRF'],
  ['cookie refresh with Sec-Fetch-Site: cross-site', '/auth/refresh', { origin: 'http://localhost', 'sec-fetch-site': 'cross-site' }, undefined, 403, 'TG_CSRF'],
  ['cookie refresh with no Origin (form post from an old browser)', '/auth/refresh', {}, undefined, 403, 'TG_CSRF'],
  // A simple request's text/plain body is not the endpoint's JSON schema: refused before the cookie is looked at.
  ['cookie refresh as a text/plain simple request', '/auth/refresh', { origin: 'https://evil.example', 'content-type': 'text/plain' }, '{}', 400, 'TG_VALIDATION'],
  ['cookie logout from a foreign Origin', '/auth/logout', { origin: 'https://evil.example' }, undefined, 403, 'TG_CSRF']
]

for (const [name, url, headers, payload, status, code] of attacks) {
  t.test(name, async (t) => {
    const { app, cookie } = await victim(t)
    const res = await app.inject({ method: 'POST', url, headers: { ...headers, cookie }, ...(payload === undefined ? {} : { payload }) })
    t.equal(res.statusCode, status)
    t.match(res.json(), { code })
    t.equal(res.headers['access-control-allow-origin'], undefined)
    t.equal(res.headers['set-cookie'], undefined, 'no new token, nothing cleared')
    const still = await app.inject({ method: 'POST', url: '/auth/refresh', headers: { origin: 'http://localhost', cookie } })
    t.equal(still.statusCode, 200, 'the victim\'s refresh token was not burned')
  })
}

// Login CSRF: a foreign page logging the victim's browser into the attacker's
// account (its refresh cookie then rides on every later request). /auth/login
// checks no Origin; its defence is its JSON-only body: the bodies a page can
// send cross-site without a preflight (a form, text/plain) are refused before
// any login, and a JSON body needs a preflight, which an unlisted origin does
// not get approved.
t.test('login as a cross-site simple request sets no cookie', async (t) => {
  const { app } = await startGateway(t, { cors: { origins: ['https://app.example.com'], credentials: true }, auth: { loginRateLimit: { max: 1000, timeWindow: '1m' } } })
  const json = JSON.stringify({ username: 'bob', password: PASSWORDS.bob })
  const simple: Array<[string, string, number]> = [
    ['application/x-www-form-urlencoded', `username=bob&password=${PASSWORDS.bob}`, 415],
    ['multipart/form-data; boundary=b', `--b\r\ncontent-disposition: form-data; name="username"\r\n\r\nbob\r\n--b--\r\n`, 415],
    ['text/plain', json, 400]
  ]
  for (const [type, payload, status] of simple) {
    const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site', 'content-type': type }, payload })
    t.equal(res.statusCode, status, type)
    t.equal(res.headers['set-cookie'], undefined, `${type}: no refresh cookie`)
    t.notMatch(res.body, 'access_token', `${type}: no token`)
  }
  const preflight = await app.inject({ method: 'OPTIONS', url: '/auth/login', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } })
  t.not(preflight.statusCode, 204, 'the JSON login\'s preflight is not approved for an unlisted origin')
  t.equal(preflight.headers['access-control-allow-origin'], undefined)
  t.equal(preflight.headers['access-control-allow-headers'], undefined)
})
