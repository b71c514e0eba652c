import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { checkConfig } from '../../src/config/load-config.js'
import { formatIssue } from '../../src/config/yaml-source.js'
import { startUpstream } from '../helpers/upstream.js'
import { startGateway, writeTestConfig } from '../helpers/gateway.js'

// CORS settings that would let a foreign page read answers made with the
// user's credentials are refused at start, naming file:line:col and key;
// origin look-alikes never get CORS headers.

async function issuesFor (corsYaml: string): Promise<string> {
  const { dir } = await writeTestConfig()
  const file = join(dir, 'cors.yaml')
  writeFileSync(file, `tokens: { algorithm: ES256, keys: [{ kid: k, privateKey: ./signing.pem }] }\nauth: { users: { file: ./users.yaml } }\n${corsYaml}\n`)
  return checkConfig(file, {}).issues.map(formatIssue).join('\n')
}

t.test('cors misconfig: "*" with credentials', async (t) => {
  t.match(await issuesFor('cors:\n  origins: ["*"]\n  credentials: true'), /cors\.yaml:4:\d+ cors\.origins\[0\] may not be "\*" with credentials: true/)
})

t.test('cors misconfig: a route inheriting "*" and turning credentials on', async (t) => {
  t.match(await issuesFor('cors: { origins: ["*"] }\nroutes:\n  - { prefix: /api, upstream: "http://127.0.0.1:1", cors: { credentials: true } }'), /cors\.yaml:\d+:\d+ routes\[0\]\.cors\.credentials may not be "\*" with credentials: true/)
})

t.test('cors misconfig: the null origin', async (t) => {
  t.match(await issuesFor('cors: { origins: ["null"] }'), /cors\.origins\[0\] may not be "null"/)
})

t.test('cors misconfig: a wildcard inside a label or after the host', async (t) => {
  const issues = await issuesFor('cors: { origins: ["https://app*.example.com", "https://example.*", "*.example.com"] }')
  t.match(issues, /cors\.origins\[0\] a wildcard may only stand for whole leftmost host labels/)
  t.match(issues, /cors\.origins\[1\] a wildcard may only stand/)
  t.match(issues, /cors\.origins\[2\] a wildcard may only stand/)
})

t.test('cors misconfig: a path, a trailing slash, upper case, a default port', async (t) => {
  const issues = await issuesFor('cors: { origins: ["https://app.example.com/", "https://app.example.com/app", "https://App.example.com", "https://app.example.com:443"] }')
  t.match(issues, /cors\.origins\[0\] must be an origin without a trailing slash/)
  t.match(issues, /cors\.origins\[1\] must be an origin/)
  t.match(issues, /cors\.origins\[2\] must be lower case/)
  t.match(issues, /cors\.origins\[3\] names the default port/)
})

t.test('cors misconfig: a route override with no origins to inherit', async (t) => {
  t.match(await issuesFor('routes:\n  - { prefix: /api, upstream: "http://127.0.0.1:1", cors: { credentials: true } }'), /routes\[0\]\.cors needs origins/)
})

const APP = 'https://app.example.com'
for (const [trick, origin] of [
  ['a suffix look-alike', 'https://app.example.com.evil.test'],
  ['the null origin', 'null'],
  ['another scheme', 'http://app.example.com'],
  ['another port', 'https://app.example.com:8443'],
  ['a prefix look-alike', 'https://evilapp.example.com']
] as const) {
  t.test(`cors origin trick: ${trick} reads nothing`, async (t) => {
    const up = await startUpstream(t)
    const { app } = await startGateway(t, { cors: { origins: [APP, 'https://*.app.example.com'], credentials: true }, routes: [{ prefix: '/api', upstream: up.url }] })
    const pre = await app.inject({ method: 'OPTIONS', url: '/api/x', headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' } })
    t.equal(pre.headers['access-control-allow-origin'], undefined)
    t.equal(pre.headers['access-control-allow-credentials'], undefined)
    const res = await app.inject({ url: '/api/x', headers: { origin } })
    t.equal(res.statusCode, 401)
    t.equal(res.headers['access-control-allow-origin'], undefined)
    t.equal(res.headers['access-control-allow-credentials'], undefined)
    t.equal(up.seen.length, 0)
  })
}
