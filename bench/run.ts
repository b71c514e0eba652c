import { spawnSync } from 'node:child_process'
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto'
import { createServer as createNetServer, type Socket } from 'node:net'
import { cpus, tmpdir } from 'node:os'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { stringify } from 'yaml'
import { AccessTokens } from '../src/tokens/access-token.js'
import { loadConfig } from '../src/config/load-config.js'
import { hashPassword } from '../src/users/password.js'
import { hasCommand, runAutocannon, runWrk, TASKSET, WRK, writeWrkScript, type LoadOptions, type Sample } from './load.js'
import { memoryPhase, type MemoryPhase } from './memory.js'
import { revocationSpread } from './revocation-spread.js'
import { freePort, serveRole, startBin, startHaproxy, startNginx, startRedis, startRedisCluster, startRole, treeCpuSeconds, type Role, type Server } from './servers.js'

// `npm run bench`: the gateway's cost over the bare proxy, measured side by
// side in one run. Every server runs in its own process; on a machine with
// two or more cores (and taskset) the server under test has the last core to
// itself and the upstream and load generator share the others, so the CPU a
// server spends per request can be read from /proc without the load generator
// in it. Runs cycle through the targets round after round and medians are
// reported, because these machines are shared and noisy.

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50)
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
/** distinct callers in each memory phase; 0 skips the phases */
const MEMORY_CALLERS = Number(process.env.BENCH_MEMORY_CALLERS ?? 100_000)
const TOKENS = 1000
/** revocations through one worker in the revocation phase */
const SPREAD_TRIES = Number(process.env.BENCH_SPREAD_TRIES ?? 30)
/** Without BENCH_REDIS_URL the benchmark starts a redis-server of its own (or uses 127.0.0.1:6379 when none is installed). */
const REDIS_URL = process.env.BENCH_REDIS_URL
/** BENCH_PROFILE=DIR writes V8 CPU profiles of the bare proxy and the gateways into DIR (bare.cpuprofile, gateway.cpuprofile, gatewayLimited.cpuprofile, gatewayRedisLimited.cpuprofile). */
const PROFILE_DIR = process.env.BENCH_PROFILE
/** The steady-load phase offers this share of the bare proxy's saturated req/s to every target; 0 skips it. */
const PACED_SHARE = Number(process.env.BENCH_PACED_SHARE ?? 0.5)

/**
 * BENCH_BASELINE_BIN=/path/to/checkout/bin/gateway.js adds that checkout's bin
 * (built, access log to a file) as the target gatewayBinBaseline: a change to
 * the bin measured against the commit before it, paired round by round.
 */
const BASELINE_BIN = process.env.BENCH_BASELINE_BIN

/** BENCH_SAMPLES=FILE writes every round's sample of every target there (JSON), for pairing rounds by hand. */
const SAMPLES_FILE = process.env.BENCH_SAMPLES

/** BENCH_ONLY=key,key measures only those targets (and the bare proxy, which every ratio needs); the keys are in `add(...)` calls below. */
const ONLY = process.env.BENCH_ONLY === undefined ? null : new Set(['bare', ...process.env.BENCH_ONLY.split(',')])

const CORES = cpus().length
const SERVER_CPU = CORES >= 2 && TASKSET ? String(CORES - 1) : ''
const LOAD_CPUS = CORES >= 2 && TASKSET ? (CORES === 2 ? '0' : `0-${CORES - 2}`) : ''

interface Target {
  key: string
  label: string
  server: Server
  /** Redis-store gateways: Redis commands per request are counted (on every node of the cluster for 'cluster') */
  redis: false | 'single' | 'cluster'
  /** the path loaded, when not /api/x */
  path?: string
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
    cpuUs: median(samples.map((s) => s.cpuUs)),
    errors: samples.reduce((n, s) => n + s.errors, 0),
    requests: samples.reduce((n, s) => n + s.requests, 0)
  }
}

/** Calls per command so far, from INFO commandstats (commands run inside a script count as well). */
async function redisCalls (redis: Redis): Promise<Map<string, number>> {
  const info = await redis.info('commandstats')
  return new Map([...info.matchAll(/cmdstat_([^:]+):calls=(\d+)/g)].map((m) => [m[1], Number(m[2])]))
}

