import { spawn, type ChildProcess } from 'node:child_process'
import { request as httpRequest } from 'node:http'
import { join } from 'node:path'
import type { Test } from 'tap'

// The real `gateway` bin with server.workers, as the workers tests drive it:
// every request on a new connection (so the kernel spreads them over the
// workers), and which worker answered read from the pid on its access line.

export const BIN = join(__dirname, '..', '..', 'bin', 'gateway.js')

export interface Line { pid?: number, msg?: string, route?: string, url?: string, status?: number, role?: string }

export interface Gateway {
  child: ChildProcess
  lines: () => Line[]
  text: () => string
  exited: Promise<number | null>
}

export function startBin (t: Test, file: string): Gateway {
  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout?.on('data', (c) => { out += String(c) })
  child.stderr?.on('data', (c) => { out += String(c) })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  t.teardown(() => {
    // The workers go with their supervisor (they drain when its channel closes).
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const lines = (): Line[] => out.split('\n').flatMap((l) => {
    if (!l.startsWith('{')) return []
    try { return [JSON.parse(l) as Line] } catch { return [] }
  })
  return { child, lines, text: () => out, exited }
}

/** One request on a connection of its own. */
export function send (port: number, method: string, path: string, headers: Record<string, string> = {}, body?: unknown): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body)
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      method,
      path,
      agent: false,
      headers: { connection: 'close', ...(payload === undefined ? {} : { 'content-type': 'application/json' }), ...headers }
    }, (res) => {
      let text = ''
      res.on('data', (c) => { text += String(c) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
    })
    req.on('error', reject)
    req.end(payload)
  })
}

export function listeningPids (gw: Gateway): number[] {
  return gw.lines().filter((l) => l.msg?.startsWith('Server listening') === true).map((l) => l.pid ?? 0)
}

export function pidsAnswering (gw: Gateway, url: string, status?: number): Set<number> {
  return new Set(gw.lines().filter((l) => l.msg === 'request completed' && l.url === url && (status === undefined || l.status === status)).map((l) => l.pid ?? 0))
}
