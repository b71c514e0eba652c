// The tokengate example browser app: log in, call a proxied API, refresh
// silently, log out. No build step, no dependencies.
//
// The access token lives in this module's memory only: never in
// localStorage, sessionStorage or a readable cookie, where any script that
// ever runs on this origin could take it. A reload forgets it; the refresh
// cookie (HttpOnly, SameSite=Strict, Path=/auth), which this script cannot
// read and never needs to, gets a new one.

const API = '/api/echo/hello'

// Where the gateway is. Empty: this page's own origin (the gateway serves the
// app under /app). Otherwise the server that served this page wrote the
// gateway's origin here, and every call below is a CORS request to it; the
// gateway lists this page's origin in cors.origins. `credentials: 'include'`
// makes the browser send and keep the refresh cookie across origins (on the
// same site only: the cookie is SameSite=Strict).
const GATEWAY = document.querySelector('meta[name="tokengate-gateway"]')?.content ?? ''

let accessToken = null
/** The refresh in flight, so parallel 401s in one tab share one refresh. */
let refreshing = null

const $ = (id) => document.getElementById(id)

async function problem (res) {
  try {
    const body = await res.json()
    return body.message ?? `${res.status} ${res.statusText}`
  } catch {
    return `${res.status} ${res.statusText}`
  }
}

/** The token's claims, for display only: the gateway verifies it, not us. */
function claims (token) {
  const part = token.split('.')[1].replaceAll('-', '+').replaceAll('_', '/')
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0))))
}

async function login (username, password) {
  // Without "transport": "body" the gateway sets the refresh token as a cookie.
  const res = await fetch(`${GATEWAY}/auth/login`, {
    method: 'POST',
    credentials: 'include',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password })
  })
  if (!res.ok) throw new Error(await problem(res))
  accessToken = (await res.json()).access_token
}

/** Trades the refresh cookie for a new access token; false when the session is over. */
function refresh () {
  refreshing ??= (async () => {
    try {
      // No body: the browser sends the cookie (and its Origin, which the gateway checks).
      const res = await fetch(`${GATEWAY}/auth/refresh`, { method: 'POST', credentials: 'include' })
      accessToken = res.ok ? (await res.json()).access_token : null
      return accessToken !== null
    } catch {
      return false
    } finally {
      refreshing = null
    }
  })()
  return refreshing
}

/** Calls the API with the access token; on a 401, refreshes once and retries once. */
async function callApi (path) {
  // The access token goes in the header; no cookie is needed (or sent: it is scoped to /auth).
  const send = () => fetch(`${GATEWAY}${path}`, { headers: accessToken === null ? {} : { authorization: `Bearer ${accessToken}` } })
  const first = await send()
  if (first.status !== 401) return { res: first, refreshed: false }
  if (!await refresh()) return { res: first, refreshed: false }
  return { res: await send(), refreshed: true }
}

async function logout () {
  try {
    // The cookie ends the session even when the access token has expired.
    await fetch(`${GATEWAY}/auth/logout`, { method: 'POST', credentials: 'include', headers: accessToken === null ? {} : { authorization: `Bearer ${accessToken}` } })
  } finally {
    accessToken = null
  }
}

function showLogin (message = '') {
  $('session').hidden = true
  $('login-form').hidden = false
  $('login-error').textContent = message
  $('output').textContent = ''
  $('status').textContent = ''
}

function showSession () {
  const { username, name } = claims(accessToken)
  $('who').textContent = name ? `${name} (${username})` : username
  $('login-form').hidden = true
  $('login-error').textContent = ''
  $('session').hidden = false
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault()
  try {
    await login($('username').value, $('password').value)
    $('password').value = ''
    showSession()
  } catch (err) {
    showLogin(err.message)
  }
})

$('call').addEventListener('click', async () => {
  const output = $('output')
  const { res, refreshed } = await callApi(API)
  if (res.status === 401) {
    showLogin('Your session has ended: log in again.')
  } else {
    $('status').textContent = `GET ${API} → ${res.status}${refreshed ? ' (after a silent refresh)' : ''}`
    output.textContent = res.ok ? await res.text() : await problem(res)
  }
  output.dataset.calls = String(Number(output.dataset.calls) + 1)
})

$('logout').addEventListener('click', async () => {
  await logout()
  showLogin('Logged out.')
})

// A new tab or a reload has no access token yet: the refresh cookie, if any, brings one.
if (await refresh()) showSession()
else showLogin()
document.body.dataset.ready = 'true'