/** The per-request calls of several nodes, added up per command. */
function sumCalls (perNode: Array<Map<string, number>>): Map<string, number> {
  const out = new Map<string, number>()
  for (const node of perNode) for (const [name, n] of node) out.set(name, (out.get(name) ?? 0) + n)
  return out
}

/** Per-request calls of each command between two readings; INFO itself is left out. */
function callsPerRequest (before: Map<string, number>, after: Map<string, number>, requests: number): Map<string, number> {
  const out = new Map<string, number>()
  for (const [name, calls] of after) {
    const delta = calls - (before.get(name) ?? 0) - (name === 'info' ? 1 : 0)
    if (delta > 0) out.set(name, delta / Math.max(1, requests))
  }
  return out
}

function describeCalls (runs: Array<Map<string, number>>): string {
  const names = new Set(runs.flatMap((r) => [...r.keys()]))
  const each = [...names].map((name) => [name, median(runs.map((r) => r.get(name) ?? 0))] as const).filter(([, n]) => n >= 0.0001)
  const total = each.reduce((n, [, x]) => n + x, 0)
  return each.length === 0 ? '0.0000' : `${total.toFixed(4)} (${each.map(([name, n]) => `${name} ${n.toFixed(2)}`).join(', ')})`
}

const ms = (value: number): string => value.toFixed(2)

/** The commit measured, and whether the working tree differed from it. */
function revision (): string {
  const git = (...args: string[]): string => spawnSync('git', args, { encoding: 'utf8' }).stdout?.trim() ?? ''
  const commit = git('rev-parse', '--short', 'HEAD')
  if (commit === '') return 'an unknown commit'
  return git('status', '--porcelain', '--untracked-files=no') === '' ? `commit ${commit}` : `commit ${commit} with uncommitted changes`
}

