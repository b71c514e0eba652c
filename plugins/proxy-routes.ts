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
import { ERR_BAD_REQUEST, ERR_BODY_TOO_LARGE, ERR_METHOD_NOT_ALLOWED, ERR_UPSTREAM_UNAVAILABLE } from '../src/errors.js'
import { forwardFacts } from '../src/proxy/forwarded.js'
import { compileIdentityHeaders, type IdentityHeaderWriter } from '../src/proxy/identity-headers.js'
import { ASSERTION_TYP, assertionHeaderNames, IdentityAssertions, routeAssertionPlan } from '../src/proxy/identity-assertion.js'
import { gatewayCookieNames } from '../src/tokens/refresh-cookie.js'
import type { RouteSeries, UpstreamFailure } from '../src/ops/gateway-metrics.js'
import { climbsOut, forward, type ForwardPlan, type RewriteResponseHeaders } from '../src/proxy/upstream-forwarder.js'
import { TargetSet, type UpstreamTarget } from '../src/proxy/upstream-targets.js'
import { websocketConnector } from '../src/proxy/websocket-targets.js'
import { targetLocationRewriter } from '../src/proxy/location-rewrite.js'
import { RetryBudget } from '../src/proxy/retry-budget.js'
import { startHealthChecks } from '../src/proxy/health-check.js'
import { toGatewayError } from '../src/error-response.js'
import { routeCorsPolicy } from '../src/cors/cors-policy.js'
import { WebSocketSessions } from '../src/proxy/websocket-sessions.js'
import type WebSocket from 'ws'
import type { Socket } from 'node:net'
import { Server } from 'node:http'

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
  /** the process's registry of proxied WebSockets, kept across hot reloads; otherwise this gateway's own */
  websockets?: WebSocketSessions
}

const WS_CLIENT_OWNED = /^(sec-websocket-|host$|content-length$)/

async function proxyRoutesPlugin (fastify: FastifyInstance, { config, websockets }: ProxyRoutesOptions): Promise<void> {
  const cookieNames = gatewayCookieNames(config.auth.cookie)
  const writer = compileIdentityHeaders(config.identity.headers, cookieNames, assertionHeaderNames(config))
  const trustProxy = config.server.trustProxy !== false
  fastify.decorateRequest(kUpstreamSentAt, 0)
  // Proxied WebSockets end with their token: revoked anywhere (the denylist
  // mirror hears of it on every instance) or expired. A registry shared
  // across reloads is always watched: a reload that drops every WebSocket
  // route must still close the sockets the previous gateway let in.
  const sockets = websockets ?? (config.routes.some((r) => r.websocket)
    ? new WebSocketSessions({ onClosed: (reason) => fastify.metrics.websocketsClosed.labels(reason).inc() })
    : null)
  // This gateway, as the registry knows it.
  const owner = {}
  if (sockets !== null) {
    const policies = new Set(config.routes.filter((r) => r.websocket).map((r) => websocketPolicy(config, r)))
    const unsubscribe = fastify.denylist.onApplied((entry) => sockets.revoke(entry))
    fastify.addHook('onReady', async () => {
      // This gateway is about to serve: it takes over the open sockets of routes
      // it serves unchanged, and those of changed or removed routes end now.
      sockets.takeOver(owner, policies)
      // @fastify/http-proxy patches server.close to close every client of its
      // WebSocket server (code 1005) when the gateway closes. The registry ends
      // them instead (1008), or hands them to the gateway a reload put in, so
      // the gateway's own (never listening) server closes as a plain one.
      const server = fastify.server
      server.close = (callback?: (err?: Error) => void) => Server.prototype.close.call(server, callback)
    })
    fastify.addHook('preClose', () => {
      unsubscribe()
      sockets.release(owner)
    })
  }
  for (const route of config.routes) {
    const link = route.websocket && sockets !== null ? { sockets, owner, route: websocketPolicy(config, route), closeOnExpiry: config.websocket.closeOnExpiry } : null
    await fastify.register(async function proxiedRoute (scope) {
      registerRoute(scope, config, route, writer, cookieNames, trustProxy, fastify.metrics.route(route.prefix), link)
    })
  }
}

