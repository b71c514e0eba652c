import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { closedPort } from './helpers/upstream.js'

// The README's walk-through, run as written against the gateway started the
// way `npm start` starts it, on the repo's own gateway.config.yaml. Only the
// ports change, so the test does not collide with a running `npm start`.

const ROOT = join(__dirname, '..')
const BIN = join(ROOT, 'bin', 'gateway.js')

function shellBlocks (markdown: string, from: string, to: string): string[] {
  const section = markdown.slice(markdown.indexOf(from), markdown.indexOf(to))
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1])
}

t.test('the README walk-through works as written', async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const blocks = shellBlocks(readme, '## Walk-through', '## The `gateway` command')
  t.ok(blocks.length >= 6, 'the walk-through has its commands')

  const port = await closedPort()
  const demoPort = await closedPort()
  const appPort = await closedPort()
  const keygen = spawnSync(process.execPath, [BIN, 'keygen', 'ES256', 'keys/dev-es256.pem', '--if-missing'], { cwd: ROOT })
  t.equal(keygen.status, 0)
  const env = { ...process.env, PORT: String(port), DEMO_PORT: String(demoPort), DEMO_UPSTREAM: `http://127.0.0.1:${demoPort}`, DEMO_APP_PORT: String(appPort), REDIS_URL: '' }
  const gateway = spawn(process.execPath, [BIN, '--config', 'gateway.config.yaml'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { gateway.kill('SIGKILL') })
  let logs = ''
  gateway.stdout.on('data', (c) => { logs += String(c) })
  for (let i = 0; i < 100 && !logs.includes('Server listening'); i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.match(logs, 'Server listening')

  const script = blocks.join('\n').replaceAll('localhost:8080', `localhost:${port}`).replaceAll('localhost:5173', `localhost:${appPort}`)
  const run = spawnSync('bash', ['-euo', 'pipefail', '-c', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 })
  t.equal(run.status, 0, run.stderr)
  const out = run.stdout
  t.match(out, /HTTP\/1\.1 401 Unauthorized/)
  t.match(out, /www-authenticate: Bearer realm="tokengate"/i)
  t.match(out, '"x-user-id": "u-1001"')
  t.match(out, '"x-user-scopes": "orders:read orders:write"')
  t.notMatch(out, '"x-user-id": "root"', 'the forged header was dropped')
  t.match(out, '"url": "/orders/42"')
  t.match(out, '"x-user-id": "svc-reports"', 'the machine client\'s token reached the upstream')
  t.match(out, '"active":true', 'the client introspected alice\'s token')
  t.match(out, /204\n401\n/)
  t.match(out, '"code":"TG_CSRF"')
  // "Browser apps on another origin": the example config's origin is approved, an unlisted one is not.
  t.match(out, new RegExp(`HTTP/1\\.1 204 No Content\\r?\\naccess-control-allow-origin: http://localhost:${appPort}\\r?\\nHTTP/1\\.1 404 Not Found\\r?\\n`, 'i'), 'a preflight from the listed origin is approved, from https://app.example.com it is not')
  t.notMatch(out, 'access-control-allow-origin: https://app.example.com', 'the unlisted origin is never allowed')
  t.notMatch(logs, /alice-demo-password|bob-demo-password/)

  // "Example browser app": the page the README tells people to open.
  const app = await fetch(`http://127.0.0.1:${port}/app/`)
  t.equal(app.status, 200, 'the example browser app is served at /app/')
  t.match(await app.text(), '<title>tokengate example app</title>')
  // ... and from another origin, calling the gateway across origins.
  t.match(out, `<meta name="tokengate-gateway" content="http://localhost:${port}">`, 'the app on its own origin names the gateway')
  t.match(out, new RegExp(`\\n204\\nHTTP/1\\.1 401 Unauthorized\\r?\\naccess-control-allow-origin: http://localhost:${appPort}\\r?\\naccess-control-allow-credentials: true`, 'i'), 'its preflight is approved and the 401 is readable by it')
  const other = await fetch(`http://127.0.0.1:${appPort}/app/`)
  t.equal(other.status, 200, 'the example app is served on its own origin')
  t.match(other.headers.get('content-security-policy'), `connect-src 'self' http://localhost:${port};`, 'its page may connect to the gateway')
})

t.test('the README\'s Layout names every folder and top-level file of src/ and every plugin', async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const layout = readme.slice(readme.indexOf('## Layout'), readme.indexOf('## Status'))
  t.ok(layout.length > 100, 'the README has a Layout section before Status')
  for (const entry of readdirSync(join(ROOT, 'src'), { withFileTypes: true })) {
    const name = entry.isDirectory() ? `\`${entry.name}/\`` : `\`${entry.name}\``
    t.ok(layout.includes(name), `Layout names src/${entry.name}`)
  }
  for (const folder of [...layout.matchAll(/^ {2}- `([a-z]+)\/`/gm)].map((m) => m[1])) {
    t.ok(existsSync(join(ROOT, 'src', folder)), `src/${folder}/ exists`)
  }
  const plugins = layout.slice(layout.indexOf('`plugins/`'), layout.indexOf('`bin/gateway.js`')).replace(/\s+/g, ' ')
  for (const file of readdirSync(join(ROOT, 'plugins'))) {
    t.ok(plugins.includes(file.replace(/\.ts$/, '').replaceAll('-', ' ').replace(/^cors$/, 'CORS').replace(/^oauth /, 'OAuth ')), `Layout names plugins/${file}`)
  }
})

t.test('the README\'s refused-config example is what the gateway prints for the example config with those two keys broken', async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const after = readme.slice(readme.indexOf('A wrong config refuses to start and says where:'))
  const shown = /```\n([\s\S]*?)```/.exec(after)?.[1]
  t.ok(shown?.startsWith('refusing to start'), 'the README shows the refusal')
  const broken = readFileSync(join(ROOT, 'gateway.config.yaml'), 'utf8')
    .replace(/^ {2}accessTtl: 15m$/m, '  accessTtl: a quarter of an hour')
    .replace(/^ {4}auth: required$/m, '    auth: always')
  const dir = t.testdir({ 'gateway.config.yaml': broken })
  const run = spawnSync(process.execPath, [BIN, '--config', 'gateway.config.yaml'], { cwd: dir, encoding: 'utf8', timeout: 20_000, env: { ...process.env, REDIS_URL: '' } })
  t.equal(run.status, 1)
  t.equal(run.stderr, shown, 'the same lines, positions and words')
})
