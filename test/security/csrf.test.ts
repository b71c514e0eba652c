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
