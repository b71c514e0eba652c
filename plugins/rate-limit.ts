import fp from 'fastify-plugin'
import fastifyRateLimit, { type RateLimitPluginOptions } from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { LoadedConfig } from '../src/config/load-config.js'
import type { RateLimitConfig, RouteConfig } from '../src/config/schema.js'
import { parseDuration } from '../src/config/duration.js'
import { ERR_RATE_LIMITED, ERR_STORE_UNAVAILABLE } from '../src/errors.js'
import { MemoryLoginThrottle, RedisLoginThrottle, type LoginThrottle } from '../src/limits/login-throttle.js'
import { closeClient, createRedisClient, fastFailClientOptions, outageMessage, watchOutages, whenReady } from '../src/sessions/redis-client.js'
import { RedisRateCounter, rateLimitStoreOf, type WindowCounter } from '../src/limits/redis-rate-counter.js'
import { SupervisorLoginThrottle, SupervisorRateCounter } from '../src/limits/supervisor-counters.js'
import { underSupervisor } from '../src/cluster-ipc.js'
import { clientAddress } from '../src/limits/client-address.js'
import type { RouteSeries } from '../src/ops/gateway-metrics.js'

// Rate limits of proxied routes and the login throttle. Counters live in
// Redis when `redis.url` is set (every instance shares one budget), in the
// supervisor when server.workers > 1 on the embedded store (every worker
// shares one budget), and in process memory otherwise. The limiting is @fastify/rate-limit's, used
// through `createRateLimit`, so this gateway decides the key, the headers,
// the error shape and what happens when Redis fails. Its local store counts
// in memory; in Redis the counting is ours (src/limits/redis-rate-counter.ts), which
// sends the counts of one event-loop turn in one script call.

declare module 'fastify' {
  interface FastifyInstance {
    /** The limiter of a proxied route, compiled once at registration; null when the route is not limited. */
    routeRateLimit (route: RouteConfig): RouteRateLimit | null
    loginThrottle: LoginThrottle
  }
}

export interface RateLimitPluginOpts {
  loaded: LoadedConfig
}

export interface RouteRateLimit {
  /** Counts the request under its client address; sets the headers; throws 429 over the limit. */
  byAddress (request: FastifyRequest, reply: FastifyReply): Promise<void>
  /** The same under the verified user (`request.identity.sub`). */
  byUser (request: FastifyRequest, reply: FastifyReply): Promise<void>
}

/** Without `auth.loginRateLimit.addressMax`, an address may fail this many times an account's budget. */
export const DEFAULT_ADDRESS_FACTOR = 5

type CreateRateLimit = FastifyInstance['createRateLimit']
type Limiter = ReturnType<CreateRateLimit>

/** One registration of @fastify/rate-limit in a scope of its own, so a second one (the local fallback) can sit beside it. */
async function limiterFactory (fastify: FastifyInstance, options: RateLimitPluginOptions): Promise<CreateRateLimit> {
  let factory: CreateRateLimit | undefined
  await fastify.register(async function rateLimitStore (scope) {
    await scope.register(fastifyRateLimit, options)
    factory = scope.createRateLimit
  })
  if (factory === undefined) throw new Error('@fastify/rate-limit did not decorate createRateLimit')
  return factory
}

