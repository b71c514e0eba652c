import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createServer } from 'node:http'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import Fastify from 'fastify'
import httpProxy from '@fastify/http-proxy'
import { Redis } from 'ioredis'
import { buildGateway } from '../src/build-gateway.js'
import { loadConfig } from '../src/config/load-config.js'
import { TASKSET } from './load.js'

// The processes a benchmark measures, each in its own process so they can be
// pinned to CPUs and their CPU time read from /proc.

export type Role = 'upstream' | 'bare' | 'gateway'

/** Memory of a server after a full garbage collection, sent over IPC when asked. */
export interface MemoryReport { heapUsed: number, rss: number }

/** Runs inside the child: serves `role` on `port` and says 'ready'. */
export async function serveRole (role: Role, port: number, arg: string): Promise<void> {
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
    await app.register(httpProxy, { upstream: arg, prefix: '/api' })
    await app.listen({ port, host: '127.0.0.1' })
  } else {
    const app = await buildGateway(loadConfig(arg, {}))
    await app.listen({ port, host: '127.0.0.1' })
  }
  process.on('message', (message) => {
    if (message !== 'memory') return
    globalThis.gc?.()
    const { heapUsed, rss } = process.memoryUsage()
    process.send?.({ heapUsed, rss } satisfies MemoryReport)
  })
  process.send?.('ready')
}

export interface Server {
  name: string
  child: ChildProcess
  url: string
  /** asks the server for its memory after a GC (node servers only) */
  memory (): Promise<MemoryReport>
}

function pinned (cpus: string, command: string, args: string[]): [string, string[]] {
  return cpus !== '' && TASKSET ? ['taskset', ['-c', cpus, command, ...args]] : [command, args]
}

/** Starts this script again as `role`, pinned to `cpus`, and waits for it to be ready. */
export function startRole (script: string, role: Role, port: number, arg: string, cpus: string, execArgv: string[] = []): Promise<Server> {
  const [command, args] = pinned(cpus, process.execPath, ['--expose-gc', ...execArgv, script, '--role', role, String(port), arg])
  const child = spawn(command, args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const server: Server = {
    name: role,
    child,
    url: `http://127.0.0.1:${port}`,
    memory: () => new Promise((resolve) => {
      child.once('message', (report) => resolve(report as MemoryReport))
      child.send('memory')
    })
  }
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(server))
    child.once('exit', (code) => reject(new Error(`${role} exited with ${String(code)}`)))
  })
}

/**
 * nginx as a reverse proxy with upstream keep-alive, pinned like the others:
 * one process for one worker, a master and its workers otherwise (their CPU
 * is read over the whole process tree).
 */
export async function startNginx (dir: string, port: number, upstreamPort: number, cpus: string, workers = 1): Promise<Server> {
  const conf = join(dir, `nginx-${workers}.conf`)
  writeFileSync(conf, `
daemon off;
master_process ${workers === 1 ? 'off' : 'on'};
worker_processes ${workers};
pid ${dir}/nginx-${workers}.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/nginx-body;
  proxy_temp_path ${dir}/nginx-proxy;
  fastcgi_temp_path ${dir}/nginx-fastcgi;
  uwsgi_temp_path ${dir}/nginx-uwsgi;
  scgi_temp_path ${dir}/nginx-scgi;
  upstream backend { server 127.0.0.1:${upstreamPort}; keepalive 64; }
  server {
    listen 127.0.0.1:${port};
    location /api/ {
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`)
  const [command, args] = pinned(cpus, 'nginx', ['-c', conf, '-p', dir])
  const child = spawn(command, args, { stdio: ['ignore', 'inherit', 'inherit'] })
  const url = `http://127.0.0.1:${port}`
  for (let attempt = 0; attempt < 50; attempt++) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}: ${readLog(join(dir, 'nginx-error.log'))}`)
    try {
      await fetch(`${url}/api/`)
      return { name: 'nginx', child, url, memory: notNode }
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  throw new Error('nginx did not start')
}

const notNode = (): Promise<MemoryReport> => Promise.reject(new Error('not a node server'))

/** Waits until `url` answers at all (any status), or the child exits. */
async function answering (name: string, child: ChildProcess, url: string, log: () => string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}: ${log()}`)
    try {
      await fetch(url)
      return
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  throw new Error(`${name} did not start: ${log()}`)
}

/**
 * The gateway as it ships: the `gateway` bin on a config file, its log (one
 * access line per request at LOG_LEVEL=info) going to a file as a service
 * manager would write it, not into a terminal; or, with `logFile` null, into
 * a pipe this process drains, as a container runtime or journald reads it.
 */
export async function startBin (name: string, bin: string, config: string, port: number, cpus: string, logLevel: string, logFile: string | null): Promise<Server> {
  const [command, args] = pinned(cpus, process.execPath, [bin, '--config', config])
  const env = { ...process.env, LOG_LEVEL: logLevel }
  let tail = ''
  let child: ChildProcess
  if (logFile === null) {
    child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'], env })
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => { tail = (tail + chunk).slice(-2000) })
  } else {
    const out = openSync(logFile, 'a')
    child = spawn(command, args, { stdio: ['ignore', out, 'inherit'], env })
    closeSync(out)
  }
  const url = `http://127.0.0.1:${port}`
  await answering(name, child, `${url}/healthz`, () => logFile === null ? tail : readLog(logFile).slice(-2000))
  return { name, child, url, memory: notNode }
}

/**
 * HAProxy doing the gateway's job the way HAProxy can: its `jwt_verify`
 * converter checks the ES256 signature of every bearer token (HAProxy has no
 * cache of verified tokens), `exp` is compared with the clock, and the `sub`
 * claim goes upstream as X-User-Id. One process, one thread.
 */
