import { BatchedLogDestination } from './ops/log-destination.js'
import type { Server } from 'node:http'
import closeWithGrace from 'close-with-grace'
import { pino } from 'pino'
import { collectDefaultMetrics } from 'prom-client'
import { isDeepStrictEqual } from 'node:util'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { buildGateway } from './build-gateway.js'
import { loadConfig, type LoadedConfig } from './config/load-config.js'
import { ConfigError, formatIssue } from './config/yaml-source.js'
import { listenEchoUpstream } from './demo/demo-upstream.js'
import { listenExampleAppServer } from './demo/example-app.js'
import { parseDuration } from './config/duration.js'
import { GatewayHost } from './gateway-host.js'
import { GatewayMetrics, METRIC_PREFIX } from './ops/gateway-metrics.js'
import { loggerOptions } from './ops/logger.js'
import { serverLimits } from './ops/server-limits.js'
import type { SessionStore } from './sessions/session-store.js'
import { openStore } from './sessions/open-store.js'
import { WebSocketSessions } from './proxy/websocket-sessions.js'
import { shareMetricsWithSupervisor } from './ops/cluster-metrics.js'
import { RELOAD, RELOADED, configSnapshot, reusePortFor, type ReloadedMessage } from './supervisor.js'

// The only file that owns the process: it listens, reloads the config on
// SIGHUP, and shuts down cleanly on SIGTERM/SIGINT, letting in-flight
// requests finish within the grace.
//
// What lives as long as the process, across reloads: the listening server
// (src/gateway-host.ts), the logger, the metrics registry, the registry of
// proxied WebSockets (a reload keeps those of unchanged routes open) and the
// session store (reopened only when the redis or store section changed, so a
// reload never drops the connection to the state it shares).

function prettyAvailable (): boolean {
  try {
    require.resolve('pino-pretty')
    return true
  } catch {
    return false
  }
}

/** Keys a reload cannot change on a running server. */
function restartOnlyChanges (before: LoadedConfig['config'], after: LoadedConfig['config']): string[] {
  const changed: string[] = []
  if (before.server.host !== after.server.host) changed.push('server.host')
  if (before.server.port !== after.server.port) changed.push('server.port')
  if (before.server.maxHeaderSize !== after.server.maxHeaderSize) changed.push('server.maxHeaderSize')
  if (!isDeepStrictEqual(before.demo, after.demo)) changed.push('demo')
  return changed
}

export interface StartOptions {
  /** one of server.workers processes under src/supervisor.ts: reloads when it says, shares its port and metrics */
  worker?: boolean
}

