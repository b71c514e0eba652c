import { AggregatorRegistry } from 'prom-client'
import { askSupervisor, type Answerer } from '../cluster-ipc.js'
import type { GatewayMetrics } from './gateway-metrics.js'

// /metrics with server.workers > 1 reports the whole gateway: whichever
// worker the scrape reaches asks the supervisor, which collects every
// worker's registry over node:cluster's IPC (prom-client's
// AggregatorRegistry: counters and histograms summed, each metric's own
// aggregator otherwise) and answers with the sum. A worker that just
// restarted starts its counters from zero, which Prometheus sees as a
// counter reset.

export const TOPIC_METRICS = 'metrics'
/** prom-client gives up on a worker after 5 s; wait a little longer than that. */
const METRICS_TIMEOUT_MS = 6_000

/** In a worker: lets the supervisor read this registry, and serves /metrics from the supervisor's sum. */
export function shareMetricsWithSupervisor (metrics: GatewayMetrics): void {
  // Constructing one installs prom-client's answer to the supervisor's request.
  void new AggregatorRegistry()
  AggregatorRegistry.setRegistries([metrics.registry])
  metrics.textFrom(async () => String(await askSupervisor(TOPIC_METRICS, null, METRICS_TIMEOUT_MS)))
}

/** In the supervisor: answers a worker's /metrics with every worker's metrics together. */
export function metricsAnswerers (): Record<string, Answerer> {
  const aggregator = new AggregatorRegistry()
  return { [TOPIC_METRICS]: () => aggregator.clusterMetrics() }
}
