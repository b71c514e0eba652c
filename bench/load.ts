import { spawn, spawnSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import autocannon from 'autocannon'

// The load generators. wrk when installed (it costs the least CPU per request,
// which matters when it shares the machine with what it measures, and it
// reports latency below a millisecond), autocannon otherwise.

export interface Sample {
  rps: number
  p50: number
  p99: number
  errors: number
  requests: number
  /** CPU the server under test used per request, µs (user + system) */
  cpuUs: number
}

export interface LoadOptions {
  connections: number
  seconds: number
  /** the CPUs the load generator may use, for taskset; empty: anywhere */
  cpus: string
  /** autocannon only: requests per second over all connections; unset: as fast as the server answers */
  rate?: number
}

export function hasCommand (name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).stdout.trim() !== ''
}

export const WRK = hasCommand('wrk')
export const TASKSET = hasCommand('taskset')

/**
 * A wrk script that sends every request with the next token of the list, in
 * rotation. With `pauseMs`, each connection waits a random 0 … 2 × pauseMs
 * (whole ms, wrk's unit) before each request: a steady offered load below
 * saturation, spread so that the connections do not fire together. wrk times
 * a request from its first byte written, so the pause is not in its latency.
 */
export function writeWrkScript (dir: string, tokens: readonly string[], pauseMs?: number): string {
  const file = join(dir, pauseMs === undefined ? 'tokens.lua' : 'tokens-paced.lua')
  writeFileSync(file, [
    `local tokens = {${tokens.map((t) => `"${t}"`).join(',')}}`,
    'local n = 0',
    'request = function()',
    '  n = n % #tokens + 1',
    '  return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tokens[n] })',
    'end',
    ...(pauseMs === undefined ? [] : [`delay = function() return math.random(0, ${2 * pauseMs}) end`]),
    ''
  ].join('\n'))
  return file
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 }

function latencyMs (text: string, percentile: string): number {
  const match = new RegExp(`^\\s*${percentile}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(text)
  return match === null ? NaN : Number(match[1]) * UNIT_MS[match[2]]
}

/** Runs wrk and returns its numbers; the caller adds the server's CPU time. */
export function runWrk (url: string, script: string, options: LoadOptions): Promise<Omit<Sample, 'cpuUs'>> {
  const args = ['-t1', `-c${options.connections}`, `-d${options.seconds}s`, '--latency', '-s', script, url]
  const [command, argv] = options.cpus !== '' && TASKSET ? ['taskset', ['-c', options.cpus, 'wrk', ...args]] : ['wrk', args]
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'inherit'] })
    let out = ''
    child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
    child.on('error', reject)
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`wrk exited with ${String(code)}:\n${out}`))
      const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN)
      const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0)
      const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out)
      const socketErrors = socket === null ? 0 : socket.slice(1).reduce((n, x) => n + Number(x), 0)
      resolve({
        rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
        p50: latencyMs(out, '50'),
        p99: latencyMs(out, '99'),
        errors: non2xx + socketErrors,
        requests
      })
    })
  })
}

/** autocannon in this process (whole-millisecond latencies). */
export async function runAutocannon (url: string, tokens: readonly string[], options: LoadOptions): Promise<Omit<Sample, 'cpuUs'>> {
  let i = 0
  const result = await autocannon({
    url,
    connections: options.connections,
    duration: options.seconds,
    ...(options.rate === undefined ? {} : { overallRate: options.rate }),
    requests: [{ setupRequest: (req) => ({ ...req, headers: { ...req.headers, authorization: `Bearer ${tokens[i++ % tokens.length]}` } }) }]
  })
  return {
    rps: result.requests.average,
    p50: result.latency.p50,
    p99: result.latency.p99,
    errors: result.errors + result.non2xx,
    requests: result.requests.total
  }
}
