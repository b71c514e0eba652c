import { createHash } from 'node:crypto'
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span, type Tracer } from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { BasicTracerProvider, BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base'
import type { IncomingHttpHeaders } from 'node:http'
import type { TracingConfig } from '../config/schema.js'

// OpenTelemetry for the gateway: one server span per proxied request and one
// client span per upstream attempt, exported in batches over OTLP/HTTP. The
// provider is the gateway's own, not the global one, so two gateways in one
// process (tests, hot reload) do not share or replace each other's exporter.

const propagator = new W3CTraceContextPropagator()
const headerGetter = {
  keys: (carrier: IncomingHttpHeaders) => Object.keys(carrier),
  get: (carrier: IncomingHttpHeaders, key: string) => carrier[key]
}

/**
 * Whether tracing is on. Unset, it follows `otlp.endpoint`: an operator who
 * names where spans go expects them to be sent there. An explicit `false`
 * wins over an endpoint, so tracing can be switched off (`enabled:
 * ${TRACING:-true}`) without deleting the endpoint from the config; `true`
 * without an endpoint propagates traceparent with no exporter.
 */
export function tracingEnabled (config: TracingConfig): boolean {
  return config.enabled ?? config.otlp !== undefined
}

export class GatewayTracing {
  readonly #provider: BasicTracerProvider
  readonly #tracer: Tracer
  readonly #trustIncoming: boolean
  readonly #hashUserId: boolean

  constructor (config: TracingConfig) {
    const spanProcessors: SpanProcessor[] = []
    if (config.otlp !== undefined) spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: config.otlp.endpoint })))
    this.#provider = new BasicTracerProvider({ resource: resourceFromAttributes({ 'service.name': config.serviceName }), spanProcessors })
    this.#tracer = this.#provider.getTracer('tokengate')
    this.#trustIncoming = config.trustIncoming
    this.#hashUserId = config.userId === 'hash'
  }

  /** The server span of a request: a child of the client's trace only when it is trusted. */
  startServer (method: string, route: string, headers: IncomingHttpHeaders): Span {
    const parent = this.#trustIncoming ? propagator.extract(ROOT_CONTEXT, headers, headerGetter) : ROOT_CONTEXT
    return this.#tracer.startSpan(`${method} ${route}`, {
      kind: SpanKind.SERVER,
      attributes: { 'http.request.method': method, 'http.route': route }
    }, parent)
  }

  endServer (span: Span, statusCode: number, userId: string | undefined): void {
    span.setAttribute('http.response.status_code', statusCode)
    if (userId !== undefined && this.#hashUserId) span.setAttribute('enduser.id_hash', createHash('sha256').update(userId).digest('hex').slice(0, 16))
    if (statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
    span.end()
  }

  /**
   * A client span for one attempt to `target`, and the traceparent (and the
   * trusted tracestate) the upstream gets for it, written into `headers`.
   */
  startClient (server: Span, method: string, target: string, retry: number, headers: Record<string, string | string[]>): Span {
    const parent: Context = trace.setSpan(ROOT_CONTEXT, server)
    const span = this.#tracer.startSpan(`${method} upstream`, {
      kind: SpanKind.CLIENT,
      attributes: { 'http.request.method': method, 'server.address': target, 'tokengate.retry': retry }
    }, parent)
    const sc = span.spanContext()
    headers.traceparent = `00-${sc.traceId}-${sc.spanId}-0${(sc.traceFlags & 1).toString()}`
    if (sc.traceState !== undefined) headers.tracestate = sc.traceState.serialize()
    else delete headers.tracestate
    return span
  }

  endClient (span: Span, outcome: string, statusCode?: number): void {
    span.setAttribute('tokengate.outcome', outcome)
    if (statusCode !== undefined) span.setAttribute('http.response.status_code', statusCode)
    if (outcome !== 'answered') span.setStatus({ code: SpanStatusCode.ERROR, message: outcome })
    span.end()
  }

  /** Sends what is still batched and stops the exporter. */
  async close (): Promise<void> {
    await this.#provider.shutdown()
  }
}