export async function startGateway (configFile: string, options: StartOptions = {}): Promise<void> {
  const worker = options.worker === true
  // A worker reads the config its supervisor accepted, not whatever the file holds now.
  const read = async (): Promise<LoadedConfig> => loadConfig(configFile, process.env, worker ? await configSnapshot() : undefined)
  let loaded = await read()
  const { config } = loaded
  const pretty = process.stdout.isTTY === true && prettyAvailable()
  // One access line per request: lines are written in batches (at the end of
  // each event-loop turn to a pipe, every few milliseconds to a file: see
  // src/ops/log-destination.ts), and whatever is still held is written on
  // exit, on SIGTERM and on SIGHUP, so a clean stop loses none. pino-pretty
  // has its own worker.
  const destination = pretty ? undefined : new BatchedLogDestination(1)
  if (destination !== undefined) process.on('exit', () => { destination.flushSync() })
  const log: FastifyBaseLogger = pino(loggerOptions(process.env.LOG_LEVEL ?? 'info', pretty) as pino.LoggerOptions, ...(destination === undefined ? [] : [destination]))
  const metrics = new GatewayMetrics()
  collectDefaultMetrics({ register: metrics.registry, prefix: METRIC_PREFIX })
  if (worker) shareMetricsWithSupervisor(metrics)
  let store: SessionStore = openStore(loaded, log, metrics)

  // Open WebSockets outlive a reload when their route's policy did not change.
  const websockets = new WebSocketSessions({ onClosed: (reason) => metrics.websocketsClosed.labels(reason).inc() })
  const build = (from: LoadedConfig, sessions: SessionStore): Promise<FastifyInstance> => buildGateway(from, { loggerInstance: log, store: sessions, metrics, websockets })
  const first = await build(loaded, store)
  const host = new GatewayHost(first, serverLimits(config.server))

  let demo: Server | undefined
  const echo = config.demo?.echoUpstream
  // One demo upstream per gateway: with workers, the first worker's.
  if (echo?.enabled === true && (!worker || process.env.TOKENGATE_WORKER === '0')) {
    demo = await listenEchoUpstream(echo.host, echo.port)
    log.info({ address: `http://${echo.host}:${echo.port}` }, 'demo echo upstream listening')
  }
  let demoApp: Server | undefined
  const browserApp = config.demo?.browserApp
  if (browserApp?.enabled === true) {
    demoApp = await listenExampleAppServer(browserApp.host, browserApp.port, browserApp.gateway)
    log.info({ address: `http://${browserApp.host}:${browserApp.port}/app/`, gateway: browserApp.gateway }, 'example browser app listening on its own origin')
  }

  let shuttingDown = false
  let reloading: Promise<void> | null = null
  let reloadAgain = false

  /** True when the new configuration is the running one. */
  const reload = async (): Promise<boolean> => {
    let next: LoadedConfig
    try {
      next = await read()
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      const problems = err.issues.map(formatIssue)
      log.error({ file: configFile, problems }, `reload refused: ${problems.length} problem(s) in the configuration; the running configuration stays`)
      console.error(`reload refused: ${problems.length} problem(s) in the configuration`)
      for (const problem of problems) console.error(problem)
      return false
    }
    // against what the process started with: a reload that was told to change
    // server.port still runs on the old one, and one that puts it back is no change
    const ignored = restartOnlyChanges(config, next.config)
    if (ignored.length > 0) log.warn({ keys: ignored }, 'reload: these keys only change on a restart and keep their running values')

    // redisTarget holds the TLS files' content: a renewed certificate reopens the store
    const sameStore = isDeepStrictEqual(loaded.config.redis, next.config.redis) && isDeepStrictEqual(loaded.redisTarget, next.redisTarget) && isDeepStrictEqual(loaded.config.store, next.config.store)
    const nextStore = sameStore ? store : openStore(next, log, metrics)
    let app: FastifyInstance | undefined
    try {
      app = await build(next, nextStore)
      await app.ready()
    } catch (err) {
      log.error({ err }, 'reload failed while starting the new configuration; the running configuration stays')
      // A gateway that got as far as taking over sockets hands them back as it closes.
      await app?.close().catch(() => {})
      if (!sameStore) await nextStore.close()
      return false
    }
    const previousStore = store
    store = nextStore
    loaded = next
    host.applyLimits(serverLimits(next.config.server))
    log.info({ file: configFile, routes: next.config.routes.map((r) => r.prefix) }, 'configuration reloaded')
    const graceMs = parseDuration(next.config.server.shutdownGrace)
    // The old gateway finishes its requests in the background; another reload need not wait for it.
    void host.swap(app, graceMs).then(async (drained) => {
      if (!drained) log.warn({ graceMs }, 'reload: requests of the previous configuration outlived the grace and were cut')
      else log.info('reload: the previous configuration finished its requests and is closed')
      if (!sameStore) await previousStore.close()
    }).catch((err: unknown) => { log.error({ err }, 'reload: closing the previous configuration failed') })
    return true
  }

  const startReload = (): void => {
    log.info({ file: configFile }, 'SIGHUP: reloading the configuration')
    reloading = reload()
      .catch((err: unknown) => {
        log.error({ err }, 'reload failed; the running configuration stays')
        return false
      })
      .then((applied) => {
        if (worker && process.connected === true) process.send?.({ type: RELOADED, applied } satisfies ReloadedMessage)
      })
      .finally(() => {
        reloading = null
        // A SIGHUP during a reload may come from a file written after this one read it.
        if (reloadAgain && !shuttingDown) {
          reloadAgain = false
          startReload()
        }
      })
  }
  const onReload = (): void => {
    destination?.flushSync()
    if (shuttingDown) return
    if (reloading !== null) reloadAgain = true
    else startReload()
  }
  if (worker) {
    // The supervisor validates a reload before it tells every worker; a
    // SIGHUP sent to the whole process group must not reload behind its back
    // (nor kill the worker, SIGHUP's default).
    process.on('SIGHUP', () => { destination?.flushSync() })
    process.on('message', (message: unknown) => {
      if (typeof message === 'object' && message !== null && (message as { type?: unknown }).type === RELOAD) onReload()
    })
    // A supervisor that died (kill -9) leaves no one to restart or stop us: drain and go.
    process.on('disconnect', () => { stop('disconnect') })
  } else {
    process.on('SIGHUP', onReload)
  }

  const shutdownGraceMs = parseDuration(config.server.shutdownGrace)
  // SIGHUP is a reload here, not one of close-with-grace's shutdown signals.
  // A worker may get SIGTERM twice — its supervisor's and, say, systemd's to
  // the whole cgroup — and SIGINT from a terminal's Ctrl-C along with the
  // supervisor's SIGTERM; close-with-grace exits at once on a second signal,
  // cutting the drain. So a worker takes its stop signals itself: the first
  // SIGTERM drains, later ones and SIGINT change nothing (the supervisor
  // answers Ctrl-C with a SIGTERM).
  let stopSignal: string | undefined
  const grace = closeWithGrace({ delay: shutdownGraceMs, skip: worker ? ['SIGHUP', 'SIGTERM', 'SIGINT'] : ['SIGHUP'] }, async ({ signal, err }) => {
    shuttingDown = true
    if (err !== undefined) log.error({ err }, 'shutting down after an error')
    else log.info({ signal: signal ?? stopSignal }, 'shutting down')
    if (reloading !== null) await reloading
    // close-with-grace exits 1 at the grace; stop waiting for requests a little before, to close cleanly.
    await host.close(Math.floor(shutdownGraceMs * 0.9))
    await store.close()
    demo?.close()
    demoApp?.close()
    destination?.flushSync()
  })

  function stop (why: string): void {
    if (stopSignal !== undefined || shuttingDown) return
    stopSignal = why
    void grace.close()
  }
  if (worker) {
    process.on('SIGTERM', () => { stop('SIGTERM') })
    process.on('SIGINT', () => { /* the supervisor decides: it sends SIGTERM */ })
  }

  await first.ready()
  await host.listen(config.server.host, config.server.port, worker && reusePortFor(config.server.port))
  const address = host.server.address()
  const port = address !== null && typeof address === 'object' ? address.port : config.server.port
  log.info(`Server listening at http://${config.server.host}:${port}`)
}
