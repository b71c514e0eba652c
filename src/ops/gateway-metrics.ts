import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { SOCKET_CLOSE_REASONS } from '../proxy/websocket-sessions.js'

// What the gateway counts, in a prom-client Registry of its own (one per
// gateway, or one shared across hot reloads so counters survive them). The
// per-request path touches prebuilt label sets only: a route resolves its
// label strings once, when it is registered, and a (method, status class)
// cell once, on first use; nothing is built from the request's URL.

export const METRIC_PREFIX = 'tokengate_'

/** Outcomes of the token lifecycle, each a `tokengate_auth_events_total{outcome}` series. */
export const AUTH_OUTCOMES = [
  'login', 'login_failed', 'rate_limited',
  'refresh', 'refresh_grace', 'refresh_failed', 'reuse_detected',
  'logout', 'logout_all',
  'missing_token', 'invalid_token', 'expired_token', 'revoked', 'insufficient_scope'
] as const
export type AuthOutcome = typeof AUTH_OUTCOMES[number]

/** Which Redis connection failed a command. */
export const REDIS_CLIENTS = ['store', 'rate_limit', 'login_throttle'] as const
export type RedisClientName = typeof REDIS_CLIENTS[number]

export const UPSTREAM_FAILURES = ['timeout', 'unavailable', 'bad_gateway'] as const
export type UpstreamFailure = typeof UPSTREAM_FAILURES[number]

/** The route label of requests that matched no route: never the raw URL, which a client chooses. */
export const UNMATCHED_ROUTE = '(unmatched)'

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const
const OTHER_METHOD = 'OTHER'
const METHOD_INDEX = new Map<string, number>(METHODS.map((m, i) => [m, i]))
const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const

/** Seconds; from a cached token check to a slow upstream. */
export const REQUEST_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

type RequestLabel = 'route' | 'method' | 'status'

interface Cell {
  count: Counter.Internal
  duration: Histogram.Internal<RequestLabel>
}

/** The series of one route, resolved when the route is registered. */
export class RouteSeries {
  readonly route: string
  readonly #metrics: GatewayMetrics
  readonly #cells: Array<Cell | undefined> = []
  #upstream: Histogram.Internal<'route'> | undefined
  #rateLimited: Counter.Internal | undefined

  constructor (metrics: GatewayMetrics, route: string) {
    this.#metrics = metrics
    this.route = route
  }

  /** One finished request. */
  observe (method: string, statusCode: number, seconds: number): void {
    const m = METHOD_INDEX.get(method) ?? METHODS.length
    const c = statusCode >= 100 && statusCode < 600 ? Math.floor(statusCode / 100) - 1 : 4
    const index = m * STATUS_CLASSES.length + c
    let cell = this.#cells[index]
    if (cell === undefined) {
      const labels = [this.route, METHODS[m] ?? OTHER_METHOD, STATUS_CLASSES[c]] as const
      cell = { count: this.#metrics.requests.labels(...labels), duration: this.#metrics.requestDuration.labels(...labels) }
      this.#cells[index] = cell
    }
    cell.count.inc()
    cell.duration.observe(seconds)
  }

  /** The upstream's answer headers arrived this long after the request was sent on. */
  upstreamAnswered (seconds: number): void {
    this.#upstream ??= this.#metrics.upstreamDuration.labels(this.route)
    this.#upstream.observe(seconds)
  }

  upstreamFailed (kind: UpstreamFailure): void {
    this.#metrics.upstreamErrors.labels(this.route, kind).inc()
  }

  rateLimited (): void {
    this.#rateLimited ??= this.#metrics.rateLimited.labels(this.route)
    this.#rateLimited.inc()
  }

  /** Counts the identity assertions this route signs (cache misses only). */
  assertionSigner (): () => void {
    const child = this.#metrics.assertionsSigned.labels(this.route)
    child.inc(0)
    return () => child.inc()
  }

  /** The per-target series of one upstream target of this route (its origin, without userinfo). */
  target (origin: string): TargetSeries {
    return this.#metrics.target(this.route, origin)
  }
}

/** Why a trusted issuer's token was refused: a fixed set, so no label comes from a token. */
export const ISSUER_REFUSALS = ['alg', 'no_kid', 'unknown_kid', 'not_ready', 'signature', 'expired', 'typ', 'audience', 'claims', 'lifetime'] as const
export type IssuerRefusalReason = typeof ISSUER_REFUSALS[number]

/** What one trusted issuer reports; its label is the configured issuer, never a token's iss. */
export interface IssuerSeries {
  accepted (): void
  refused (reason: IssuerRefusalReason): void
  fetched (): void
  fetchFailed (): void
  /** where the keys gauge reads the issuer's loaded key count from */
  trackKeys (count: () => number): void
}

/** What a route's target reports: prebuilt children, so the request path only increments. */
export interface TargetSeries {
  request (): void
  failure (): void
  ejection (): void
  /** where the up gauge reads the target's state from (1 in, 0 ejected) */
  trackUp (up: () => number): void
}

export class GatewayMetrics {
  readonly registry = new Registry()
  readonly requests: Counter<RequestLabel>
  readonly requestDuration: Histogram<RequestLabel>
  readonly upstreamDuration: Histogram<'route'>
  readonly upstreamErrors: Counter<'route' | 'kind'>
  readonly rateLimited: Counter<'route'>
  readonly authEvents: Counter<'outcome'>
  readonly redisErrors: Counter<'client'>
  readonly targetRequests: Counter<'route' | 'target'>
  readonly targetFailures: Counter<'route' | 'target'>
  readonly targetEjections: Counter<'route' | 'target'>
  readonly #targetUp = new Map<string, { route: string, target: string, up: () => number }>()
  readonly websocketsClosed: Counter<'reason'>
  readonly assertionsSigned: Counter<'route'>
  readonly issuerTokens: Counter<'issuer' | 'result' | 'reason'>
  readonly issuerFetches: Counter<'issuer' | 'result'>
  readonly #issuerKeys = new Map<string, () => number>()
  readonly #auth = new Map<AuthOutcome, Counter.Internal>()
  readonly #redis = new Map<RedisClientName, Counter.Internal>()
  readonly #routes = new Map<string, RouteSeries>()
  #denylistSize: () => number = () => 0