async function main (): Promise<void> {
  // This process (and autocannon, which runs inside it) keeps off the core of the server under test.
  if (LOAD_CPUS !== '') spawnSync('taskset', ['-a', '-p', '-c', LOAD_CPUS, String(process.pid)], { stdio: 'ignore' })
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-bench-'))
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256', privateKeyEncoding: { format: 'pem', type: 'pkcs8' }, publicKeyEncoding: { format: 'pem', type: 'spki' } })
  writeFileSync(join(dir, 'key.pem'), privateKey)
  writeFileSync(join(dir, 'public.pem'), publicKey)
  writeFileSync(join(dir, 'users.yaml'), stringify({ users: [{ id: 'u-1', username: 'bench', passwordHash: await hashPassword('bench-password') }] }))
  const ports = {
    upstream: await freePort(), upstream2: await freePort(), bare: await freePort(), nginx: await freePort(), nginx2: await freePort(),
    haproxy: await freePort(), redis: await freePort(), bin: await freePort(), binPipe: await freePort(), binQuiet: await freePort(), binBaseline: await freePort(), binLimited: await freePort(),
    workers: await freePort(), workersLimited: await freePort(), cluster: [await freePort(), await freePort(), await freePort()]
  }
  const upstream = `http://127.0.0.1:${ports.upstream}`
  const upstream2 = `http://127.0.0.1:${ports.upstream2}`
  const route = { prefix: '/api', upstream, auth: 'required', scopes: ['bench:read'], rateLimit: false }
  // A budget no run can spend: the cost of counting is measured, not of refusing.
  const limited = { ...route, rateLimit: { max: 100_000_000, timeWindow: '1m' } }
  const base = {
    tokens: { algorithm: 'ES256', keys: [{ kid: 'b1', privateKey: './key.pem' }], accessTtl: '1h' },
    auth: { users: { file: './users.yaml' } }
  }
  const ownRedis = REDIS_URL === undefined && hasCommand('redis-server') ? await startRedis(ports.redis, LOAD_CPUS) : null
  const redisUrl = REDIS_URL ?? ownRedis?.url ?? 'redis://127.0.0.1:6379'
  const redis = { redis: { url: redisUrl, keyPrefix: `tgbench:${randomUUID()}:` } }
  // Redis Cluster beside the single node: the proxied path must make no
  // round trip there either, and the rate-limit counter one call per slot per turn.
  const ownCluster = hasCommand('redis-server') && hasCommand('redis-cli') && ports.cluster.every((p) => p < 55_000)
    ? await startRedisCluster(ports.cluster, LOAD_CPUS)
    : null
  const cluster = ownCluster === null ? null : { redis: { cluster: ownCluster.seeds, keyPrefix: `tgbench:${randomUUID()}:`, waitReplicas: 0 } }
  const configs: Record<string, object> = {
    gateway: { ...base, routes: [route] },
    gatewayRedis: { ...base, ...redis, routes: [route] },
    gatewayLimited: { ...base, routes: [limited] },
    gatewayRedisLimited: { ...base, ...redis, routes: [limited] },
    ...(cluster === null ? {} : {
      gatewayCluster: { ...base, ...cluster, routes: [route] },
      gatewayClusterLimited: { ...base, ...cluster, routes: [limited] }
    }),
    // many client addresses arrive through X-Forwarded-For from a trusted hop
    gatewayMemory: { ...base, server: { trustProxy: true }, routes: [limited] },
    // the same route over two targets (round-robin), and with tracing on (spans
    // exported over OTLP/HTTP to the second upstream, which answers 200 to anything)
    gatewayTwoTargets: { ...base, routes: [{ ...route, upstream: [upstream, upstream2] }] },
    gatewayTracing: { ...base, tracing: { enabled: true, otlp: { endpoint: `${upstream2}/v1/traces` } }, routes: [route] },
    // the bin as it ships, each on a store file of its own
    // and a second route, the same but for its access line: the line's cost
    // measured inside one process
    gatewayBin: { ...base, server: { host: '127.0.0.1', port: ports.bin }, store: { file: './data/bin.db' }, routes: [route, { ...route, prefix: '/unlogged', accessLog: false }] },
    gatewayBinPipe: { ...base, server: { host: '127.0.0.1', port: ports.binPipe }, store: { file: './data/bin-pipe.db' }, routes: [route] },
    gatewayBinQuiet: { ...base, server: { host: '127.0.0.1', port: ports.binQuiet }, store: { file: './data/bin-quiet.db' }, routes: [route] },
    gatewayBinBaseline: { ...base, server: { host: '127.0.0.1', port: ports.binBaseline }, store: { file: './data/bin-baseline.db' }, routes: [route] },
    gatewayBinLimited: { ...base, server: { host: '127.0.0.1', port: ports.binLimited }, store: { file: './data/bin-limited.db' }, routes: [limited] },
    // two workers under the supervisor (counters kept by the supervisor over IPC)
    gatewayWorkers: { ...base, server: { host: '127.0.0.1', port: ports.workers, workers: 2 }, store: { file: './data/workers.db' }, routes: [route] },
    gatewayWorkersLimited: { ...base, server: { host: '127.0.0.1', port: ports.workersLimited, workers: 2 }, store: { file: './data/workers-limited.db' }, routes: [limited] },
    // the signed identity assertion on: one ES256 signature per token and
    // route per half-ttl, a cached header on every other request
    gatewayAssertion: { ...base, identity: { assertion: { ttl: '60s' } }, routes: [route] }
  }
  const files: Record<string, string> = {}
  for (const [name, config] of Object.entries(configs)) {
    files[name] = join(dir, `${name}.yaml`)
    writeFileSync(files[name], stringify(config))
  }

  // Many distinct users' tokens in rotation, as real traffic has.
  const signer = new AccessTokens(loadConfig(files.gateway, {}).keys, { issuer: 'tokengate', audience: 'api', accessTtlMs: 3_600_000, clockSkewMs: 0 })
  const issue = (n: number): string => signer.issue({ sub: `u-${n}`, sid: `s-${n}`, username: `user${n}`, roles: ['user'], scopes: ['bench:read'] }).token
  const tokens = Array.from({ length: TOKENS }, (_, n) => issue(n))
  const script = writeWrkScript(dir, tokens)

  const self = __filename
  const servers: Server[] = []
  const targets: Target[] = []
  const add = async (key: string, label: string, start: Promise<Server>, isRedis: Target['redis'] = false): Promise<void> => {
    const server = await start
    servers.push(server)
    if (ONLY === null || ONLY.has(key)) targets.push({ key, label, server, redis: isRedis })
  }
  try {
    await add('direct', 'upstream direct', startRole(self, 'upstream', ports.upstream, '', LOAD_CPUS))
    const profile = (name: string): string[] => PROFILE_DIR === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${PROFILE_DIR}`, `--cpu-prof-name=${name}.cpuprofile`]
    await add('bare', 'bare proxy (fastify + @fastify/http-proxy)', startRole(self, 'bare', ports.bare, upstream, SERVER_CPU, profile('bare')))
    await add('gateway', 'gateway, embedded store (SQLite file)', startRole(self, 'gateway', await freePort(), files.gateway, SERVER_CPU, profile('gateway')))
    await add('gatewayRedis', 'gateway, Redis store', startRole(self, 'gateway', await freePort(), files.gatewayRedis, SERVER_CPU), 'single')
    await add('gatewayLimited', 'gateway, embedded store, rate limit on (in-process counters)', startRole(self, 'gateway', await freePort(), files.gatewayLimited, SERVER_CPU, profile('gatewayLimited')))
    await add('gatewayRedisLimited', 'gateway, Redis store, rate limit on', startRole(self, 'gateway', await freePort(), files.gatewayRedisLimited, SERVER_CPU, profile('gatewayRedisLimited')), 'single')
    if (files.gatewayCluster !== undefined && files.gatewayClusterLimited !== undefined) {
      await add('gatewayCluster', 'gateway, Redis Cluster store', startRole(self, 'gateway', await freePort(), files.gatewayCluster, SERVER_CPU), 'cluster')
      await add('gatewayClusterLimited', 'gateway, Redis Cluster store, rate limit on', startRole(self, 'gateway', await freePort(), files.gatewayClusterLimited, SERVER_CPU), 'cluster')
    }
    servers.push(await startRole(self, 'upstream', ports.upstream2, '', LOAD_CPUS))
    await add('gatewayTwoTargets', 'gateway, embedded store, two targets', startRole(self, 'gateway', await freePort(), files.gatewayTwoTargets, SERVER_CPU))
    await add('gatewayTracing', 'gateway, embedded store, tracing on (OTLP export)', startRole(self, 'gateway', await freePort(), files.gatewayTracing, SERVER_CPU))
    const bin = join(__dirname, '..', '..', 'bin', 'gateway.js')
    await add('gatewayBin', 'gateway bin as shipped, access log on (to a file)', startBin('gateway bin', bin, files.gatewayBin, ports.bin, SERVER_CPU, 'info', join(dir, 'bin.log')))
    const shipped = servers.at(-1) as Server
    if (ONLY === null || ONLY.has('gatewayBinUnlogged')) targets.push({ key: 'gatewayBinUnlogged', label: 'the same bin, a route with accessLog: false', server: shipped, redis: false, path: '/unlogged/x' })
    await add('gatewayBinPipe', 'gateway bin, access log on (to a pipe)', startBin('gateway bin (pipe)', bin, files.gatewayBinPipe, ports.binPipe, SERVER_CPU, 'info', null))
    await add('gatewayBinQuiet', 'gateway bin, LOG_LEVEL=warn (no access lines)', startBin('gateway bin (warn)', bin, files.gatewayBinQuiet, ports.binQuiet, SERVER_CPU, 'warn', join(dir, 'bin-quiet.log')))
    if (BASELINE_BIN !== undefined) await add('gatewayBinBaseline', `gateway bin of the baseline (${BASELINE_BIN}), access log on (to a file)`, startBin('gateway bin (baseline)', BASELINE_BIN, files.gatewayBinBaseline, ports.binBaseline, SERVER_CPU, 'info', join(dir, 'bin-baseline.log')))
    await add('gatewayBinLimited', 'gateway bin, access log on, rate limit on', startBin('gateway bin (limited)', bin, files.gatewayBinLimited, ports.binLimited, SERVER_CPU, 'info', join(dir, 'bin-limited.log')))
    await add('gatewayWorkers', 'gateway bin, workers: 2, access log on', startBin('gateway workers', bin, files.gatewayWorkers, ports.workers, SERVER_CPU, 'info', join(dir, 'workers.log')))
    await add('gatewayWorkersLimited', 'gateway bin, workers: 2, access log on, rate limit on (counted by the supervisor)', startBin('gateway workers (limited)', bin, files.gatewayWorkersLimited, ports.workersLimited, SERVER_CPU, 'info', join(dir, 'workers-limited.log')))
    if (hasCommand('nginx')) {
      await add('nginx', 'nginx 1 worker (no token check)', startNginx(dir, ports.nginx, ports.upstream, SERVER_CPU))
      await add('nginx2', 'nginx 2 workers (no token check)', startNginx(dir, ports.nginx2, ports.upstream, SERVER_CPU, 2))
    }
    if (hasCommand('haproxy')) await add('haproxy', 'HAProxy, jwt_verify (ES256) on every request', startHaproxy(dir, ports.haproxy, ports.upstream, join(dir, 'public.pem'), SERVER_CPU))
    await add('gatewayAssertion', 'gateway, embedded store, identity assertion on', startRole(self, 'gateway', await freePort(), files.gatewayAssertion, SERVER_CPU, profile('gatewayAssertion')))

    const options: LoadOptions = { connections: CONNECTIONS, seconds: SECONDS, cpus: LOAD_CPUS }
    const apiPath = '/api/x'
    const measure = async (target: Target, seconds = SECONDS, pacing?: { script: string, rate: number }): Promise<Sample> => {
      const pid = target.server.child.pid
      const path = target.path ?? apiPath
      const cpuBefore = treeCpuSeconds(pid)
      const result = WRK
        ? await runWrk(`${target.server.url}${path}`, pacing?.script ?? script, { ...options, seconds })
        : await runAutocannon(`${target.server.url}${path}`, tokens, { ...options, seconds, rate: pacing?.rate })
      return { ...result, cpuUs: (treeCpuSeconds(pid) - cpuBefore) * 1e6 / Math.max(1, result.requests) }
    }

    // warm-up: JIT, connection pools, the verified-token cache
    for (const target of targets) await measure(target, 2)

    const runs = new Map<string, Sample[]>(targets.map((t) => [t.key, []]))
    const redisClient = new Redis(redisUrl)
    const clusterClients = (ownCluster?.urls ?? []).map((url) => new Redis(url))
    const redisPerRequest = new Map<string, Array<Map<string, number>>>()
    // Every other round goes through the targets backwards, so that none is
    // always measured early or late in a round (a machine whose speed drifts
    // within a round favours one end).
    const inRoundOrder = <T>(list: T[], round: number): T[] => round % 2 === 0 ? list : [...list].reverse()
    for (let round = 0; round < ROUNDS; round++) {
      for (const target of inRoundOrder(targets, round)) {
        const clients = target.redis === 'cluster' ? clusterClients : [redisClient]
        const before = target.redis === false ? null : await Promise.all(clients.map(redisCalls))
        const sample = await measure(target)
        if (before !== null) {
          const after = await Promise.all(clients.map(redisCalls))
          const calls = sumCalls(before.map((b, i) => callsPerRequest(b, after[i]!, sample.requests)))
          redisPerRequest.set(target.key, [...(redisPerRequest.get(target.key) ?? []), calls])
        }
        runs.get(target.key)?.push(sample)
      }
    }
    redisClient.disconnect()
    for (const c of clusterClients) c.disconnect()
    if (SAMPLES_FILE !== undefined) writeFileSync(SAMPLES_FILE, JSON.stringify(Object.fromEntries(runs), null, 1))

    const s = new Map([...runs].map(([k, v]) => [k, summary(v)]))
    const bare = s.get('bare') as Sample

    // At saturation p99 is mostly queueing behind whatever stalled the
    // server's one thread; at a load every target can carry, it is the time a
    // request takes. The same offered load for every target: a share of the
    // bare proxy's saturated req/s.
    const pacedTargets = targets.filter((t) => t.key === 'bare' || t.key.startsWith('gateway'))
    const offered = Math.round(bare.rps * PACED_SHARE)
    const pauseMs = Math.max(1, Math.round(CONNECTIONS * 1000 / offered))
    const paced = new Map<string, Sample>()
    if (PACED_SHARE > 0) {
      const pacing = { script: writeWrkScript(dir, tokens, pauseMs), rate: offered }
      const pacedRuns = new Map<string, Sample[]>(pacedTargets.map((t) => [t.key, []]))
      for (let round = 0; round < ROUNDS; round++) {
        for (const target of inRoundOrder(pacedTargets, round)) pacedRuns.get(target.key)?.push(await measure(target, SECONDS, pacing))
      }
      for (const [key, samples] of pacedRuns) paced.set(key, summary(samples))
    }

    // Every target of a route down, the way that hurts: both accept the
    // connection and never answer. Without a circuit each request would wait
    // the route's timeout (2 s here); with it, once ejectAfter requests have
    // timed out on each target, the route answers 503 at once.
    const held: Socket[] = []
    const hung = await Promise.all([0, 1].map(() => new Promise<{ url: string, close: () => void }>((resolve) => {
      const server = createNetServer((socket) => { held.push(socket) })
      server.listen(0, '127.0.0.1', () => {
        const address = server.address()
        resolve({ url: `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`, close: () => server.close() })
      })
    })))
    let down: { sample: Sample, one: Omit<Sample, 'cpuUs'>, tripped: number[] } | null = null
    if (ONLY === null || ONLY.has('gatewayDown')) {
      const file = join(dir, 'gatewayDown.yaml')
      writeFileSync(file, stringify({ ...base, routes: [{ ...route, upstream: hung.map((h) => h.url), timeout: '2s', ejectAfter: 3, retries: 0 }] }))
      const server = await startRole(self, 'gateway', await freePort(), file, SERVER_CPU)
      servers.push(server)
      // trip the circuit: ejectAfter timeouts on each target at once (one
      // after another, each ejection, 1 s, would be over before the next)
      const call = async (n: number): Promise<number> => (await fetch(`${server.url}${apiPath}`, { headers: { authorization: `Bearer ${tokens[n]}` } })).status
      const tripped = await Promise.all(Array.from({ length: 6 }, (_, n) => call(n)))
      tripped.push(await call(6))
      const one = await runWrk(`${server.url}${apiPath}`, script, { ...options, connections: 1 })
      down = { sample: await measure({ key: 'gatewayDown', label: 'all targets down', server, redis: false }), one, tripped }
    }
    for (const socket of held) socket.destroy()
    for (const h of hung) h.close()

    // A revocation through one of two workers: how long until both refuse.
    const workers = targets.find((t) => t.key === 'gatewayWorkers')
    const spread = workers === undefined
      ? null
      : await revocationSpread(workers.server.url, apiPath, signer.issue({ sub: 'bench-admin', sid: 's-admin', username: 'admin', roles: ['admin'], scopes: [] }).token,
        () => signer.issue({ sub: 'bench-victim', sid: `s-victim-${randomUUID()}`, username: 'victim', roles: ['user'], scopes: ['bench:read'] }), SPREAD_TRIES)

    let memory: MemoryPhase[] = []
    if (MEMORY_CALLERS > 0) {
      const server = await startRole(self, 'gateway', await freePort(), files.gatewayMemory, SERVER_CPU)
      servers.push(server)
      const valid = tokens[0]
      const signed = valid.slice(0, valid.lastIndexOf('.') + 1)
      const signatureLength = valid.length - signed.length
      memory = [
        await memoryPhase('distinct invalid tokens (bad signatures)', server, apiPath, MEMORY_CALLERS,
          () => ({ authorization: `Bearer ${signed}${randomBytes(signatureLength).toString('base64url').slice(0, signatureLength)}` })),
        await memoryPhase('distinct valid tokens', server, apiPath, MEMORY_CALLERS,
          (n) => ({ authorization: `Bearer ${issue(TOKENS + n)}` })),
        await memoryPhase('distinct client addresses (no token)', server, apiPath, MEMORY_CALLERS,
          (n) => ({ 'x-forwarded-for': `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}` }))
      ]
    }

    const cpuModel = cpus()[0]?.model.trim() ?? 'unknown CPU'
    const pinning = SERVER_CPU === ''
      ? 'No CPU pinning (one core or no taskset): the load generator shares the CPU with what it measures.'
      : `The server under test runs alone on CPU ${SERVER_CPU}; the upstream and the load generator share CPU ${LOAD_CPUS}.`
    const lines = [
      '# tokengate benchmark',
      '',
      `Run ${new Date().toISOString()} at ${revision()} on ${CORES} cores (${cpuModel}), Node ${process.version}.`,
      `${WRK ? 'wrk (1 thread)' : 'autocannon (wrk is not installed)'}, ${CONNECTIONS} connections, ${SECONDS} s per run, ${ROUNDS} rounds through every target after a warm-up, every other round backwards; medians. ${pinning}`,
      `Every request: GET /api/x with a bearer ES256 JWT, ${TOKENS} distinct users' tokens in rotation (the same header goes to every target). The gateway route checks the token, the denylist and one required scope, and sends five identity headers upstream.`,
      '',
      '| target | req/s | p50 ms | p99 ms | server CPU µs/request | errors |',
      '|---|---:|---:|---:|---:|---:|',
      ...targets.map((t) => {
        const x = s.get(t.key) as Sample
        return `| ${t.label} | ${Math.round(x.rps)} | ${ms(x.p50)} | ${ms(x.p99)} | ${t.key === 'direct' ? '–' : Math.round(x.cpuUs)} | ${x.errors} |`
      }),
      '',
      '| gateway / bare proxy | req/s | p99 | p99 difference | CPU per request | Redis commands per request |',
      '|---|---:|---:|---:|---:|---:|',
      ...targets.filter((t) => t.key.startsWith('gateway')).map((t) => {
        const x = s.get(t.key) as Sample
        const perRequest = redisPerRequest.get(t.key)
        return `| ${t.label.replace('gateway, ', '')} | ${(x.rps / bare.rps).toFixed(2)} | ${(x.p99 / bare.p99).toFixed(2)} | ${x.p99 - bare.p99 >= 0 ? '+' : ''}${ms(x.p99 - bare.p99)} ms | ${(x.cpuUs / bare.cpuUs).toFixed(2)} | ${perRequest === undefined ? '–' : describeCalls(perRequest)} |`
      }),
      '',
      `Redis commands are counted with INFO commandstats around each run (${ownRedis === null ? `on ${redisUrl}, so other clients of that Redis count too` : 'on a redis-server the benchmark started, pinned beside the load generator'}${ownCluster === null ? '' : '; on Cluster, summed over its three primaries (started by the benchmark, no replicas)'}); commands a Lua script runs count as well, so one EVALSHA and the commands inside it are one round trip.`,
      'The bin targets run `gateway --config` as users do (their log to a file, or to a pipe the benchmark drains); the other gateway targets build the gateway in the benchmark process with logging off. Peers: nginx proxies without checking anything; HAProxy checks what HAProxy can (signature, alg, iss, aud, exp) on every request, with no cache, and sets X-User-Id from `sub`. CPU per request is summed over a server\'s whole process tree.',
      ...(hasCommand('nginx') ? [] : ['nginx is not installed (`apt-get install nginx`), so it is not measured.']),
      ...(hasCommand('haproxy') ? [] : ['HAProxy is not installed (`apt-get install haproxy`), so it is not measured.']),
      ''
    ]
    const pacedBare = paced.get('bare')
    if (pacedBare !== undefined) {
      lines.push(
        '## Latency at a steady load below saturation',
        '',
        `The same offered load for every target, about ${Math.round(PACED_SHARE * 100)} % of the bare proxy's saturated req/s above (${WRK ? `each of the ${CONNECTIONS} connections waits a random 0–${2 * pauseMs} ms before each request` : `autocannon's overallRate of ${offered} req/s`}); ${ROUNDS} rounds, medians.`,
        '',
        '| target | req/s | p50 ms | p99 ms | p99 difference to the bare proxy |',
        '|---|---:|---:|---:|---:|',
        ...pacedTargets.map((t) => {
          const x = paced.get(t.key) as Sample
          const diff = x.p99 - pacedBare.p99
          return `| ${t.label} | ${Math.round(x.rps)} | ${ms(x.p50)} | ${ms(x.p99)} | ${t.key === 'bare' ? '–' : `${diff >= 0 ? '+' : ''}${ms(diff)} ms`} |`
        }),
        ''
      )
    }
    // The access log's cost, round by round: each round measures the bin
    // with and without access lines within a minute of each other, so a
    // machine whose speed drifts moves both.
    const pairedRatios = (onKey: string, offKey: string): string | null => {
      const on = runs.get(onKey)
      const off = runs.get(offKey)
      if (on === undefined || off === undefined || on.length === 0 || on.length !== off.length) return null
      const ratios = on.map((x, i) => x.cpuUs / (off[i] as Sample).cpuUs).sort((a, b) => a - b)
      return `median ${median(ratios).toFixed(3)} (rounds from ${(ratios[0] as number).toFixed(2)} to ${(ratios.at(-1) as number).toFixed(2)})`
    }
    // In one process, a logged route against the same route unlogged: what
    // the line costs, without the difference two processes make (heap, JIT,
    // placement), which on a shared machine is larger than the line.
    const inProcess = pairedRatios('gatewayBin', 'gatewayBinUnlogged')
    const logCost = [['gatewayBin', 'to a file'], ['gatewayBinPipe', 'to a pipe'], ['gatewayBinBaseline', 'the baseline bin, to a file']].flatMap(([key, where]) => {
      const ratio = pairedRatios(key as string, 'gatewayBinQuiet')
      return ratio === null ? [] : [`${where as string}: ${ratio}`]
    })
    if (inProcess !== null || logCost.length > 0) {
      lines.push('## What the access log costs', '')
      if (inProcess !== null) lines.push(`CPU per request of a route with its access line (to a file) over the same route with \`accessLog: false\`, in the same bin, paired round by round (${ROUNDS} rounds): ${inProcess}.`, '')
      if (logCost.length > 0) lines.push(`CPU per request of the bin writing an access line per request over another bin at \`LOG_LEVEL=warn\`, paired round by round (${ROUNDS} rounds): ${logCost.join('; ')}.`, '')
    }
    if (down !== null) {
      lines.push(
        '## Every target of a route down',
        '',
        `Two targets that accept connections and never answer; route timeout 2 s, ejectAfter 3, retries 0. Six requests at once trip the circuit, and a seventh follows (statuses ${down.tripped.join(', ')}); then ${SECONDS} s on one connection, one request at a time: ${down.one.requests} answers, ${down.one.errors} of them not 2xx, p50 ${ms(down.one.p50)} ms, p99 ${ms(down.one.p99)} ms; and ${SECONDS} s on ${CONNECTIONS} connections at saturation: ${down.sample.requests} answers, ${down.sample.errors} not 2xx, p50 ${ms(down.sample.p50)} ms, p99 ${ms(down.sample.p99)} ms, ${Math.round(down.sample.cpuUs)} µs of CPU per answer. A half-open probe (one request per back-off) waits for the timeout; the others are answered 503 at once.`,
        ''
      )
    }
    if (spread !== null) {
      const sorted = [...spread.ms].sort((a, b) => a - b)
      const at = (q: number): string => sorted.length === 0 ? '–' : ms(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number)
      lines.push(
        '## A revocation seen by every worker',
        '',
        `The bin with \`workers: 2\` on the embedded store, idle otherwise: ${SPREAD_TRIES} times, a token is served, revoked by jti through \`POST /admin/revoke\`, then sent on new connections (the kernel picks the worker) until 16 in a row are refused. From the revocation's answer to the first of those 16: p50 ${at(0.5)} ms, p90 ${at(0.9)} ms, max ${at(1)} ms${spread.failed === 0 ? '' : `; ${spread.failed} tries did not end within 5 s`}. The 16 in a row make this an upper bound on when the second worker began refusing.`,
        ''
      )
    }
    if (memory.length > 0) {
      lines.push(
        `## Memory under ${MEMORY_CALLERS} distinct callers`,
        '',
        'One gateway (in-process store, rate limit on, trustProxy so X-Forwarded-For names the client); heap used after a full GC, MiB, before each phase and after each quarter of it. The phases run one after another on the same process.',
        '',
        '| phase | before | 25 % | 50 % | 75 % | 100 % | answers |',
        '|---|---:|---:|---:|---:|---:|---|',
        ...memory.map((m) => `| ${m.name} | ${m.heapMiB.map((h) => h.toFixed(1)).join(' | ')} | ${Object.entries(m.statuses).map(([code, n]) => `${n} × ${code}`).join(', ')} |`),
        ''
      )
    }
    const text = lines.join('\n')
    console.log(text)
    writeResults(join(__dirname, '..', '..', 'bench', 'results.md'), text)
  } finally {
    for (const server of servers) server.child.kill('SIGTERM')
    ownRedis?.child.kill('SIGTERM')
    for (const child of ownCluster?.children ?? []) child.kill('SIGTERM')
  }
}

if (process.argv[2] === '--role') {
  // A normal exit, so --cpu-prof writes its profile.
  process.on('SIGTERM', () => process.exit(0))
  void serveRole(process.argv[3] as Role, Number(process.argv[4]), process.argv[5])
} else {
  main().catch((err: unknown) => {
    console.error(err)
    process.exitCode = 1
  })
}
