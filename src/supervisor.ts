import cluster, { type Worker } from 'node:cluster'
import { availableParallelism } from 'node:os'
import { pino } from 'pino'
import { readFileSync } from 'node:fs'
import { answerWorkers, askSupervisor } from './cluster-ipc.js'
import { checkConfig, type LoadedConfig } from './config/load-config.js'
import { parseDuration } from './config/duration.js'
import { formatIssue } from './config/yaml-source.js'
import { SupervisorCounters } from './limits/supervisor-counters.js'
import { metricsAnswerers } from './ops/cluster-metrics.js'
import { loggerOptions } from './ops/logger.js'

// server.workers > 1: this process starts that many gateway workers on one
// port and looks after them. It serves no request itself. It
// - restarts a worker that dies, after a back-off that grows while workers
//   keep dying young, so a crash loop does not spin;
// - keeps the text of the config file it last accepted, and every worker
//   reads its config from that snapshot (at start and on reload), not from
//   the file: on SIGHUP it validates the file first and tells every worker to
//   reload only when it is valid, so a refused config leaves all of them on
//   the old one — a worker restarted after a refused reload included;
// - on SIGTERM/SIGINT stops every worker (each drains and flushes its access
//   log) and exits 0 once all have exited cleanly;
// - counts the rate limits and the login throttle for all of them
//   (src/limits/supervisor-counters.ts) and answers /metrics for all of them
//   (src/ops/cluster-metrics.ts).
//
// node:cluster with reusePort rather than node:cluster alone: measured here
// (2 workers answering "ok", wrk -t2 -c32, loaded 2-core machine) cluster's
// default round-robin, where the supervisor accepts every connection and
// hands it to a worker, gave 80k req/s on keep-alive connections and 12k on a
// new connection per request; with reusePort each worker binds its own
// socket, the kernel spreads connections, and the same runs gave 92k and 33k.
// Cluster stays for what it does well: forking, the IPC channel, and the
// shared handle when server.port is 0 (reusePort would give every worker a
// port of its own there) or the platform has no SO_REUSEPORT balancing.

export const RELOAD = 'tokengate:reload'
export const TOPIC_CONFIG = 'config-text'
export const RELOADED = 'tokengate:reloaded'
export interface ReloadedMessage { type: typeof RELOADED, applied: boolean }

/** A worker that lived this long was not crash-looping: its slot's back-off starts over. */
export const STABLE_AFTER_MS = 30_000
export const FIRST_RESTART_DELAY_MS = 100
export const MAX_RESTART_DELAY_MS = 30_000

/** The number of workers `server.workers` asks for. */
export function workerCount (setting: number | 'auto'): number {
  return setting === 'auto' ? availableParallelism() : setting
}

/** Linux balances connections across sockets bound with SO_REUSEPORT; port 0 would give each worker its own port. */
export function reusePortFor (port: number): boolean {
  return process.platform === 'linux' && port !== 0
}

/** How long a slot waits before it starts a worker again, after `youngDeaths` deaths in a row. */
export function restartDelay (youngDeaths: number): number {
  if (youngDeaths <= 0) return 0
  return Math.min(MAX_RESTART_DELAY_MS, FIRST_RESTART_DELAY_MS * 2 ** (youngDeaths - 1))
}

interface Slot {
  index: number
  worker: Worker | null
  startedAt: number
  youngDeaths: number
  timer: NodeJS.Timeout | null
}

function isReloaded (message: unknown): message is ReloadedMessage {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === RELOADED
}

/** In a worker: the config text the supervisor accepted last. */
export async function configSnapshot (): Promise<string> {
  const text = await askSupervisor(TOPIC_CONFIG, null, 10_000)
  if (typeof text !== 'string') throw new Error('the supervisor sent no configuration')
  return text
}

