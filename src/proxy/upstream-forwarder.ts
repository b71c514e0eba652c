import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { performance } from 'node:perf_hooks'
import type { Dispatcher } from 'undici'
import type { Span } from '@opentelemetry/api'
import type { GatewayTracing } from '../ops/tracing.js'
import type { RetryBudget } from './retry-budget.js'
import type { TargetSet, UpstreamTarget } from './upstream-targets.js'
import { connectionTokens, HOP_BY_HOP_HEADERS } from './hop-by-hop.js'

// The HTTP hop to an upstream: one undici Pool per target and one small
// dispatch handler per request that writes the upstream's answer straight into
// the client's response, chunk by chunk, pausing the upstream while the
// client's socket is full. @fastify/http-proxy still matches the route,
// rewrites and checks the path and proxies WebSockets; this replaces only
// @fastify/reply-from's per-request work (a Readable per answer, its retry
// wrapper, end-of-stream listeners, header copies): the part of the bare
// proxy's cost that a CPU profile showed we could remove (bench/results.md).

export interface ForwardPlan {
  targets: TargetSet
  /** retries on another target per request, when safe (see retryable) */
  retries: number
  budget: RetryBudget
  /** null when tracing is off: then no span is started and no traceparent written */
  tracing: GatewayTracing | null
  /** ms to wait for the upstream's headers, and between body chunks; then 504 */
  timeout: number
  /** the request headers the upstream gets (client's, cleaned, plus ours) */
  requestHeaders (request: FastifyRequest): Record<string, string | string[]>
  /** the upstream failed before its answer started: answer the client through Fastify */
  onError (reply: FastifyReply, error: Error): void
  /** every target is ejected (the circuit is open): 503 at once, try again in `retryAfter` seconds */
  onUnavailable (reply: FastifyReply, retryAfter: number): void
}

/** The upstream's answer headers as the client gets them; hop-by-hop ones are already gone. */
export type RewriteResponseHeaders = (headers: IncomingHttpHeaders, request: FastifyRequest) => IncomingHttpHeaders

/** The request body to stream upstream, if the method can carry one. */
export type ForwardBody = Readable | null

/**
 * Sends `request` to one of the plan's targets at `path` (already rewritten
 * and checked; the client's query string is added as it was sent) and streams
 * the answer back; on a failure that left the request unsent, or harmless to
 * repeat, tries another target.
 */
export function forward (request: FastifyRequest, reply: FastifyReply, path: string, body: ForwardBody, plan: ForwardPlan, rewriteHeaders: RewriteResponseHeaders): void {
  const now = performance.now()
  const target = plan.targets.pick(now)
  if (target === null) {
    plan.onUnavailable(reply, plan.targets.retryAfter(now))
    return
  }
  plan.budget.request(now)
  const url = request.url
  const query = url.indexOf('?')
  const headers = plan.requestHeaders(request)
  const options: Dispatcher.DispatchOptions = {
    method: request.method as Dispatcher.HttpMethod,
    path: query === -1 ? path : path + url.slice(query),
    headers,
    body,
    headersTimeout: plan.timeout,
    bodyTimeout: plan.timeout
  }
  const exchange = new Exchange(request, reply, plan, rewriteHeaders, options, headers, target, 0)
  reply.raw.once('close', exchange.onClientClose)
  exchange.send()
}

/** Thrown into the upstream request when the client went away first. */
class ClientGone extends Error {
  constructor () {
    super('client closed the connection before the upstream answered')
    this.name = 'ClientGone'
  }
}

/** The connection was never made: nothing of the request reached the target. */
const CONNECT_FAILURES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT'])
/** The target is in trouble (counts toward ejection): besides connect failures, resets and timeouts. */
const TARGET_FAILURES = new Set([...CONNECT_FAILURES, 'ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT'])
/** Waited the whole timeout already: a retry would double the client's wait. */
const TIMEOUTS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT', 'ETIMEDOUT'])
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE'])

