import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { stringify, parse } from 'yaml'
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose'
import { login, writeTestConfig, writeEs256Key } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'
import { freePort } from '../helpers/redis-server.js'
import { waitFor } from '../helpers/wait-for.js'
import { buildGateway } from '../../src/build-gateway.js'
import { checkConfig, loadConfig } from '../../src/config/load-config.js'
import { formatIssue } from '../../src/config/yaml-source.js'
import { ASSERTION_TYP, IdentityAssertions, type AssertionPlan } from '../../src/proxy/identity-assertion.js'
import type { AccessClaims } from '../../src/tokens/access-token.js'

// The signed identity assertion, end to end: the backend from the README
// (examples/verify-assertion/server.mjs, run as it is) verifies it with the
// gateway's JWKS; the rest checks what it carries, that it is cached per
// token and route, that it expires, and that keys in rotation both verify.

const EXAMPLE = join(__dirname, '../../examples/verify-assertion/server.mjs')

t.test('identity assertion', async (t) => {
  const backendPort = await freePort()
  const backendUrl = `http://127.0.0.1:${backendPort}`
  const recorder = await startUpstream(t)
  const { file, dir } = await writeTestConfig({
    identity: { assertion: { ttl: '60s' } },
    routes: [
      { prefix: '/api', upstream: backendUrl },
      { prefix: '/plain', upstream: backendUrl, assertion: false },
      { prefix: '/elsewhere', upstream: backendUrl, assertion: { audience: 'https://orders.internal' } },
      { prefix: '/rec', upstream: recorder.url, assertion: { ttl: '30s' } }
    ]
  })
  const app = await buildGateway(loadConfig(file, {}))
  t.teardown(() => app.close())
  await app.listen({ port: 0, host: '127.0.0.1' })
  const gateway = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`

  const backend = spawn(process.execPath, [EXAMPLE], {
    // No AUDIENCE: the example's default, its own origin, is the route's upstream origin.
    env: { ...process.env, PORT: String(backendPort), JWKS_URL: `${gateway}/.well-known/jwks.json` },
    stdio: 'inherit'
  })
  t.teardown(() => { backend.kill() })
  await waitFor('the README backend to listen', async () => (await fetch(backendUrl)).status === 401)

  const { access_token: token } = await login(app, 'bob')
  const get = async (path: string, headers: Record<string, string> = {}): Promise<Response> =>
    await fetch(`${gateway}${path}`, { headers: { authorization: `Bearer ${token}`, ...headers } })

  t.test('the README backend verifies it with the JWKS', async (t) => {
    const res = await get('/api/hello')
    t.equal(res.status, 200)
    t.same(await res.json(), { sub: 'u-2', roles: ['user'], scope: 'orders:read' })
    t.equal((await get('/api/again')).status, 200)
    const metrics = await (await fetch(`${gateway}/metrics`)).text()
    t.match(metrics, /tokengate_identity_assertions_signed_total\{route="\/api"\} 1\n/, 'two requests, one signature')
  })

  t.test('an upstream without it, or for another audience, refuses', async (t) => {
    t.equal((await get('/plain/x')).status, 401, 'assertion off on this route: the backend gets none')
    t.equal((await get('/elsewhere/x')).status, 401, 'aud is https://orders.internal, not the backend')
  })

  t.test('it carries the identity, its own jti and the token\'s, and lives ttl, never beyond the token', async (t) => {
    await get('/rec/a')
    await get('/rec/b')
    const [first, second] = recorder.seen.map((s) => s.headers['x-tokengate-assertion'] as string)
    t.equal(first, second, 'cached: the same assertion for the same token and route')
    t.match(decodeProtectedHeader(first), { alg: 'ES256', typ: ASSERTION_TYP, kid: 'test-1' })
    const claims = decodeJwt(first)
    const original = decodeJwt(token)
    t.match(claims, { iss: 'tokengate', aud: recorder.url, sub: 'u-2', sid: original.sid, token_jti: original.jti, token_iss: 'tokengate', roles: ['user'], scope: 'orders:read' })
    t.not(claims.jti, original.jti, 'its own jti')
    t.equal((claims.exp ?? 0) - (claims.iat ?? 0), 30, 'the route\'s ttl')
    t.ok((claims.exp ?? 0) <= (original.exp ?? 0))
    const verified = await jwtVerify(first, createRemoteJWKSet(new URL(`${gateway}/.well-known/jwks.json`)), { issuer: 'tokengate', audience: recorder.url, typ: ASSERTION_TYP })
    t.equal(verified.payload.sub, 'u-2')
  })

  t.test('a client cannot send one: stripped where it is on and where it is off', async (t) => {
    const stolen = recorder.seen[0].headers['x-tokengate-assertion'] as string
    t.equal((await get('/plain/x', { 'x-tokengate-assertion': stolen })).status, 401, 'a replayed assertion never reaches the backend')
    recorder.seen.length = 0
    await get('/rec/c', { 'X-Tokengate-Assertion': 'forged', X_TOKENGATE_ASSERTION: 'forged' })
    t.equal(recorder.seen[0].headers['x-tokengate-assertion'], stolen, 'ours replaces the client\'s')
    t.notOk(recorder.seen[0].rawHeaders.includes('forged'))
  })

  t.test('keys in rotation: the JWKS serves the current and the previous key, and both verify', async (t) => {
    const before = recorder.seen[0].headers['x-tokengate-assertion'] as string
    writeEs256Key(dir, 'k2.pem')
    const rotated = parse(readFileSync(file, 'utf8')) as { tokens: { keys: unknown[] } }
    rotated.tokens.keys = [{ kid: 'k2', privateKey: './k2.pem' }, { kid: 'test-1', privateKey: './signing.pem' }]
    const rotatedFile = join(dir, 'rotated.yaml')
    writeFileSync(rotatedFile, stringify(rotated))
    const next = await buildGateway(loadConfig(rotatedFile, {}))
    t.teardown(() => next.close())
    await next.listen({ port: 0, host: '127.0.0.1' })
    const nextUrl = `http://127.0.0.1:${(next.server.address() as { port: number }).port}`
    const { keys } = await (await fetch(`${nextUrl}/.well-known/jwks.json`)).json() as { keys: Array<{ kid: string }> }
    t.same(keys.map((k) => k.kid), ['k2', 'test-1'])
    recorder.seen.length = 0
    const fresh = await login(next, 'bob')
    await fetch(`${nextUrl}/rec/x`, { headers: { authorization: `Bearer ${fresh.access_token}` } })
    const after = recorder.seen[0].headers['x-tokengate-assertion'] as string
    t.equal(decodeProtectedHeader(after).kid, 'k2', 'signed with the new current key')
    const jwks = createRemoteJWKSet(new URL(`${nextUrl}/.well-known/jwks.json`))
    for (const assertion of [before, after]) {
      t.equal((await jwtVerify(assertion, jwks, { issuer: 'tokengate', audience: recorder.url, typ: ASSERTION_TYP })).payload.sub, 'u-2')
    }
  })
})