  constructor () {
    const registers = [this.registry]
    this.requests = new Counter({
      name: `${METRIC_PREFIX}http_requests_total`,
      help: 'Requests answered, by route (prefix or endpoint path), method and status class',
      labelNames: ['route', 'method', 'status'],
      registers
    })
    this.requestDuration = new Histogram({
      name: `${METRIC_PREFIX}http_request_duration_seconds`,
      help: 'Time from the request\'s arrival to the end of the answer, by route, method and status class',
      labelNames: ['route', 'method', 'status'],
      buckets: REQUEST_BUCKETS,
      registers
    })
    this.upstreamDuration = new Histogram({
      name: `${METRIC_PREFIX}upstream_duration_seconds`,
      help: 'Time from sending a proxied request to the upstream\'s answer headers, by route',
      labelNames: ['route'],
      buckets: REQUEST_BUCKETS,
      registers
    })
    this.upstreamErrors = new Counter({
      name: `${METRIC_PREFIX}upstream_errors_total`,
      help: 'Proxied requests the upstream failed: timeout (504), unavailable (503), bad_gateway (502), by route',
      labelNames: ['route', 'kind'],
      registers
    })
    this.rateLimited = new Counter({
      name: `${METRIC_PREFIX}rate_limited_total`,
      help: 'Proxied requests refused with 429 by the route\'s rate limit, by route',
      labelNames: ['route'],
      registers
    })
    this.authEvents = new Counter({
      name: `${METRIC_PREFIX}auth_events_total`,
      help: 'Token lifecycle outcomes: logins, refreshes, reuse, logouts and refused access tokens',
      labelNames: ['outcome'],
      registers
    })
    this.redisErrors = new Counter({
      name: `${METRIC_PREFIX}redis_errors_total`,
      help: 'Redis commands that failed, by client: store (sessions, denylist), rate_limit, login_throttle',
      labelNames: ['client'],
      registers
    })
    this.targetRequests = new Counter({
      name: `${METRIC_PREFIX}upstream_target_requests_total`,
      help: 'Attempts sent to one upstream target (retries included), by route and target',
      labelNames: ['route', 'target'],
      registers
    })
    this.targetFailures = new Counter({
      name: `${METRIC_PREFIX}upstream_target_failures_total`,
      help: 'Attempts to one upstream target that failed to connect, were reset or timed out, by route and target',
      labelNames: ['route', 'target'],
      registers
    })
    this.targetEjections = new Counter({
      name: `${METRIC_PREFIX}upstream_target_ejections_total`,
      help: 'Times an upstream target was ejected (passive failures or active health check), by route and target',
      labelNames: ['route', 'target'],
      registers
    })
    const ups = this.#targetUp
    new Gauge({
      name: `${METRIC_PREFIX}upstream_target_up`,
      help: '1 while an upstream target takes traffic, 0 while it is ejected or held out by the active health check, by route and target',
      labelNames: ['route', 'target'],
      registers,
      // With server.workers each worker checks its targets: 1 only while every worker sends to it.
      aggregator: 'min',
      collect () {
        for (const { route, target, up } of ups.values()) this.labels(route, target).set(up())
      }
    })
    this.websocketsClosed = new Counter({
      name: `${METRIC_PREFIX}websockets_closed_total`,
      help: 'Proxied WebSockets the gateway closed: revoked (their token was revoked), expired (their token expired), route_changed (a reload changed or removed their route), shutdown (the gateway stopped)',
      labelNames: ['reason'],
      registers
    })
    for (const reason of SOCKET_CLOSE_REASONS) this.websocketsClosed.labels(reason).inc(0)
    this.assertionsSigned = new Counter({
      name: `${METRIC_PREFIX}identity_assertions_signed_total`,
      help: 'Identity assertions signed for upstreams, by route (once per token and route and ttl/2: cached in between)',
      labelNames: ['route'],
      registers
    })
    this.issuerTokens = new Counter({
      name: `${METRIC_PREFIX}trusted_issuer_tokens_total`,
      help: 'Tokens of a trusted issuer verified (cache misses), by configured issuer, result (accepted, refused) and refusal reason',
      labelNames: ['issuer', 'result', 'reason'],
      registers
    })
    this.issuerFetches = new Counter({
      name: `${METRIC_PREFIX}trusted_issuer_jwks_fetches_total`,
      help: 'JWKS fetches of a trusted issuer, by configured issuer and result (ok, failed)',
      labelNames: ['issuer', 'result'],
      registers
    })
    const issuerKeys = this.#issuerKeys
    new Gauge({
      name: `${METRIC_PREFIX}trusted_issuer_keys`,
      help: 'Keys loaded from a trusted issuer\'s JWKS, by configured issuer; 0: not ready, its tokens are refused',
      labelNames: ['issuer'],
      registers,
      collect () {
        for (const [issuer, count] of issuerKeys) this.labels(issuer).set(count())
      }
    })
    const size = (): number => this.#denylistSize()
    new Gauge({
      name: `${METRIC_PREFIX}denylist_entries`,
      help: 'Entries in this instance\'s denylist mirror (revoked tokens, sessions and users not yet expired)',
      registers,
      // Every worker mirrors the same denylist: summing would count each entry once per worker.
      aggregator: 'max',
      collect () { this.set(size()) }
    })
    // Every outcome is exported from the start, so a rate() never lacks a series.
    for (const outcome of AUTH_OUTCOMES) {
      const child = this.authEvents.labels(outcome)
      child.inc(0)
      this.#auth.set(outcome, child)
    }
    for (const client of REDIS_CLIENTS) {
      const child = this.redisErrors.labels(client)
      child.inc(0)
      this.#redis.set(client, child)
    }
  }

