import { spawn, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import t from 'tap'
import type { Test } from 'tap'
import { PASSWORDS, writeTestConfig } from './helpers/gateway.js'
import { decodeJwt } from './helpers/lifecycle.js'
import { waitFor as eventually } from './helpers/wait-for.js'
import { closedPort, startUpstream } from './helpers/upstream.js'

// The embedded store is the default: a restart — here the worst one, kill -9
// — must bring back no revoked token and lose no live session. Everything runs
// against the real `gateway` bin on one store file.

const BIN = join(__dirname, '..', 'bin', 'gateway.js')

interface Tokens { access: string, refresh: string }

function startBin (t: Test, file: string): { child: ChildProcess, listening: Promise<void> } {
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let logs = ''
  child.stdout?.on('data', (c) => { logs += String(c) })
  child.stderr?.on('data', (c) => { logs += String(c) })
  return { child, listening: eventually('the gateway listens', () => logs.includes('Server listening'), 400, 50) }
}

t.test('after kill -9 and a restart on the same file, revoked stays revoked and live stays live', async (t) => {
  const up = await startUpstream(t)
  const port = await closedPort()
  const { file } = await writeTestConfig({
    server: { host: '127.0.0.1', port },
    // A long grace window so that it is still open after the restart.
    tokens: { reuseGrace: '5m' },
    auth: { loginRateLimit: { max: 10_000, timeWindow: '1m' } },
    routes: [{ prefix: '/api', upstream: up.url }]
  })
  const base = `http://127.0.0.1:${port}`
  const post = async (path: string, body: Record<string, unknown>, bearer?: string): Promise<{ status: number, json: Record<string, unknown> }> => {
    const res = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(bearer === undefined ? {} : { authorization: `Bearer ${bearer}` }) },
      body: JSON.stringify(body)
    })
    const text = await res.text()
    return { status: res.status, json: text === '' ? {} : JSON.parse(text) as Record<string, unknown> }
  }
  const login = async (username: keyof typeof PASSWORDS): Promise<Tokens> => {
    const res = await post('/auth/login', { username, password: PASSWORDS[username], transport: 'body' })
    t.equal(res.status, 200, `${username} logs in`)
    return { access: String(res.json.access_token), refresh: String(res.json.refresh_token) }
  }
  const refresh = async (token: string): Promise<{ status: number, tokens: Tokens }> => {
    const res = await post('/auth/refresh', { refresh_token: token })
    return { status: res.status, tokens: { access: String(res.json.access_token), refresh: String(res.json.refresh_token) } }
  }
  const api = async (access: string): Promise<number> => (await fetch(`${base}/api/x`, { headers: { authorization: `Bearer ${access}` } })).status

  const first = startBin(t, file)
  await first.listening

  const admin = await login('alice')
  const loggedOut = await login('bob')
  t.equal((await post('/auth/logout', {}, loggedOut.access)).status, 204)
  const allA = await login('carol')
  const allB = await login('carol')
  t.equal((await post('/auth/logout-all', {}, allA.access)).status, 204)
  const reused = await login('bob')
  const r1 = await refresh(reused.refresh)
  const r2 = await refresh(r1.tokens.refresh)
  t.equal(r2.status, 200)
  t.equal((await refresh(reused.refresh)).status, 401, 'a token two rotations back is reuse')
  const byJti = await login('bob')
  const bySid = await login('bob')
  const bySub = await login('carol')
  t.equal((await post('/admin/revoke', { jti: decodeJwt(byJti.access).payload.jti }, admin.access)).status, 200)
  t.equal((await post('/admin/revoke', { sid: decodeJwt(bySid.access).payload.sid }, admin.access)).status, 200)
  t.equal((await post('/admin/revoke', { sub: decodeJwt(bySub.access).payload.sub }, admin.access)).status, 200)
  const revoked = { logout: loggedOut.access, 'logout-all A': allA.access, 'logout-all B': allB.access, reuse: r2.tokens.access, jti: byJti.access, sid: bySid.access, sub: bySub.access }
  for (const [how, access] of Object.entries(revoked)) t.equal(await api(access), 401, `revoked by ${how} before the restart`)

  const live = await login('alice')
  const liveNext = await refresh(live.refresh)
  const graced = await login('alice')
  const gracedNext = await refresh(graced.refresh)
  const rotatedOut = await login('alice')
  const ro1 = await refresh(rotatedOut.refresh)
  const ro2 = await refresh(ro1.tokens.refresh)
  t.equal(await api(liveNext.tokens.access), 200)

  first.child.kill('SIGKILL')
  await new Promise((resolve) => first.child.once('exit', resolve))
  const second = startBin(t, file)
  await second.listening

  for (const [how, access] of Object.entries(revoked)) t.equal(await api(access), 401, `revoked by ${how}: still 401 after kill -9`)
  t.equal(await api(liveNext.tokens.access), 200, 'a live access token still works')
  const again = await refresh(liveNext.tokens.refresh)
  t.equal(again.status, 200, 'a live session still refreshes')
  t.equal(await api(again.tokens.access), 200)
  t.equal((await refresh(admin.refresh)).status, 200, 'the admin session still refreshes')

  const grace = await refresh(graced.refresh)
  t.equal(grace.status, 200, 'a token inside its grace window is still accepted')
  t.equal(grace.tokens.refresh, gracedNext.tokens.refresh, 'and gets the same successor as before the restart')

  t.equal((await refresh(rotatedOut.refresh)).status, 401, 'a rotated-out token does not work again')
  t.equal((await refresh(ro2.tokens.refresh)).status, 401, 'and presenting it ended its family')
  t.equal((await refresh(loggedOut.refresh)).status, 401, 'a logged-out refresh token stays dead')
  t.equal((await refresh(allB.refresh)).status, 401, 'so does one ended by logout-all')
})