/** The Node/undici code of a failure, looking through causes and the AggregateError of a refused dual-stack connect. */
function failureCode (error: Error): string {
  let current: Error & { code?: string } = error
  for (let depth = 0; depth < 5; depth++) {
    if (current.code !== undefined && TARGET_FAILURES.has(current.code)) return current.code
    if (current instanceof AggregateError && current.errors[0] instanceof Error) current = current.errors[0]
    else if (current.cause instanceof Error) current = current.cause
    else break
  }
  return ''
}

class Exchange implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null
  /** the answer started: from here on the response belongs to us, not to Fastify */
  private started = false
  /**
   * The upstream's status and headers, held until its first body byte or its
   * end: a body that fails before any byte of it (a malformed chunk) is then
   * still a clean 502, where a head already written would leave the client
   * an empty reply.
   */
  private head: { statusCode: number, headers: OutgoingHttpHeaders } | null = null
  private ended = false
  private readonly res: ServerResponse
  /** the client span of the current attempt, while tracing is on */
  private span: Span | null = null

  constructor (
    private readonly request: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly plan: ForwardPlan,
    private readonly rewriteHeaders: RewriteResponseHeaders,
    private readonly options: Dispatcher.DispatchOptions,
    private readonly headers: Record<string, string | string[]>,
    private target: UpstreamTarget,
    private attempt: number
  ) {
    this.res = reply.raw
  }

  send (): void {
    const target = this.target
    target.inflight++
    target.observer.request()
    const tracing = this.plan.tracing
    if (tracing !== null && this.request.serverSpan !== null) {
      this.span = tracing.startClient(this.request.serverSpan, this.request.method, target.origin, this.attempt, this.headers)
    }
    target.pool.dispatch(this.options, this)
  }

  readonly onClientClose = (): void => {
    if (!this.ended) this.controller?.abort(new ClientGone())
  }

  private readonly onDrain = (): void => {
    this.controller?.resume()
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.res.destroyed) controller.abort(new ClientGone())
  }

  onResponseStart (_controller: Dispatcher.DispatchController, statusCode: number, upstream: IncomingHttpHeaders): void {
    this.plan.targets.succeeded(this.target)
    if (this.span !== null) this.endSpan('answered', statusCode)
    const headers = withoutHopByHop(upstream)
    const out: Record<string, string | number | string[] | undefined> = this.reply.getHeaders()
    const answer = this.rewriteHeaders(headers, this.request)
    for (const name in answer) {
      const value = answer[name]
      if (value !== undefined) out[name] = value
    }
    // An HTTP/1 connection cannot carry the next request while this one's
    // body is still unread: close it when the upstream answered early.
    if (!this.request.raw.complete) out.connection = 'close'
    this.head = { statusCode, headers: out as OutgoingHttpHeaders }
  }

  /** Writes the held head; the error when Node refuses one of its headers (the upstream's fault), with nothing sent yet. */
  private writeHead (): Error | null {
    const head = this.head
    this.head = null
    if (head === null) return null
    try {
      this.res.writeHead(head.statusCode, head.headers)
    } catch (err) {
      return err as Error
    }
    this.started = true
    this.reply.hijack()
    return null
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.started) {
      const refused = this.writeHead()
      if (refused !== null) {
        controller.abort(refused)
        return
      }
    }
    if (!this.res.write(chunk)) {
      controller.pause()
      this.res.once('drain', this.onDrain)
    }
  }

  onResponseEnd (): void {
    this.ended = true
    this.target.inflight--
    const refused = this.started ? null : this.writeHead()
    if (refused !== null) {
      this.plan.onError(this.reply, refused)
      return
    }
    this.res.end()
  }

  onResponseError (_controller: Dispatcher.DispatchController, error: Error): void {
    const target = this.target
    target.inflight--
    if (this.span !== null) this.endSpan(error instanceof ClientGone ? 'client_gone' : (failureCode(error) || error.name))
    if (error instanceof ClientGone) {
      this.ended = true
      this.plan.targets.released(target)
      return
    }
    const code = failureCode(error)
    const now = performance.now()
    if (code !== '') this.plan.targets.failed(target, now)
    else this.plan.targets.released(target)
    if (!this.started && this.retryable(code, now)) return
    this.ended = true
    if (!this.started) {
      this.plan.onError(this.reply, error)
      return
    }
    // Part of the answer is out: the only honest signal left is a cut
    // connection. No onResponse hook runs for it (the answer never
    // finishes), so this line is its only trace in the log.
    this.request.log.warn({ err: error, upstream: target.origin, statusCode: this.res.statusCode }, 'upstream answer cut short: closed the client connection mid-answer')
    this.res.destroy(error)
  }

  private endSpan (outcome: string, statusCode?: number): void {
    const span = this.span
    this.span = null
    if (span !== null) this.plan.tracing?.endClient(span, outcome, statusCode)
  }

  /**
   * Sends the request again to another target, and says so, when that cannot
   * make the upstream act twice: the connection to the first was never made,
   * or the method is idempotent and the connection was reset; in both cases
   * only while its body, if any, is untouched (a streamed body is gone once
   * read, and is never buffered to make a retry possible). A request that
   * waited out its timeout is not retried, and every retry is within the
   * route's budget.
   */
  private retryable (code: string, now: number): boolean {
    if (code === '' || this.attempt >= this.plan.retries || !bodyUntouched(this.options.body as ForwardBody /* as forward() set it */) || this.res.destroyed) return false
    if (!CONNECT_FAILURES.has(code) && (TIMEOUTS.has(code) || !IDEMPOTENT.has(this.request.method))) return false
    const next = this.plan.targets.pick(now, this.target)
    if (next === null) return false
    if (!this.plan.budget.tryRetry(now)) {
      this.plan.targets.released(next)
      return false
    }
    this.target = next
    this.attempt++
    this.controller = null
    this.send()
    return true
  }
}

