import type { IncomingHttpHeaders } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { Readable } from 'node:stream'
import fp from 'fastify-plugin'
import httpProxy, { type FastifyHttpProxyOptions } from '@fastify/http-proxy'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { GatewayConfig, RouteConfig } from '../src/config/schema.js'
import { HTTP_METHODS } from '../src/config/schema.js'
import { declaredLengthExceeds, limitBody } from '../src/proxy/body-limit.js'
import { parseDuration } from '../src/config/duration.js'
import { ERR_BAD_REQUEST, ERR_BODY_TOO_LARGE, ERR_METHOD_NOT_ALLOWED } from '../src/errors.js'
import { forwardFacts } from '../src/proxy/forwarded.js'
import { compileIdentityHeaders, type IdentityHeaderWriter } from '../src/proxy/identity-headers.js'
import { gatewayCookieNames } from '../src/tokens/refresh-cookie.js'
import type { RouteSeries, UpstreamFailure } from '../src/ops/gateway-metrics.js'
import { climbsOut, forward, upstreamPool, type ForwardPlan, type RewriteResponseHeaders } from '../src/proxy/upstream-forwarder.js'
import { toGatewayError } from '../src/error-response.js'

// One encapsulated @fastify/http-proxy per configured route, each with its own
// hooks: rate limit + authenticate → authorize → size guard → proxy. Everything a route
// needs per request (header plan, policy, limits) is computed here, once.

/**
 * Per-request state of this plugin's own, under a symbol nothing outside
 * this file can name (as fastify keeps its kName symbols): it stays off the
 * request's public surface, with no allocation beyond the decorated slot.
 */
const kUpstreamSentAt = Symbol('tokengate.upstreamSentAt')

declare module 'fastify' {
  interface FastifyContextConfig {
    /** the route prefix a proxied request matched, for logs and metrics */
    routePrefix?: string
    /** the upstream a proxied route sends to (without any userinfo), for the access log */
    upstream?: string
  }
  interface FastifyRequest {
    /** performance.now() when a proxied request was handed to the upstream; 0 before */
    [kUpstreamSentAt]: number
  }
}

/** Which of our upstream errors counts as which kind of upstream failure. */
const UPSTREAM_FAILURE: Record<string, UpstreamFailure> = {
  TG_UPSTREAM_TIMEOUT: 'timeout',
  TG_UPSTREAM_UNAVAILABLE: 'unavailable',
  TG_UPSTREAM_BAD_GATEWAY: 'bad_gateway'
}

export interface ProxyRoutesOptions {
  config: GatewayConfig
}

const WS_CLIENT_OWNED = /^(sec-websocket-|host$|content-length$)/

async function proxyRoutesPlugin (fastify: FastifyInstance, { config }: ProxyRoutesOptions): Promise<void> {
  const cookieNames = gatewayCookieNames(config.auth.cookie)
  const writer = compileIdentityHeaders(config.identity.headers, cookieNames)
  const trustProxy = config.server.trustProxy !== false
  fastify.decorateRequest(kUpstreamSentAt, 0)
  for (const route of config.routes) {
    await fastify.register(async function proxiedRoute (scope) {
      registerRoute(scope, route, writer, cookieNames, trustProxy, fastify.metrics.route(route.prefix))
    })
  }
}