/** `text`: the config file's content that `loaded` was read from. */
export function superviseWorkers (configFile: string, loaded: LoadedConfig, text: string): void {
  let snapshot = text
  const log = pino({ ...loggerOptions(process.env.LOG_LEVEL ?? 'info', false) as pino.LoggerOptions, base: { pid: process.pid, role: 'supervisor' } })
  const count = workerCount(loaded.config.server.workers)
  let graceMs = parseDuration(loaded.config.server.shutdownGrace)
  let shuttingDown = false
  const slots: Slot[] = Array.from({ length: count }, (_, index) => ({ index, worker: null, startedAt: 0, youngDeaths: 0, timer: null }))

  const counters = new SupervisorCounters()
  answerWorkers({ ...counters.answerers(), ...metricsAnswerers(), [TOPIC_CONFIG]: () => snapshot })

  const start = (slot: Slot): void => {
    slot.timer = null
    if (shuttingDown) return
    const worker = cluster.fork({ TOKENGATE_WORKER: String(slot.index) })
    slot.worker = worker
    slot.startedAt = Date.now()
    worker.on('message', (message: unknown) => {
      if (isReloaded(message) && !message.applied) log.error({ worker: slot.index, workerPid: worker.process.pid }, 'a worker could not apply the reload and stays on its running configuration')
    })
    worker.once('exit', (code, signal) => {
      slot.worker = null
      if (shuttingDown) return
      const lived = Date.now() - slot.startedAt
      slot.youngDeaths = lived >= STABLE_AFTER_MS ? 1 : slot.youngDeaths + 1
      const delay = restartDelay(slot.youngDeaths)
      log.error({ worker: slot.index, workerPid: worker.process.pid, code, signal, livedMs: lived, restartInMs: delay }, 'worker exited; restarting it')
      slot.timer = setTimeout(() => { start(slot) }, delay)
    })
  }

  for (const slot of slots) start(slot)
  log.info({ workers: count, file: configFile }, `supervising ${count} workers`)

  process.on('SIGHUP', () => {
    if (shuttingDown) return
    let candidate: string
    try {
      candidate = readFileSync(configFile, 'utf8')
    } catch (err) {
      log.error({ file: configFile, err }, 'reload refused: the configuration file cannot be read; every worker stays on the running configuration')
      return
    }
    const { loaded: next, issues } = checkConfig(configFile, process.env, candidate)
    if (next === null) {
      const problems = issues.map(formatIssue)
      log.error({ file: configFile, problems }, `reload refused: ${problems.length} problem(s) in the configuration; every worker stays on the running configuration`)
      console.error(`reload refused: ${problems.length} problem(s) in the configuration`)
      for (const problem of problems) console.error(problem)
      return
    }
    if (workerCount(next.config.server.workers) !== count) log.warn({ keys: ['server.workers'] }, 'reload: the number of workers only changes on a restart')
    graceMs = parseDuration(next.config.server.shutdownGrace)
    snapshot = candidate
    log.info({ file: configFile }, 'SIGHUP: every worker reloads the configuration')
    for (const slot of slots) if (slot.worker?.isConnected() === true) slot.worker.send({ type: RELOAD })
  })

  const shutdown = (signal: NodeJS.Signals): void => {
    if (shuttingDown) return
    shuttingDown = true
    log.info({ signal }, 'shutting down: every worker drains')
    const running: Array<Promise<boolean>> = []
    for (const slot of slots) {
      if (slot.timer !== null) clearTimeout(slot.timer)
      const worker = slot.worker
      if (worker === null) continue
      running.push(new Promise((resolve) => {
        if (worker.process.exitCode !== null) {
          resolve(worker.process.exitCode === 0)
          return
        }
        worker.once('exit', (code) => { resolve(code === 0) })
        worker.process.kill('SIGTERM')
      }))
    }
    // Workers stop within their grace (close-with-grace exits them then);
    // one that still has not is killed, and the exit says so.
    const deadline = setTimeout(() => {
      log.error({ graceMs }, 'workers outlived the shutdown grace; killing them')
      for (const slot of slots) slot.worker?.process.kill('SIGKILL')
    }, graceMs + 5_000)
    void Promise.all(running).then((clean) => {
      clearTimeout(deadline)
      counters.close()
      const ok = clean.every(Boolean)
      log.info({ clean: ok }, 'every worker has exited')
      process.exit(ok ? 0 : 1)
    })
  }
  process.on('SIGTERM', () => { shutdown('SIGTERM') })
  process.on('SIGINT', () => { shutdown('SIGINT') })
}