async function rateLimitPlugin (fastify: FastifyInstance, { loaded }: RateLimitPluginOpts): Promise<void> {
  const { config, redisTarget: target } = loaded
  const connectTimeoutMs = parseDuration(config.redis.connectTimeout)
  const redis = target === null
    ? null
    : createRedisClient(target, fastFailClientOptions(connectTimeoutMs, parseDuration(config.redis.commandTimeout)))

  // Workers on the embedded store count through their supervisor, so that n
  // workers do not give a client n budgets (src/limits/supervisor-counters.ts).
  const bySupervisor = redis === null && underSupervisor()
  const counter: WindowCounter | null = redis !== null
    ? new RedisRateCounter(redis, `${config.redis.keyPrefix}rl:`)
    : bySupervisor ? new SupervisorRateCounter() : null

  // Limiters never wait on the shared counter: a failed count is an immediate error, handled per route below.
  const common: RateLimitPluginOptions = { global: false, skipOnError: false }
  const shared = await limiterFactory(fastify, counter === null ? common : { ...common, store: rateLimitStoreOf(counter) })
  const local = counter === null ? null : await limiterFactory(fastify, common)

  const login = config.auth.loginRateLimit
  const budget = {
    accountMax: login.max,
    addressMax: login.addressMax ?? login.max * DEFAULT_ADDRESS_FACTOR,
    windowMs: parseDuration(login.timeWindow)
  }
  const loginThrottle: LoginThrottle = redis !== null
    ? new RedisLoginThrottle(budget, redis, config.redis.keyPrefix, () => fastify.metrics.redisError('login_throttle'))
    : bySupervisor ? new SupervisorLoginThrottle(budget) : new MemoryLoginThrottle(budget)
  fastify.decorate('loginThrottle', loginThrottle)

  let degraded = false
  const onSharedFailure = (err: unknown, closed: boolean): void => {
    if (degraded) return
    degraded = true
    fastify.log.warn({ err }, closed
      ? 'rate-limit counters unavailable: routes with onStoreError closed answer 503'
      : 'rate-limit counters unavailable: counting per instance until the shared counter is back')
  }
  const onSharedSuccess = (): void => {
    degraded = false
    fastify.log.info('rate-limit counters shared again')
  }

  fastify.decorate('routeRateLimit', function routeRateLimit (route: RouteConfig): RouteRateLimit | null {
    const policy = route.rateLimit ?? config.rateLimit
    if (policy === false) return null
    const inherited = config.rateLimit === false ? undefined : config.rateLimit.onStoreError
    const closed = (policy.onStoreError ?? inherited ?? 'open') === 'closed'
    // Every route's counters share one namespace (createRateLimit children
    // are not told their route), so the key carries the prefix.
    const tag = `${route.prefix}|`
    const addressKey = (request: FastifyRequest): string => `${tag}a:${clientAddress(request)}`
    const userKey = (request: FastifyRequest): string => `${tag}u:${request.identity?.sub ?? ''}`
    const series = fastify.metrics.route(route.prefix)
    const byAddress = compileCheck(shared, local, policy, addressKey, closed, series)
    const byUser = compileCheck(shared, local, policy, userKey, closed, series)
    return { byAddress, byUser }
  })

  function compileCheck (shared: CreateRateLimit, local: CreateRateLimit | null, policy: RateLimitConfig,
    keyGenerator: (request: FastifyRequest) => string, closed: boolean, series: RouteSeries): RouteRateLimit['byAddress'] {
    const options = { max: policy.max, timeWindow: parseDuration(policy.timeWindow), keyGenerator }
    const count = shared(options)
    const fallback: Limiter | null = local === null || closed ? null : local(options)

    return async function checkRateLimit (request, reply) {
      let result: Awaited<ReturnType<Limiter>>
      try {
        result = await count(request)
        if (degraded) onSharedSuccess()
      } catch (err) {
        if (redis !== null) fastify.metrics.redisError('rate_limit')
        onSharedFailure(err, closed)
        if (fallback === null) throw new ERR_STORE_UNAVAILABLE({ cause: err })
        result = await fallback(request)
      }
      if (result.isAllowed) return
      reply.header('x-ratelimit-limit', result.max)
      reply.header('x-ratelimit-remaining', result.remaining)
      reply.header('x-ratelimit-reset', result.ttlInSeconds)
      if (result.isExceeded) {
        const seconds = Math.max(1, result.ttlInSeconds)
        reply.header('retry-after', seconds)
        series.rateLimited()
        throw new ERR_RATE_LIMITED(`${seconds}s`)
      }
    }
  }

  if (redis !== null) {
    watchOutages(redis, (err) => fastify.log.warn({ err }, outageMessage('rate-limit Redis', err)),
      () => fastify.log.info('rate-limit Redis connection is back'))
    fastify.addHook('onReady', async () => {
      // Not fatal: routes follow onStoreError and login answers 503 until Redis answers.
      await whenReady(redis, connectTimeoutMs).catch((err: unknown) => {
        fastify.log.error({ err }, 'rate-limit Redis not reachable at start')
      })
    })
    fastify.addHook('onClose', () => closeClient(redis))
  }
}

export default fp(rateLimitPlugin, {
  name: 'tokengate-rate-limit',
  fastify: '5.x',
  dependencies: ['tokengate-metrics', 'tokengate-authenticate']
})