/**
 * True when no byte of the body has been taken from the stream, so the next
 * attempt can send all of it. undici reads the body only once connected and
 * destroys it when that attempt fails, so a connection that was refused
 * leaves it untouched. An empty body that was read to its end emitted no
 * data, hence the readableEnded check.
 */
function bodyUntouched (body: ForwardBody): boolean {
  return body === null || (!body.readableDidRead && !body.readableEnded && !body.destroyed)
}

const PERCENT_ESCAPE = /%([0-9a-fA-F]{2})/g

/**
 * True when a rewritten path could climb out of where the route points on an
 * upstream that decodes it once, twice or more: a `..` segment however many
 * times it is percent-encoded (`%2e%2e`, `%252e%252e`), with Tomcat-style
 * parameters (`..;x`) or behind a backslash. @fastify/http-proxy refuses the
 * plain spellings already; this also closes the double-encoded ones. Escapes
 * are decoded byte by byte until nothing changes (each pass shortens the
 * string), so a stray `%` in a legitimate path is not an error.
 */
export function climbsOut (path: string): boolean {
  let current = path
  for (;;) {
    for (const segment of current.split(/[/\\]/)) {
      if (segment === '..' || segment.startsWith('..;')) return true
    }
    const decoded = current.replace(PERCENT_ESCAPE, (_escape, hex: string) => String.fromCharCode(parseInt(hex, 16)))
    if (decoded === current) return false
    current = decoded
  }
}

/** Drops hop-by-hop headers and any header the upstream's Connection names. */
function withoutHopByHop (headers: IncomingHttpHeaders): IncomingHttpHeaders {
  for (const name of connectionTokens(headers.connection)) headers[name] = undefined
  for (const name of HOP_BY_HOP_HEADERS) if (headers[name] !== undefined) headers[name] = undefined
  return headers
}
