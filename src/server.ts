import type { Server } from 'node:http'
import closeWithGrace from 'close-with-grace'
import { buildGateway } from './build-gateway.js'
import { loadConfig } from './config/load-config.js'
import { listenEchoUpstream } from './demo-upstream.js'
import { parseDuration } from './duration.js'
import { loggerOptions } from './logger.js'

// The only file that owns the process: it listens, and it shuts down cleanly
// on SIGTERM/SIGINT, letting in-flight requests finish within the grace.

function prettyAvailable (): boolean {
  try {
    require.resolve('pino-pretty')
    return true
  } catch {
    return false
  }
}

export async function startGateway (configFile: string): Promise<void> {
  const loaded = loadConfig(configFile)
  const { config } = loaded
  const pretty = process.stdout.isTTY === true && prettyAvailable()
  const app = await buildGateway(loaded, { logger: loggerOptions(process.env.LOG_LEVEL ?? 'info', pretty) })

  let demo: Server | undefined
  const echo = config.demo?.echoUpstream
  if (echo?.enabled === true) {
    demo = await listenEchoUpstream(echo.host, echo.port)
    app.log.info({ address: `http://${echo.host}:${echo.port}` }, 'demo echo upstream listening')
  }

  closeWithGrace({ delay: parseDuration(config.server.shutdownGrace) }, async ({ signal, err }) => {
    if (err !== undefined) app.log.error({ err }, 'shutting down after an error')
    else app.log.info({ signal }, 'shutting down')
    await app.close()
    demo?.close()
  })

  await app.ready()
  await app.listen({ host: config.server.host, port: config.server.port })
}
