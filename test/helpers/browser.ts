import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import type { IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import type { Test } from 'tap'
import { buildGateway } from '../../src/build-gateway.js'
import { createEchoUpstream, EXAMPLE_APP_PATH } from '../../src/demo/demo-upstream.js'
import { createExampleAppServer } from '../../src/demo/example-app.js'
import { refreshCookie } from '../../src/tokens/refresh-cookie.js'
import { PASSWORDS, testConfig, type ConfigOverrides } from './gateway.js'
import { mergeConfig } from './lifecycle.js'

// The example browser app in Debian's Chromium, driven by playwright-core:
// the gateway listens on a real port, the demo upstream serves the app and
// echoes API calls, and the test clicks through the app as a person would.

/** Debian's Chromium (`apt-get install chromium`); CHROMIUM_PATH points elsewhere. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--disable-quic', '--no-first-run'
]

/**
 * The few browser globals the tests read inside a page. The test program is
 * compiled without the DOM library (it would change Node's global types for
 * every file), so functions run in the page name them through this.
 */
export interface PageGlobals {
  document: { cookie: string, getElementById (id: string): { dataset: Record<string, string | undefined> } | null }
  localStorage: Record<string, string>
  sessionStorage: Record<string, string>
}

/** Where a person can look at what the browser saw (git-ignored). */
export const OUTPUT_DIR = join(__dirname, '..', '..', 'test-output', 'browser')

/**
 * Why the browser tests cannot run here, or false when they can. In CI they
 * must run (.ci/run installs Chromium), so there a missing browser fails the
 * launch instead of skipping it.
 */
export function browserSkip (): string | false {
  if (existsSync(CHROMIUM) || process.env.CI === 'true') return false
  return `SKIPPED: browser tests need Chromium at ${CHROMIUM} (apt-get install -y chromium)`
}

/** A fresh headless Chromium with a user-data dir of its own, closed and removed in teardown. */
export async function launchBrowser (t: Test): Promise<BrowserContext> {
  const userDataDir = mkdtempSync(join(tmpdir(), 'tokengate-chromium-'))
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 960, height: 720 }
  }).catch((err: unknown) => {
    rmSync(userDataDir, { recursive: true, force: true })
    throw err
  })
  t.teardown(async () => {
    await context.close()
    rmSync(userDataDir, { recursive: true, force: true })
  })
  context.setDefaultTimeout(15_000)
  return context
}

/** What the gateway answered, recorded as it answered. */
export interface GatewayAnswer {
  method: string
  url: string
  statusCode: number
  /** `code` of the gateway's own JSON error answers */
  code?: string
  origin?: string
  /** the refresh cookie the request carried */
  refreshCookie?: string
}

export interface SeenUpstream {
  url: string
  headers: IncomingHttpHeaders
}

export interface BrowserGateway {
  app: FastifyInstance
  /** http://127.0.0.1:port, the gateway's own origin */
  origin: string
  appUrl: string
  cookieName: string
  answers: GatewayAnswer[]
  /** API calls that reached the demo upstream (not the app's files) */
  upstreamSeen: SeenUpstream[]
}

/**
 * The gateway on a real port with the example config's two browser routes:
 * /app (the app, no auth) and /api/echo (required), both to the demo upstream.
 * `prepare` may add hooks before the gateway starts.
 */
export async function startBrowserGateway (t: Test, overrides: ConfigOverrides = {}, prepare?: (app: FastifyInstance) => void): Promise<BrowserGateway> {
  const { upstreamUrl, upstreamSeen } = await startDemoUpstream(t)
  const { app, cookieName, answers } = await startRecordingGateway(t, mergeConfig({
    routes: [
      { prefix: '/app', upstream: upstreamUrl, rewritePrefix: '/app', auth: 'none' },
      { prefix: '/api/echo', upstream: upstreamUrl, auth: 'required' }
    ]
  }, overrides), prepare)
  const origin = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
  return { app, origin, appUrl: `${origin}${EXAMPLE_APP_PATH}`, cookieName, answers, upstreamSeen }
}

export interface CrossOriginBrowserGateway extends BrowserGateway {
  /** http://localhost:port of the server that serves the app (listed in cors.origins) */
  appOrigin: string
}

/**
 * The app on an origin of its own, http://localhost:A, served by the example
 * app server (src/demo/example-app.ts) and told the gateway's origin,
 * http://localhost:B: another origin on the same site, as
 * https://app.example.com and https://api.example.com are. The gateway lists
 * the app's origin in cors.origins with credentials and routes only
 * /api/echo; the app's files never pass through it.
 */
export async function startCrossOriginBrowserGateway (t: Test, overrides: ConfigOverrides = {}): Promise<CrossOriginBrowserGateway> {
  const { upstreamUrl, upstreamSeen } = await startDemoUpstream(t)
  // The gateway's port is known only once it listens; the app server reads this on every request.
  const appServerOptions = { gatewayOrigin: '' }
  const appServer = createExampleAppServer(appServerOptions)
  await new Promise<void>((resolve) => appServer.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { appServer.closeAllConnections(); appServer.close(() => resolve()) }))
  const appOrigin = `http://localhost:${(appServer.address() as AddressInfo).port}`
  const { app, cookieName, answers } = await startRecordingGateway(t, mergeConfig({
    cors: { origins: [appOrigin], credentials: true },
    routes: [{ prefix: '/api/echo', upstream: upstreamUrl, auth: 'required' }]
  }, overrides))
  const origin = `http://localhost:${(app.server.address() as AddressInfo).port}`
  appServerOptions.gatewayOrigin = origin
  return { app, origin, appOrigin, appUrl: `${appOrigin}${EXAMPLE_APP_PATH}`, cookieName, answers, upstreamSeen }
}