t.test('assertions are made once per token, re-made at half their life, never outlive the token, and are bounded', async (t) => {
  const plan: AssertionPlan = { header: 'x-tokengate-assertion', ttlMs: 60_000, audience: 'http://up', issuer: 'tokengate' }
  const made: Array<Record<string, unknown>> = []
  const assertions = new IdentityAssertions(plan, (payload) => { made.push(payload); return `a${made.length}` }, () => {}, 2)
  const now = 1_700_000_000_000
  const iat = now / 1000
  const claims = (exp: number, sub = 'u'): AccessClaims => Object.freeze({ iss: 'tokengate', aud: 'api', sub, sid: 's', jti: `j-${sub}`, iat, exp, scope: '', roles: [], username: sub })
  const long = claims(iat + 900)
  t.equal(assertions.for(long, now), 'a1')
  t.equal(assertions.for(long, now + 29_000), 'a1', 'cached before half its life')
  t.equal(assertions.for(long, now + 30_000), 'a2', 're-made at half its life')
  t.equal(made[1].exp, iat + 30 + 60)
  const short = claims(iat + 10, 'v')
  t.equal(assertions.for(short, now), 'a3')
  t.equal(made[2].exp, iat + 10, 'capped at the token\'s exp')
  t.equal(assertions.for(short, now + 9_000), 'a3', 'a capped one is not re-made: it could not live longer')
  assertions.for(claims(iat + 900, 'w'), now)
  t.equal(assertions.size, 2, 'the oldest goes when full')
  t.equal(assertions.signed, 4)
  const external = Object.freeze({ ...long, sid: '', iss: 'https://idp.example' })
  assertions.for(external, now)
  t.equal(made[4].sid, undefined, 'a trusted issuer\'s token has no gateway session')
  t.equal(made[4].token_iss, 'https://idp.example')
  t.equal(made[4].iss, 'tokengate', 'the gateway signs it, so it is the issuer')
})

t.test('the README shows the backend the test runs, as it is', async (t) => {
  const readme = readFileSync(join(__dirname, '../../README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('### A signed identity for upstreams'))
  const block = /```js\n([\s\S]*?)```/.exec(section)?.[1]
  t.equal(block, readFileSync(EXAMPLE, 'utf8'))
  // Its default port is not the one npm start's demo upstream takes.
  const demoPort = /DEMO_PORT:-(\d+)/.exec(readFileSync(join(__dirname, '../../gateway.config.yaml'), 'utf8'))?.[1]
  t.ok(demoPort !== undefined && !readFileSync(EXAMPLE, 'utf8').includes(`PORT ?? ${demoPort})`), `not the demo upstream's port ${String(demoPort)}`)
  // and its config example is a valid config (with a users file added)
  const yaml = /```yaml\n([\s\S]*?)```/.exec(section)?.[1] ?? ''
  const { dir } = await writeTestConfig()
  const file = join(dir, 'readme.yaml')
  writeFileSync(file, `${yaml}auth: { users: { file: ./users.yaml } }\n`)
  const { issues } = checkConfig(file, {})
  t.same(issues.map(formatIssue), [])
})