  /** The series of a route label; the same object for the same label. */
  route (label: string): RouteSeries {
    let series = this.#routes.get(label)
    if (series === undefined) {
      series = new RouteSeries(this, label)
      this.#routes.set(label, series)
    }
    return series
  }

  /** The series of one target of a route; a rebuilt gateway on the same registry takes over the up gauge. */
  target (route: string, target: string): TargetSeries {
    const requests = this.targetRequests.labels(route, target)
    const failures = this.targetFailures.labels(route, target)
    const ejections = this.targetEjections.labels(route, target)
    requests.inc(0)
    failures.inc(0)
    ejections.inc(0)
    const ups = this.#targetUp
    return {
      request: () => requests.inc(),
      failure: () => failures.inc(),
      ejection: () => ejections.inc(),
      trackUp: (up) => { ups.set(`${route} ${target}`, { route, target, up }) }
    }
  }

  /** The series of one trusted issuer (its configured name). */
  issuer (issuer: string): IssuerSeries {
    const accepted = this.issuerTokens.labels(issuer, 'accepted', '')
    accepted.inc(0)
    const refused = new Map(ISSUER_REFUSALS.map((r) => {
      const child = this.issuerTokens.labels(issuer, 'refused', r)
      child.inc(0)
      return [r, child] as const
    }))
    const ok = this.issuerFetches.labels(issuer, 'ok')
    const failed = this.issuerFetches.labels(issuer, 'failed')
    ok.inc(0)
    failed.inc(0)
    const keys = this.#issuerKeys
    return {
      accepted: () => accepted.inc(),
      refused: (reason) => refused.get(reason)?.inc(),
      fetched: () => ok.inc(),
      fetchFailed: () => failed.inc(),
      trackKeys: (count) => { keys.set(issuer, count) }
    }
  }

  auth (outcome: AuthOutcome): void {
    this.#auth.get(outcome)?.inc()
  }

  redisError (client: RedisClientName): void {
    this.#redis.get(client)?.inc()
  }

  /** Where the denylist gauge reads from; the latest gateway built on this registry wins. */
  trackDenylist (size: () => number): void {
    this.#denylistSize = size
  }

  /** Where /metrics reads its text: this registry, or (in a worker) every worker's together. */
  textFrom (source: () => Promise<string>): void {
    this.#text = source
  }

  text (): Promise<string> {
    return this.#text()
  }

  #text: () => Promise<string> = () => this.registry.metrics()

  get contentType (): string {
    return this.registry.contentType
  }
}