async function startDemoUpstream (t: Test): Promise<{ upstreamUrl: string, upstreamSeen: SeenUpstream[] }> {
  const upstream = createEchoUpstream()
  const upstreamSeen: SeenUpstream[] = []
  upstream.on('request', (req) => {
    if (!(req.url ?? '').startsWith(EXAMPLE_APP_PATH.slice(0, -1))) upstreamSeen.push({ url: req.url ?? '', headers: req.headers })
  })
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { upstream.closeAllConnections(); upstream.close(() => resolve()) }))
  return { upstreamUrl: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`, upstreamSeen }
}

/** The gateway listening on 127.0.0.1, recording every answer it gives. */
async function startRecordingGateway (t: Test, overrides: ConfigOverrides, prepare?: (app: FastifyInstance) => void): Promise<{ app: FastifyInstance, cookieName: string, answers: GatewayAnswer[] }> {
  const loaded = await testConfig(overrides)
  const cookieName = refreshCookie(loaded.config.auth.cookie).name
  const app = await buildGateway(loaded)
  t.teardown(() => app.close())
  const answers: GatewayAnswer[] = []
  // The gateway's own JSON errors pass through onSend; proxied answers are
  // written straight to the socket (src/proxy/upstream-forwarder.ts), so every
  // answer is recorded once it has gone out, in onResponse.
  const codes = new WeakMap<FastifyRequest, string>()
  app.addHook('onSend', async (request, reply, payload) => {
    if (typeof payload === 'string' && reply.statusCode >= 400) {
      const { code } = JSON.parse(payload) as { code?: string }
      if (code !== undefined) codes.set(request, code)
    }
    return payload
  })
  app.addHook('onResponse', async (request, reply) => {
    const answer: GatewayAnswer = { method: request.method, url: request.url, statusCode: reply.statusCode }
    const code = codes.get(request)
    if (code !== undefined) answer.code = code
    if (request.headers.origin !== undefined) answer.origin = request.headers.origin
    if (request.cookies[cookieName] !== undefined) answer.refreshCookie = request.cookies[cookieName]
    answers.push(answer)
  })
  prepare?.(app)
  await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, cookieName, answers }
}

/** Opens the app and waits for its start-up refresh attempt to settle. */
export async function openApp (page: Page, gateway: BrowserGateway): Promise<void> {
  await page.goto(gateway.appUrl)
  await page.waitForSelector('body[data-ready="true"]', { state: 'attached' })
}

export async function logIn (page: Page, username: keyof typeof PASSWORDS): Promise<void> {
  await page.fill('#username', username)
  await page.fill('#password', PASSWORDS[username])
  await page.click('#login')
  await page.waitForSelector('#session', { state: 'visible' })
}

export interface CallResult {
  status: string
  output: string
  loggedIn: boolean
}

/** Clicks the app's API button and waits for the app to finish with the answer. */
export async function callApi (page: Page): Promise<CallResult> {
  const before = Number(await page.getAttribute('#output', 'data-calls'))
  await page.click('#call')
  await page.waitForFunction((n) => Number((globalThis as unknown as PageGlobals).document.getElementById('output')?.dataset.calls) > n, before)
  return {
    status: await page.textContent('#status') ?? '',
    output: await page.textContent('#output') ?? '',
    loggedIn: await page.isVisible('#session')
  }
}

/** What the page's scripts can read: both web storages and document.cookie. */
export async function readableByScripts (page: Page): Promise<{ localStorage: [string, string][], sessionStorage: [string, string][], cookie: string }> {
  return page.evaluate(() => {
    const { localStorage, sessionStorage, document } = globalThis as unknown as PageGlobals
    return { localStorage: Object.entries(localStorage), sessionStorage: Object.entries(sessionStorage), cookie: document.cookie }
  })
}

/** Every access token the gateway handed to this page (login and refresh answers), in order. */
export function watchAccessTokens (page: Page): () => Promise<string[]> {
  const tokens: Promise<string | undefined>[] = []
  page.on('response', (res) => {
    const path = new URL(res.url()).pathname
    if (res.status() === 200 && (path === '/auth/login' || path === '/auth/refresh')) {
      tokens.push(res.json().then((body: { access_token?: string }) => body.access_token, () => undefined))
    }
  })
  return async () => (await Promise.all(tokens)).filter((token): token is string => token !== undefined)
}

/** Asserts that no script on the page can read an access token or the refresh token. */
export async function assertNothingReadable (t: Test, page: Page, step: string, secrets: readonly string[]): Promise<void> {
  const readable = await readableByScripts(page)
  t.same(readable.localStorage, [], `${step}: localStorage is empty`)
  t.same(readable.sessionStorage, [], `${step}: sessionStorage is empty`)
  t.equal(readable.cookie, '', `${step}: document.cookie shows nothing`)
  const all = JSON.stringify(readable)
  t.ok(secrets.every((secret) => !all.includes(secret)), `${step}: no token in anything a script can read`)
}

/** The `exp` of an access token, in milliseconds. */
export function expiresAtMs (token: string): number {
  const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8')) as { exp: number }
  return payload.exp * 1000
}
