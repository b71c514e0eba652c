import { readFileSync } from 'node:fs'
import { connect, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { ERRORS } from '../src/errors.js'
import { ConfigError } from '../src/config/yaml-source.js'
import { loadConfig } from '../src/config/load-config.js'
import { PASSWORDS, startGateway, writeTestConfig } from './helpers/gateway.js'
import { logSink } from './helpers/log-sink.js'
import { startPrivateRedis, uniquePrefix } from './helpers/redis-server.js'
import { startUpstream } from './helpers/upstream.js'
import { waitFor } from './helpers/wait-for.js'

// Errors as a client and an operator see them: the README's table is the
// registry, errors raised before any route carry our body and a TG_ code,
// and the log tells a client's abort and an outage apart from a fault.

const ROOT = join(__dirname, '..')

t.test("the README's error table lists exactly the registry's codes and statuses", async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('### Errors'), readme.indexOf('## Rate limits'))
  const rows = [...section.matchAll(/^\| `(TG_[A-Z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])] as const)
  t.ok(rows.length > 0, 'the table has rows')
  t.same(Object.fromEntries(rows), Object.fromEntries(Object.entries(ERRORS).map(([code, spec]) => [code, spec.status])))
  t.equal(new Set(rows.map(([code]) => code)).size, rows.length, 'no code listed twice')
})

/** Sends raw bytes, returns everything the gateway wrote before it closed. */
function raw (port: number, bytes: string, end = true): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let data = ''
    socket.setTimeout(5000, () => socket.destroy())
    socket.on('data', (c) => { data += String(c) })
    socket.on('close', () => resolve(data))
    socket.on('error', () => { /* close follows */ })
    socket.write(bytes, () => { if (end) socket.end() })
  })
}

function parseAnswer (answer: string): { status: number, type: string, body: Record<string, unknown> } {
  const [head, body = ''] = answer.split('\r\n\r\n', 2)
  return {
    status: Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0),
    type: /content-type: ([^\r\n]+)/i.exec(head)?.[1] ?? '',
    body: body === '' ? {} : JSON.parse(body) as Record<string, unknown>
  }
}

const beforeRouting = [
  { what: 'a request line that is not HTTP', bytes: 'NOT HTTP AT ALL\r\n\r\n', status: 400, code: 'TG_BAD_REQUEST' },
  { what: 'a header without a colon', bytes: 'GET /public/x HTTP/1.1\r\nHost: gw\r\nbroken header\r\n\r\n', status: 400, code: 'TG_BAD_REQUEST' },
  { what: 'a target longer than the header limit', bytes: `GET /public/${'a'.repeat(20_000)} HTTP/1.1\r\nHost: gw\r\n\r\n`, status: 414, code: 'TG_URI_TOO_LONG' },
  { what: 'headers over the limit', bytes: `GET /public/x HTTP/1.1\r\nHost: gw\r\nX-Big: ${'b'.repeat(20_000)}\r\n\r\n`, status: 431, code: 'TG_HEADERS_TOO_LARGE' },
  { what: 'a path that does not decode', bytes: 'GET /public/%zz/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n', status: 400, code: 'TG_BAD_REQUEST' }
]

for (const c of beforeRouting) {
  t.test(`${c.what}: ${c.status} ${c.code} in our JSON body, nothing forwarded`, async (t) => {
    const up = await startUpstream(t)
    const { app } = await startGateway(t, { routes: [{ prefix: '/public', upstream: up.url, auth: 'none' }] })
    await app.listen({ host: '127.0.0.1', port: 0 })
    const answer = parseAnswer(await raw((app.server.address() as AddressInfo).port, c.bytes))
    t.equal(answer.status, c.status)
    t.match(answer.type, /^application\/json/)
    t.same(Object.keys(answer.body).sort(), ['code', 'error', 'message', 'statusCode'])
    t.match(answer.body, { statusCode: c.status, code: c.code, message: ERRORS[c.code as keyof typeof ERRORS].message })
    t.equal(up.seen.length, 0)
  })
}

t.test('a request slower than server.requestTimeout: 408 TG_REQUEST_TIMEOUT in our body', async (t) => {
  const { app } = await startGateway(t, { server: { requestTimeout: '1s' } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const answer = parseAnswer(await raw((app.server.address() as AddressInfo).port, 'GET /healthz HTTP/1.1\r\nHost: gw\r\n', false))
  t.equal(answer.status, 408)
  t.match(answer.body, { statusCode: 408, code: 'TG_REQUEST_TIMEOUT', error: 'Request Timeout' })
})

t.test('a body of a type the endpoint does not take: 415 TG_UNSUPPORTED_MEDIA_TYPE', async (t) => {
  const { app } = await startGateway(t)
  const res = await app.inject({ method: 'POST', url: '/auth/login', headers: { 'content-type': 'application/xml' }, payload: '<alice/>' })
  t.equal(res.statusCode, 415)
  t.match(res.json(), { statusCode: 415, code: 'TG_UNSUPPORTED_MEDIA_TYPE', error: 'Unsupported Media Type' })
})

t.test('a client cutting off its own login body is logged as its abort, not as an upstream failure', async (t) => {
  const { lines, stream } = logSink()
  const { app } = await startGateway(t, {}, { logger: { level: 'debug', stream } })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as AddressInfo).port
  await new Promise<void>((resolve) => {
    const socket = connect(port, '127.0.0.1', () => {
      socket.write('POST /auth/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"username":"al')
      setTimeout(() => socket.destroy(), 100)
    })
    socket.on('close', () => resolve())
    socket.on('error', () => { /* closing anyway */ })
  })
  await waitFor('the refusal is logged', () => lines.some((l) => l.msg === 'request refused'))
  t.match(lines.find((l) => l.msg === 'request refused'), { level: 30, code: 'TG_BAD_REQUEST', cause: 'client aborted the request' })
  t.notOk(lines.some((l) => typeof l.level === 'number' && l.level >= 50), 'no error-level line')
  t.notOk(lines.some((l) => l.code === 'TG_UPSTREAM_BAD_GATEWAY'), 'not called an upstream failure')
  t.notOk(JSON.stringify(lines).includes('"stack"'), 'no stack')
})

t.test('a store outage: each refused request logged without a stack, the outage once when it starts and once when it ends', async (t) => {
  const redis = await startPrivateRedis()
  t.teardown(redis.stop)
  const { lines, stream } = logSink()
  const { app } = await startGateway(t, { redis: { url: redis.url, keyPrefix: uniquePrefix('outage-log'), connectTimeout: '500ms', commandTimeout: '300ms' } }, { logger: { level: 'info', stream } })
  const login = (): Promise<number> => app.inject({ method: 'POST', url: '/auth/login', payload: { username: 'alice', password: PASSWORDS.alice, transport: 'body' } }).then((r) => r.statusCode)
  t.equal(await login(), 200)

  await redis.stop()
  for (let i = 0; i < 3; i++) t.equal(await login(), 503)
  const refusals = lines.filter((l) => l.code === 'TG_STORE_UNAVAILABLE')
  t.equal(refusals.length, 3, 'each refusal logged')
  for (const line of refusals) {
    t.equal(line.level, 40, 'at warn')
    t.notOk('err' in line, 'without the error object and its stack')
  }
  await waitFor('the outage start is logged', () => lines.some((l) => /connection failed/.test(String(l.msg))))

  await redis.start()
  await waitFor('a login succeeds again', async () => (await login()) === 200, 40, 250)
  await waitFor('the outage end is logged', () => lines.some((l) => /connection is back/.test(String(l.msg))))
  const perClient = (re: RegExp): Record<string, number> => {
    const counts: Record<string, number> = {}
    for (const l of lines) if (re.test(String(l.msg))) counts[String(l.client)] = (counts[String(l.client)] ?? 0) + 1
    return counts
  }
  // One line when a connection goes down and one when it is back, not one per
  // failed reconnect: every start is paired with one end. (A connection that
  // flaps while Redis restarts may go down twice; it then says so twice.)
  const started = perClient(/connection failed/)
  t.ok(Object.keys(started).length > 0, 'the start is logged')
  t.same(perClient(/connection is back/), started, `one end for each start (${JSON.stringify(started)})`)
  t.ok(lines.filter((l) => /connection failed/.test(String(l.msg))).length < 20, 'not a line per reconnect attempt')
  t.notOk(lines.some((l) => typeof l.level === 'number' && l.level >= 50), 'no error-level line')
})

t.test('a missing users file names the config file, line and key auth.users.file', async (t) => {
  const { file } = await writeTestConfig({ auth: { users: { file: './no-such-users.yaml' } } })
  const err = t.throws(() => loadConfig(file, {})) as ConfigError
  t.ok(err instanceof ConfigError)
  t.match(err.message, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+ auth\\.users\\.file cannot be read: ENOENT`))
  t.match(err.message, /no-such-users\.yaml/)
})
