import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import cookie from '@fastify/cookie'
import type { LoadedConfig } from './config/load-config.js'
import { httpServerOptions, serverLimits } from './ops/server-limits.js'
import { requestIdFor } from './ops/request-id.js'
import { clientErrorHandler } from './ops/client-error.js'
import { answerFrameworkError } from './error-response.js'
import type { SessionStore } from './sessions/session-store.js'
import type { GatewayMetrics } from './ops/gateway-metrics.js'
import type { WebSocketSessions } from './proxy/websocket-sessions.js'
import errors from '../plugins/errors.js'
import metrics from '../plugins/metrics.js'
import tracing from '../plugins/tracing.js'
import requestId from '../plugins/request-id.js'
import store from '../plugins/store.js'
import tokens from '../plugins/tokens.js'
import authenticate from '../plugins/authenticate.js'
import authRoutes from '../plugins/auth-routes.js'
import sessionRoutes from '../plugins/session-routes.js'
import adminRoutes from '../plugins/admin-routes.js'
import health from '../plugins/health.js'
import userSource from '../plugins/user-source.js'
import oauthRoutes from '../plugins/oauth-routes.js'
import passwordRoutes from '../plugins/password-routes.js'
import accessLog from '../plugins/access-log.js'
import proxyRoutes from '../plugins/proxy-routes.js'
import rateLimit from '../plugins/rate-limit.js'
import cors from '../plugins/cors.js'

export interface BuildOptions {
  logger?: FastifyServerOptions['logger']
  /** A logger the caller owns (one for the process, across hot reloads); wins over `logger`. */
  loggerInstance?: FastifyBaseLogger
  /** A store the caller owns (tests, several gateways on one store); otherwise opened from config. */
  store?: SessionStore
  /** A metrics registry the caller owns (hot reload keeps one across gateways); otherwise a fresh one. */
  metrics?: GatewayMetrics
  /** The process's proxied WebSockets (hot reload hands them from one gateway to the next); otherwise the gateway's own. */
  websockets?: WebSocketSessions
}

/** A hop count trusts that many proxies nearest to us, as proxy-addr counts them. */
function trustProxyOption (value: LoadedConfig['config']['server']['trustProxy']): boolean | string | string[] | ((address: string, hop: number) => boolean) {
  return typeof value === 'number' ? (_address, hop) => hop < value : value
}

/**
 * Composes the gateway from its plugins for one loaded config. It never
 * listens and never touches the process: src/server.ts does that.
 */
export async function buildGateway (loaded: LoadedConfig, options: BuildOptions = {}): Promise<FastifyInstance> {
  const { config } = loaded
  const limits = serverLimits(config.server)
  const app = Fastify({
    ...(options.loggerInstance === undefined ? { logger: options.logger ?? false } : { loggerInstance: options.loggerInstance }),
    trustProxy: trustProxyOption(config.server.trustProxy),
    bodyLimit: config.server.bodyLimit,
    genReqId: requestIdFor,
    // plugins/access-log.ts writes one line per request instead of Fastify's two
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    requestTimeout: limits.requestTimeout,
    keepAliveTimeout: limits.keepAliveTimeout,
    http: httpServerOptions(limits),
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // errors raised before routing answer with our body and a TG_ code too
    clientErrorHandler: clientErrorHandler(limits.maxHeaderSize),
    frameworkErrors: answerFrameworkError,
    // Our schemas reject what they do not know; nothing is coerced or dropped silently.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true } }
  })

  await app.register(errors)
  // before any plugin adds a route: each route gets its line when it is added
  await app.register(accessLog)
  await app.register(metrics, { config: config.metrics, ...(options.metrics === undefined ? {} : { metrics: options.metrics }) })
  await app.register(tracing, { config: config.tracing })
  await app.register(requestId)
  await app.register(cors, { config })
  await app.register(cookie)
  await app.register(store, { loaded, ...(options.store === undefined ? {} : { store: options.store }) })
  await app.register(tokens, { loaded })
  await app.register(authenticate)
  await app.register(userSource, { loaded })
  await app.register(health)
  await app.register(rateLimit, { loaded })
  await app.register(authRoutes, { loaded })
  await app.register(sessionRoutes)
  await app.register(oauthRoutes, { loaded })
  await app.register(passwordRoutes)
  await app.register(adminRoutes, { adminRole: config.auth.adminRole })
  await app.register(proxyRoutes, { config, ...(options.websockets === undefined ? {} : { websockets: options.websockets }) })
  return app
}
