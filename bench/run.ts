import { fork, spawnSync, type ChildProcess } from 'node:child_process'
import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { cpus, tmpdir } from 'node:os'
import { createServer } from 'node:http'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import autocannon from 'autocannon'
import Fastify from 'fastify'
import httpProxy from '@fastify/http-proxy'
import { Redis } from 'ioredis'
import { stringify } from 'yaml'
import { AccessTokens } from '../src/access-token.js'
import { buildGateway } from '../src/build-gateway.js'
import { loadConfig } from '../src/config/load-config.js'
import { hashPassword } from '../src/password.js'

// `npm run bench`: the gateway's cost over the bare proxy, measured side by
// side in one run. Each server runs in its own process; load comes from
// autocannon in this one. Runs alternate (bare, gateway, bare, gateway …)
// and medians are reported, because these machines are shared and noisy.

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const TOKENS = 1000
const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379'

type Role = 'upstream' | 'bare' | 'gateway'

async function serve (role: Role, port: number, upstream: string, configFile: string): Promise<void> {
  if (role === 'upstream') {
    const body = '{"ok":true}'
    createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length })
      res.end(body)
    }).listen(port, '127.0.0.1', () => process.send?.('ready'))
    return
  }
  if (role === 'bare') {
    const app = Fastify()
    await app.register(httpProxy, { upstream, prefix: '/api' })
    await app.listen({ port, host: '127.0.0.1' })
    process.send?.('ready')
    return
  }
  const app = await buildGateway(loadConfig(configFile, {}))
  await app.listen({ port, host: '127.0.0.1' })
  process.send?.('ready')
}

// BENCH_PROFILE=DIR writes a V8 CPU profile of the first gateway (in-process store) into DIR.
const PROFILE_DIR = process.env.BENCH_PROFILE
let profiled = false

