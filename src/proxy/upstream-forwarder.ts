import type { IncomingHttpHeaders, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { Pool, type Dispatcher } from 'undici'
import { connectionTokens, HOP_BY_HOP_HEADERS } from './hop-by-hop.js'

// The HTTP hop to an upstream: one undici Pool per route and one small
// dispatch handler per request that writes the upstream's answer straight into
// the client's response, chunk by chunk, pausing the upstream while the
// client's socket is full. @fastify/http-proxy still matches the route,
// rewrites and checks the path and proxies WebSockets; this replaces only
// @fastify/reply-from's per-request work (a Readable per answer, its retry
// wrapper, end-of-stream listeners, header copies): the part of the bare
// proxy's cost that a CPU profile showed we could remove (bench/results.md).

export interface ForwardPlan {
  pool: Pool
  /** ms to wait for the upstream's headers, and between body chunks; then 504 */
  timeout: number
  /** the request headers the upstream gets (client's, cleaned, plus ours) */
  requestHeaders (request: FastifyRequest): Record<string, string | string[]>
  /** the upstream failed before its answer started: answer the client through Fastify */
  onError (reply: FastifyReply, error: Error): void
}

/** The upstream's answer headers as the client gets them; hop-by-hop ones are already gone. */
export type RewriteResponseHeaders = (headers: IncomingHttpHeaders, request: FastifyRequest) => IncomingHttpHeaders

/** A pool for one upstream origin; connections are kept alive and reused by every request of the route. */
export function upstreamPool (upstream: string): Pool {
  return new Pool(new URL(upstream).origin)
}

/** The request body to stream upstream, if the method can carry one. */
export type ForwardBody = Readable | null

/**
 * Sends `request` to the plan's upstream at `path` (already rewritten and
 * checked; the client's query string is added as it was sent) and streams the
 * answer back.
 */
export function forward (request: FastifyRequest, reply: FastifyReply, path: string, body: ForwardBody, plan: ForwardPlan, rewriteHeaders: RewriteResponseHeaders): void {
  const url = request.url
  const query = url.indexOf('?')
  const exchange = new Exchange(request, reply, plan, rewriteHeaders)
  reply.raw.once('close', exchange.onClientClose)
  plan.pool.dispatch({
    method: request.method as Dispatcher.HttpMethod,
    path: query === -1 ? path : path + url.slice(query),
    headers: plan.requestHeaders(request),
    body,
    headersTimeout: plan.timeout,
    bodyTimeout: plan.timeout
  }, exchange)
}

/** Thrown into the upstream request when the client went away first. */
class ClientGone extends Error {
  constructor () {
    super('client closed the connection before the upstream answered')
    this.name = 'ClientGone'
  }
}

class Exchange implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null
  /** the answer started: from here on the response belongs to us, not to Fastify */
  private started = false
  private ended = false
  private readonly res: ServerResponse

  constructor (
    private readonly request: FastifyRequest,
    private readonly reply: FastifyReply,
    private readonly plan: ForwardPlan,
    private readonly rewriteHeaders: RewriteResponseHeaders
  ) {
    this.res = reply.raw
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

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, upstream: IncomingHttpHeaders): void {
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
    try {
      this.res.writeHead(statusCode, out as OutgoingHttpHeaders)
    } catch (err) {
      // A header Node refuses to write (the upstream's fault): nothing was sent yet.
      controller.abort(err as Error)
      return
    }
    this.started = true
    this.reply.hijack()
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause()
      this.res.once('drain', this.onDrain)
    }
  }

  onResponseEnd (): void {
    this.ended = true
    this.res.end()
  }

  onResponseError (_controller: Dispatcher.DispatchController, error: Error): void {
    this.ended = true
    if (error instanceof ClientGone) return
    if (!this.started) {
      this.plan.onError(this.reply, error)
      return
    }
    // Part of the answer is out: the only honest signal left is a cut connection.
    this.res.destroy(error)
  }
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