export async function startHaproxy (dir: string, port: number, upstreamPort: number, publicKeyFile: string, cpus: string): Promise<Server> {
  const conf = join(dir, 'haproxy.cfg')
  writeFileSync(conf, `
global
  nbthread 1
  log stderr format raw local0 emerg
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend gateway
  bind 127.0.0.1:${port}
  http-request deny deny_status 401 unless { req.hdr(authorization) -m beg "Bearer " }
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')
  http-request deny deny_status 401 unless { var(txn.alg) -m str ES256 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"${publicKeyFile}") -m int 1 }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('$.iss') -m str tokengate }
  http-request deny deny_status 401 unless { var(txn.bearer),jwt_payload_query('$.aud') -m str api }
  http-request set-var(txn.now) date
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 } || { var(txn.exp) -m int 0 }
  http-request del-header x-user-id
  http-request set-header x-user-id %[var(txn.bearer),jwt_payload_query('$.sub')]
  http-request replace-path /api(/.*) \\1
  default_backend upstream
backend upstream
  server u1 127.0.0.1:${upstreamPort}
`)
  const [command, args] = pinned(cpus, 'haproxy', ['-f', conf, '-db'])
  let stderr = ''
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  child.stderr?.on('data', (chunk: Buffer) => { stderr += chunk.toString() })
  const url = `http://127.0.0.1:${port}`
  await answering('haproxy', child, `${url}/api/`, () => stderr)
  return { name: 'haproxy', child, url, memory: notNode }
}

function readLog (file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch {
    return ''
  }
}

/** A port nothing listens on now, for a server that must be told its port. */
export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createNetServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo
      probe.close(() => resolve(port))
    })
  })
}

/** A Redis of the benchmark's own on `port`, pinned with the load generator, so its CPU is not the gateway's. */
export async function startRedis (port: number, cpus: string): Promise<{ url: string, child: ChildProcess }> {
  const [command, args] = pinned(cpus, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'])
  const child = spawn(command, args, { stdio: 'ignore' })
  const url = `redis://127.0.0.1:${port}`
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
  probe.on('error', () => { /* refused until redis-server listens; connect() rejects too */ })
  try {
    for (let attempt = 0; attempt < 50; attempt++) {
      if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`)
      try {
        await probe.connect()
        await probe.ping()
        return { url, child }
      } catch {
        probe.disconnect()
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
  } finally {
    probe.disconnect()
  }
  throw new Error('redis-server did not start')
}

/**
 * A Redis Cluster of the benchmark's own: three primaries (no replicas: the
 * proxied path and the rate-limit counter are measured, not WAIT) on `ports`,
 * pinned with the load generator.
 */
export async function startRedisCluster (ports: number[], cpus: string): Promise<{ seeds: string[], urls: string[], children: ChildProcess[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-bench-cluster-'))
  const children: ChildProcess[] = []
  for (const port of ports) {
    const [command, args] = pinned(cpus, 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`])
    children.push(spawn(command, args, { stdio: 'ignore' }))
  }
  const urls = ports.map((port) => `redis://127.0.0.1:${port}`)
  for (const url of urls) {
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null })
    probe.on('error', () => { /* refused until redis-server listens */ })
    let up = false
    for (let attempt = 0; attempt < 50 && !up; attempt++) {
      try {
        await probe.connect()
        await probe.ping()
        up = true
      } catch {
        probe.disconnect()
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
    }
    probe.disconnect()
    if (!up) throw new Error(`cluster node ${url} did not start`)
  }
  const seeds = ports.map((port) => `127.0.0.1:${port}`)
  const created = spawnSync('redis-cli', ['--cluster', 'create', ...seeds, '--cluster-yes'], { stdio: 'ignore' })
  if (created.status !== 0) throw new Error('redis-cli --cluster create failed')
  for (let attempt = 0; attempt < 100; attempt++) {
    const infos = await Promise.all(urls.map(async (url) => {
      const r = new Redis(url, { maxRetriesPerRequest: 0 })
      try { return String(await r.call('CLUSTER', 'INFO')) } finally { r.disconnect() }
    }))
    if (infos.every((info) => info.includes('cluster_state:ok'))) return { seeds, urls, children }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error('the benchmark cluster did not become ready')
}

/** CPU seconds (user + system) a process has used so far, from /proc; NaN where there is no /proc. */
export function cpuSeconds (pid: number | undefined): number {
  if (pid === undefined) return NaN
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name, which is in parentheses and may hold spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
  } catch {
    return NaN
  }
}

/**
 * CPU seconds of a process and every process under it (a supervisor and its
 * workers, nginx's master and workers), from /proc; NaN where there is none.
 */
export function treeCpuSeconds (pid: number | undefined): number {
  if (pid === undefined) return NaN
  let entries: string[]
  try {
    entries = readdirSync('/proc').filter((name) => /^\d+$/.test(name))
  } catch {
    return NaN
  }
  const parent = new Map<number, number>()
  for (const name of entries) {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {
      // gone between the listing and the read
    }
  }
  const inTree = (p: number): boolean => {
    for (let at: number | undefined = p; at !== undefined && at > 1; at = parent.get(at)) if (at === pid) return true
    return false
  }
  let total = 0
  for (const p of parent.keys()) if (inTree(p)) total += cpuSeconds(p) || 0
  return total
}

/** Linux reports CPU time in clock ticks of 1/100 s on every platform Node supports. */
const CLOCK_TICKS = 100