/**
 * What a WebSocket was let in under, as a comparable key: its route entry and
 * everything that decides which tokens are accepted, what the upstream is told
 * of the user, and how long the socket may live. A reload that changes any of
 * it closes the route's sockets; one that leaves it alone keeps them open.
 */
function websocketPolicy (config: GatewayConfig, route: RouteConfig): string {
  const { issuer, audience, algorithm, keys, trustedIssuers } = config.tokens
  return JSON.stringify({ route, tokens: { issuer, audience, algorithm, keys, trustedIssuers }, identity: config.identity, websocket: config.websocket })
}

interface WebSocketLink {
  sockets: WebSocketSessions
  owner: object
  route: string
  closeOnExpiry: boolean
}

function registerRoute (scope: FastifyInstance, config: GatewayConfig, route: RouteConfig, writer: IdentityHeaderWriter, cookieNames: readonly string[], trustProxy: boolean, series: RouteSeries, link: WebSocketLink | null): void {
  const methods = route.methods ?? HTTP_METHODS.filter((m) => m !== 'HEAD')
  const timeout = parseDuration(route.timeout)
  const upstreams = Array.isArray(route.upstream) ? route.upstream : [route.upstream]
  const loggedUpstream = upstreams.map((u) => u.replace(/^(https?:\/\/)[^@/]*@/, '$1')).join(',')
  // Resolved once; @fastify/cors (plugins/cors.ts) reads it from the route config.
  const corsPolicy = routeCorsPolicy(config, route)
  const routeConfig = { routePrefix: route.prefix, upstream: loggedUpstream, accessLog: route.accessLog, cors: corsPolicy === null ? false as const : corsPolicy.options }

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

  const assertionPlan = routeAssertionPlan(config, route)
  const assertions = assertionPlan === null ? null : new IdentityAssertions(assertionPlan, (payload) => scope.accessTokens.sign(payload, ASSERTION_TYP), series.assertionSigner())
  const upstreamHeaders = (request: FastifyRequest): Record<string, string | string[]> => {
    const headers = writer.upstreamHeaders(request.headers, request.identity, forwardFacts(request, trustProxy))
    // The gateway consumed the bearer token; upstreams get the identity headers instead.
    if (route.auth !== 'none') delete headers.authorization
    if (assertions !== null && request.identity !== null) headers[assertions.header] = assertions.for(request.identity)
    return headers
  }

  const targets = new TargetSet(upstreams, { balance: route.balance, ejectAfter: route.ejectAfter, ejectFor: parseDuration(route.ejectFor) })
  for (const target of targets.targets) {
    const targetSeries = series.target(target.origin)
    targetSeries.trackUp(() => target.up)
    target.observer = targetSeries
  }
  // @fastify/http-proxy hands onConnect the two sockets but not the request:
  // the upgrade's TCP socket links them (the client-side ws wraps it).
  const openedWith = new WeakMap<Socket, NonNullable<FastifyRequest['identity']>>()
  const wsHooks = {
    onConnect: (_context: unknown, source: WebSocket, target: WebSocket) => {
      const raw = (source as unknown as { _socket?: Socket })._socket
      const claims = raw === undefined ? undefined : openedWith.get(raw)
      if (claims === undefined || link === null) return
      // A revocation that landed after authenticate let the upgrade in, while
      // the upstream side was opening, found no link to close. This runs
      // before the messages the client sent meanwhile are relayed (their
      // writes wait on the same 'open', queued after this hook), so nothing
      // of theirs reaches the upstream.
      if (scope.denylist.isRevoked(claims, Date.now())) link.sockets.refuse([source, target])
      else link.sockets.add(claims, [source, target], { route: link.route, owner: link.owner, closeOnExpiry: link.closeOnExpiry })
    }
  }
  // A WebSocket upgrade takes its target from the balancer, once it is
  // authorised (a refused upgrade spends no trial request of an ejected
  // target); @fastify/http-proxy asks getUpstream for it when it opens the
  // upstream side. All targets out: 503 before the upgrade, like any request.
  const upgradeTargets = new WeakMap<FastifyRequest, UpstreamTarget>()
  if (route.websocket) {
    scope.addHook('preHandler', async (request, reply) => {
      // Only a real upgrade (Node saw Connection: upgrade) reaches getUpstream's
      // WebSocket side; a plain request that merely names Upgrade must not
      // take a pick (it could hold an ejected target's one trial forever).
      // (Node's parser sets IncomingMessage.upgrade; @types/node leaves it out.)
      if ((request.raw as { upgrade?: boolean }).upgrade !== true || request.headers.upgrade?.toLowerCase() !== 'websocket') return
      const now = performance.now()
      const target = targets.pick(now)
      if (target === null) {
        series.upstreamFailed('unavailable')
        reply.header('retry-after', String(targets.retryAfter(now)))
        throw new ERR_UPSTREAM_UNAVAILABLE()
      }
      upgradeTargets.set(request, target)
      // The client went away before the upstream side was opened: the pick is void.
      request.raw.socket.once('close', () => { if (upgradeTargets.delete(request)) targets.released(target) })
    })
  }
  const wsTargetOf = (request: FastifyRequest): string => {
    const target = upgradeTargets.get(request)
    if (target === undefined) return upstreams[0]
    upgradeTargets.delete(request)
    return target.origin
  }
  const wsClientOptions = {
    createConnection: websocketConnector(targets, upstreams[0].startsWith('https:')),
    rewriteRequestHeaders: (_headers: IncomingHttpHeaders, request: FastifyRequest) => {
      if (request.identity !== null) openedWith.set(request.raw.socket, request.identity)
      const out = upstreamHeaders(request)
      for (const name of Object.keys(out)) if (WS_CLIENT_OWNED.test(name)) delete out[name]
      return out
    }
  }

  const plan: ForwardPlan = {
    targets,
    retries: route.retries,
    budget: new RetryBudget(),
    tracing: scope.tracing,
    timeout,
    requestHeaders: upstreamHeaders,
    onError: (reply, error) => {
      const mapped = toGatewayError(error)
      const failure = UPSTREAM_FAILURE[mapped.code]
      if (failure !== undefined) series.upstreamFailed(failure)
      reply.send(mapped)
    },
    onUnavailable: (reply, retryAfter) => {
      series.upstreamFailed('unavailable')
      reply.header('retry-after', String(retryAfter)).send(new ERR_UPSTREAM_UNAVAILABLE())
    }
  }
  const health = route.healthCheck === undefined ? null : startHealthChecks(targets, route.healthCheck)
  scope.addHook('onClose', async () => {
    health?.stop()
    await targets.close()
  })

  const rewriteLocation = targetLocationRewriter(targets.targets.map((t) => t.origin), route.prefix, route.rewritePrefix ?? '/')
  const options: FastifyHttpProxyOptions = {
    // The HTTP hop balances over the targets in the handler below, WebSockets
    // through getUpstream; the plugin's own upstream is used for neither.
    // With '' and getUpstream it asks getUpstream for every request, HTTP
    // included, so only WebSocket routes pay for that.
    upstream: route.websocket ? '' : upstreams[0],
    prefix: route.prefix,
    rewritePrefix: route.rewritePrefix ?? '/',
    httpMethods: methods,
    config: routeConfig,
    // @fastify/http-proxy has matched the route, rewritten the path and refused
    // traversal out of rewritePrefix; the hop itself is ours (src/proxy/upstream-forwarder.ts).
    // The upstream's answer is written straight to the socket: headers set on
    // the reply before (request id, rate-limit headers) go with it, onResponse
    // hooks run, onSend hooks do not.
    handler: (request, reply, dest, hooks) => {
      if (climbsOut(dest)) throw new ERR_BAD_REQUEST()
      if (declaredLengthExceeds(request.headers['content-length'], route.bodyLimit)) throw new ERR_BODY_TOO_LARGE()
      const body = isReadable(request.body) ? limitBody(request.body, route.bodyLimit) : null
      request[kUpstreamSentAt] = performance.now()
      // `/prefix?q` gives an empty path (the plugin maps a bare `/prefix` to
      // `/` only without a query): the upstream gets `/?q`, as `/prefix/?q` does
      forward(request, reply, dest === '' ? '/' : dest, body, plan, hooks.rewriteHeaders as RewriteResponseHeaders)
    },
    replyOptions: {
      ...(route.websocket ? { getUpstream: (request: unknown) => wsTargetOf(request as FastifyRequest) } : {}),
      // Wrapped by @fastify/http-proxy (a path-only Location rewritten back
      // under the prefix, invalid values dropped) and called once the
      // upstream's answer headers are in: that is the upstream's latency.
      rewriteHeaders: (headers, request) => {
        if (request !== undefined) series.upstreamAnswered((performance.now() - (request as FastifyRequest)[kUpstreamSentAt]) / 1000)
        const location = headers.location
        if (typeof location === 'string') headers.location = rewriteLocation(location)
        const kept = withoutGatewayCookies(headers as IncomingHttpHeaders, cookieNames)
        return corsPolicy === null ? kept : withoutUpstreamCors(kept)
      }
    }
  }
  // Every body is streamed to the upstream as the client sent it, within the
  // route's bodyLimit; Fastify's text/plain parser would buffer and re-encode it.
  scope.removeContentTypeParser('text/plain')
  // The published types leave out wsClientOptions.rewriteRequestHeaders,
  // which the plugin reads (index.js, WebSocketProxy.handleConnection), and
  // type ws's createConnection narrower than ws takes it.
  scope.register(httpProxy, route.websocket
    ? { ...options, websocket: true, wsClientOptions: wsClientOptions as unknown as FastifyHttpProxyOptions['wsClientOptions'], wsHooks }
    : { ...options, websocket: false })

  // A method the route does not allow is a 405 with Allow, not a 404.
  const others = HTTP_METHODS.filter((m) => !methods.includes(m) && !(m === 'HEAD' && methods.includes('GET')))
  if (others.length > 0) {
    const allow = methods.join(', ')
    for (const url of [route.prefix, `${route.prefix.replace(/\/$/, '')}/*`]) {
      scope.route({
        method: others,
        url,
        config: routeConfig,
        handler: async (request, reply) => {
          reply.header('allow', allow)
          throw new ERR_METHOD_NOT_ALLOWED(request.method)
        }
      })
    }
  }
}

/**
 * Where the gateway does CORS, it alone does: the forwarder lets upstream
 * headers win over the reply's, so the upstream's Access-Control-* headers are
 * dropped here and its Vary is merged with ours (Origin) instead of replacing it.
 */
function withoutUpstreamCors (headers: IncomingHttpHeaders): IncomingHttpHeaders {
  for (const name of Object.keys(headers)) if (name.startsWith('access-control-')) headers[name] = undefined
  // @fastify/cors set Vary: Origin on the reply (our origin option is a function).
  const vary = headers.vary
  if (vary !== undefined && !/(^|,)\s*(origin|\*)\s*(,|$)/i.test(vary)) headers.vary = `Origin, ${vary}`
  return headers
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
  dependencies: ['tokengate-metrics', 'tokengate-authenticate', 'tokengate-rate-limit', 'tokengate-tracing']
})