function registerRoute (scope: FastifyInstance, route: RouteConfig, writer: IdentityHeaderWriter, cookieNames: readonly string[], trustProxy: boolean, series: RouteSeries): void {
  const methods = route.methods ?? HTTP_METHODS.filter((m) => m !== 'HEAD')
  const timeout = parseDuration(route.timeout)
  const loggedUpstream = route.upstream.replace(/^(https?:\/\/)[^@/]*@/, '$1')

  const authenticate = route.auth === 'none' ? null : scope.authenticateWith({ mode: route.auth, scopes: route.scopes, roles: route.roles, ...(route.issuers === undefined ? {} : { issuers: route.issuers }) })
  const limit = scope.routeRateLimit(route)
  if (limit === null) {
    if (authenticate !== null) scope.addHook('onRequest', authenticate)
  } else if (authenticate === null) {
    scope.addHook('onRequest', limit.byAddress)
  } else {
    // The budget is the verified user's, so a request with a bearer token can
    // only be counted once its token has been verified. A request without one
    // is counted by address before any token work (its key needs none), and
    // one whose token is refused is charged to its address as well: a flood
    // of forged tokens spends an address budget like any anonymous traffic.
    scope.addHook('onRequest', async function limitAndAuthenticate (request, reply) {
      if (request.headers.authorization === undefined) {
        await limit.byAddress(request, reply)
        authenticate.check(request)
        return
      }
      try {
        authenticate.check(request)
      } catch (err) {
        await limit.byAddress(request, reply)
        throw err
      }
      return request.identity === null ? limit.byAddress(request, reply) : limit.byUser(request, reply)
    })
  }

  const upstreamHeaders = (request: FastifyRequest): Record<string, string | string[]> => {
    const headers = writer.upstreamHeaders(request.headers, request.identity, forwardFacts(request, trustProxy))
    // The gateway consumed the bearer token; upstreams get the identity headers instead.
    if (route.auth !== 'none') delete headers.authorization
    return headers
  }

  const wsClientOptions = {
    rewriteRequestHeaders: (_headers: IncomingHttpHeaders, request: FastifyRequest) => {
      const out = upstreamHeaders(request)
      for (const name of Object.keys(out)) if (WS_CLIENT_OWNED.test(name)) delete out[name]
      return out
    }
  }

  const plan: ForwardPlan = {
    pool: upstreamPool(route.upstream),
    timeout,
    requestHeaders: upstreamHeaders,
    onError: (reply, error) => {
      const mapped = toGatewayError(error)
      const failure = UPSTREAM_FAILURE[mapped.code]
      if (failure !== undefined) series.upstreamFailed(failure)
      reply.send(mapped)
    }
  }
  scope.addHook('onClose', () => plan.pool.destroy())

  const options: FastifyHttpProxyOptions = {
    upstream: route.upstream,
    prefix: route.prefix,
    rewritePrefix: route.rewritePrefix ?? '/',
    httpMethods: methods,
    config: { routePrefix: route.prefix, upstream: loggedUpstream },
    // @fastify/http-proxy has matched the route, rewritten the path and refused
    // traversal out of rewritePrefix; the hop itself is ours (src/upstream-forwarder.ts).
    // The upstream's answer is written straight to the socket: headers set on
    // the reply before (request id, rate-limit headers) go with it, onResponse
    // hooks run, onSend hooks do not.
    handler: (request, reply, dest, hooks) => {
      if (climbsOut(dest)) throw new ERR_BAD_REQUEST()
      if (declaredLengthExceeds(request.headers['content-length'], route.bodyLimit)) throw new ERR_BODY_TOO_LARGE()
      const body = isReadable(request.body) ? limitBody(request.body, route.bodyLimit) : null
      request[kUpstreamSentAt] = performance.now()
      forward(request, reply, dest, body, plan, hooks.rewriteHeaders as RewriteResponseHeaders)
    },
    replyOptions: {
      // Wrapped by @fastify/http-proxy (Location rewritten back under the
      // prefix, invalid values dropped) and called once the upstream's answer
      // headers are in: that is the upstream's latency.
      rewriteHeaders: (headers, request) => {
        if (request !== undefined) series.upstreamAnswered((performance.now() - (request as FastifyRequest)[kUpstreamSentAt]) / 1000)
        return withoutGatewayCookies(headers as IncomingHttpHeaders, cookieNames)
      }
    }
  }
  // Every body is streamed to the upstream as the client sent it, within the
  // route's bodyLimit; Fastify's text/plain parser would buffer and re-encode it.
  scope.removeContentTypeParser('text/plain')
  // The published types leave out wsClientOptions.rewriteRequestHeaders,
  // which the plugin reads (index.js, WebSocketProxy.handleConnection).
  scope.register(httpProxy, route.websocket
    ? { ...options, websocket: true, wsClientOptions: wsClientOptions as FastifyHttpProxyOptions['wsClientOptions'] }
    : { ...options, websocket: false })

  // A method the route does not allow is a 405 with Allow, not a 404.
  const others = HTTP_METHODS.filter((m) => !methods.includes(m) && !(m === 'HEAD' && methods.includes('GET')))
  if (others.length > 0) {
    const allow = methods.join(', ')
    for (const url of [route.prefix, `${route.prefix.replace(/\/$/, '')}/*`]) {
      scope.route({
        method: others,
        url,
        config: { routePrefix: route.prefix, upstream: loggedUpstream },
        handler: async (request, reply) => {
          reply.header('allow', allow)
          throw new ERR_METHOD_NOT_ALLOWED(request.method)
        }
      })
    }
  }
}

function isReadable (body: unknown): body is Readable {
  return body !== null && typeof body === 'object' && typeof (body as Readable).pipe === 'function'
}

/** An upstream may not set or clear the gateway's own cookies. */
function withoutGatewayCookies (headers: IncomingHttpHeaders, cookieNames: readonly string[]): IncomingHttpHeaders {
  const setCookie = headers['set-cookie']
  if (setCookie === undefined) return headers
  const kept = setCookie.filter((c) => !cookieNames.includes(c.slice(0, c.indexOf('=')).trim()))
  if (kept.length === 0) delete headers['set-cookie']
  else headers['set-cookie'] = kept
  return headers
}

export default fp(proxyRoutesPlugin, {
  name: 'tokengate-proxy-routes',
  fastify: '5.x',
  dependencies: ['tokengate-metrics', 'tokengate-authenticate', 'tokengate-rate-limit']
})
