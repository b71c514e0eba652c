import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
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

/** nginx as a reverse proxy with upstream keep-alive, one process, pinned like the others. */
export async function startNginx (dir: string, port: number, upstreamPort: number, cpus: string): Promise<Server> {
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, `
daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
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
      return { name: 'nginx', child, url, memory: () => Promise.reject(new Error('not a node server')) }
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  throw new Error('nginx did not start')
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

/** Linux reports CPU time in clock ticks of 1/100 s on every platform Node supports. */
const CLOCK_TICKS = 100