function start (role: Role, port: number, upstream = '', configFile = ''): Promise<ChildProcess> {
  const profile = PROFILE_DIR !== undefined && role === 'gateway' && !profiled
  if (profile) profiled = true
  const execArgv = profile ? ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`] : []
  const child = fork(__filename, ['--role', role, String(port), upstream, configFile], { stdio: 'inherit', execArgv })
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(child))
    child.once('exit', (code) => reject(new Error(`${role} exited with ${String(code)}`)))
  })
}

interface Sample { rps: number, p50: number, p99: number, errors: number, requests: number }

async function load (url: string, tokens: string[] | null): Promise<Sample> {
  let i = 0
  const result = await autocannon({
    url,
    connections: CONNECTIONS,
    duration: SECONDS,
    requests: tokens === null
      ? undefined
      : [{ setupRequest: (req) => ({ ...req, headers: { ...req.headers, authorization: `Bearer ${tokens[i++ % tokens.length]}` } }) }]
  })
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.non2xx,
    requests: result.requests.total
  }
}

const RESULTS_START = '<!-- bench:start (written by npm run bench) -->'
const RESULTS_END = '<!-- bench:end -->'

/** Replaces the measured block of results.md and keeps the analysis written around it by hand. */
function writeResults (file: string, text: string): void {
  let before = ''
  let after = '\n'
  try {
    const old = readFileSync(file, 'utf8')
    const start = old.indexOf(RESULTS_START)
    const end = old.indexOf(RESULTS_END)
    if (start !== -1 && end > start) {
      before = old.slice(0, start)
      after = old.slice(end + RESULTS_END.length)
    }
  } catch {
    // first run: nothing to keep
  }
  writeFileSync(file, `${before}${RESULTS_START}\n${text}\n${RESULTS_END}${after}`)
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

function summary (samples: Sample[]): Sample {
  return {
    rps: median(samples.map((s) => s.rps)),
    p50: median(samples.map((s) => s.p50)),
    p99: median(samples.map((s) => s.p99)),
    errors: samples.reduce((n, s) => n + s.errors, 0),
    requests: samples.reduce((n, s) => n + s.requests, 0)
  }
}

async function redisCalls (redis: Redis): Promise<number> {
  const info = await redis.info('commandstats')
  let total = 0
  for (const match of info.matchAll(/calls=(\d+)/g)) total += Number(match[1])
  return total
}

async function main (): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-bench-'))
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256', privateKeyEncoding: { format: 'pem', type: 'pkcs8' }, publicKeyEncoding: { format: 'pem', type: 'spki' } })
  writeFileSync(join(dir, 'key.pem'), privateKey)
  writeFileSync(join(dir, 'users.yaml'), stringify({ users: [{ id: 'u-1', username: 'bench', passwordHash: await hashPassword('bench-password') }] }))
  const [upPort, barePort, gwPort, gwRedisPort] = [18_501, 18_502, 18_503, 18_504]
  const upstream = `http://127.0.0.1:${upPort}`
  const route = { prefix: '/api', upstream, auth: 'required', scopes: ['bench:read'] }
  const base = {
    server: { port: gwPort },
    tokens: { algorithm: 'ES256', keys: [{ kid: 'b1', privateKey: './key.pem' }], accessTtl: '1h' },
    auth: { users: { file: './users.yaml' } },
    routes: [route]
  }
  const memoryConfig = join(dir, 'memory.yaml')
  const redisConfig = join(dir, 'redis.yaml')
  const prefix = `tgbench:${randomUUID()}:`
  writeFileSync(memoryConfig, stringify(base))
  writeFileSync(redisConfig, stringify({ ...base, redis: { url: REDIS_URL, keyPrefix: prefix } }))

  // Many distinct users' tokens in rotation, as real traffic has.
  const signer = new AccessTokens(loadConfig(memoryConfig, {}).keys, { issuer: 'tokengate', audience: 'api', accessTtlMs: 3_600_000, clockSkewMs: 0 })
  const tokens = Array.from({ length: TOKENS }, (_, n) => signer.issue({ sub: `u-${n}`, sid: `s-${n}`, username: `user${n}`, roles: ['user'], scopes: ['bench:read'] }).token)

  const children = [
    await start('upstream', upPort),
    await start('bare', barePort, upstream),
    await start('gateway', gwPort, '', memoryConfig),
    await start('gateway', gwRedisPort, '', redisConfig)
  ]
  try {
    const path = '/api/x'
    // warm-up: JIT, connection pools, the verified-token cache
    await load(`${upstream}${path}`, null)
    await load(`http://127.0.0.1:${barePort}${path}`, null)
    await load(`http://127.0.0.1:${gwPort}${path}`, tokens)

    const runs: Record<string, Sample[]> = { direct: [], bare: [], gateway: [], gatewayRedis: [] }
    const redis = new Redis(REDIS_URL)
    let redisCallsTotal = 0
    for (let round = 0; round < ROUNDS; round++) {
      runs.direct.push(await load(`${upstream}${path}`, null))
      runs.bare.push(await load(`http://127.0.0.1:${barePort}${path}`, null))
      runs.gateway.push(await load(`http://127.0.0.1:${gwPort}${path}`, tokens))
      const before = await redisCalls(redis)
      const sample = await load(`http://127.0.0.1:${gwRedisPort}${path}`, tokens)
      // INFO itself is one call; the rest were made by the gateway during the run.
      redisCallsTotal += (await redisCalls(redis)) - before - 1
      runs.gatewayRedis.push(sample)
    }
    redis.disconnect()

    const s = Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, summary(v)])) as Record<string, Sample>
    const gatewayRequests = runs.gatewayRedis.reduce((n, x) => n + x.requests, 0)
    const nginx = spawnSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).stdout.trim()
    const lines = [
      '# tokengate benchmark',
      '',
      `Run ${new Date().toISOString()} on ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown CPU'}), Node ${process.version}.`,
      `autocannon, ${CONNECTIONS} connections, ${SECONDS} s per run, ${ROUNDS} alternating rounds after a warm-up; medians. Every server in its own process; the load generator shares the machine.`,
      `The gateway route: bearer ES256 JWT, ${TOKENS} distinct users' tokens in rotation, denylist check, one required scope, five identity headers; rate limiting off.`,
      '',
      '| target | req/s | p50 ms | p99 ms | errors |',
      '|---|---:|---:|---:|---:|',
      ...(['direct', 'bare', 'gateway', 'gatewayRedis'] as const).map((k) => {
        const label = { direct: 'upstream direct', bare: 'bare proxy (fastify + @fastify/http-proxy)', gateway: 'gateway, in-process store', gatewayRedis: 'gateway, Redis store' }[k]
        return `| ${label} | ${Math.round(s[k].rps)} | ${s[k].p50} | ${s[k].p99} | ${s[k].errors} |`
      }),
      '',
      `- gateway / bare proxy req/s: ${(s.gateway.rps / s.bare.rps).toFixed(2)} (in-process store), ${(s.gatewayRedis.rps / s.bare.rps).toFixed(2)} (Redis store)`,
      `- gateway p99 − bare p99: ${s.gateway.p99 - s.bare.p99} ms (in-process), ${s.gatewayRedis.p99 - s.bare.p99} ms (Redis); autocannon reports whole milliseconds`,
      `- Redis commands per proxied request (INFO commandstats, Redis-store gateway, other clients of that Redis included): ${(redisCallsTotal / Math.max(1, gatewayRequests)).toFixed(4)}`,
      `- nginx: ${nginx === '' ? 'not installed, not measured' : 'installed but not yet measured by this script'}`,
      ''
    ]
    const text = lines.join('\n')
    console.log(text)
    writeResults(join(__dirname, '..', '..', 'bench', 'results.md'), text)
  } finally {
    for (const child of children) child.kill('SIGTERM')
  }
}

if (process.argv[2] === '--role') {
  // A normal exit, so --cpu-prof writes its profile.
  process.on('SIGTERM', () => process.exit(0))
  void serve(process.argv[3] as Role, Number(process.argv[4]), process.argv[5], process.argv[6])
} else {
  main().catch((err: unknown) => {
    console.error(err)
    process.exitCode = 1
  })
}
