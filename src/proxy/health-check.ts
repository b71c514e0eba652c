import { performance } from 'node:perf_hooks'
import type { HealthCheckConfig } from '../config/schema.js'
import { parseDuration } from '../config/duration.js'
import type { TargetSet, UpstreamTarget } from './upstream-targets.js'

// Active health checks: every `interval`, each target of a route gets a GET
// on `path` through its own pool. `unhealthyAfter` failing probes in a row
// hold it out, and only `healthyAfter` passing probes in a row let it back:
// passive trials do not, or with ejectFor shorter than interval a failing
// target would take traffic between every two probes. Those passes also bring
// back a target ejected by passive failures before its back-off is over. A
// probe that does not answer within `timeout` fails.

export interface HealthChecks {
  stop (): void
}

export function startHealthChecks (targets: TargetSet, config: HealthCheckConfig): HealthChecks {
  const interval = parseDuration(config.interval)
  const timeout = parseDuration(config.timeout)
  const passes = new Map<UpstreamTarget, number>()
  const fails = new Map<UpstreamTarget, number>()
  let stopped = false
  const running = new Set<UpstreamTarget>()

  const probe = async (target: UpstreamTarget): Promise<void> => {
    // A probe slower than the interval is not stacked with another.
    if (running.has(target)) return
    running.add(target)
    let ok = false
    try {
      const answer = await target.pool.request({ method: 'GET', path: config.path, headersTimeout: timeout, bodyTimeout: timeout, signal: AbortSignal.timeout(timeout) })
      await answer.body.dump()
      ok = answer.statusCode >= 200 && answer.statusCode < 400
    } catch {
      ok = false
    } finally {
      running.delete(target)
    }
    if (stopped) return
    // When the check could let a held-out target back at the earliest: the route's Retry-After.
    const readmitAt = (passed: number): number => performance.now() + (config.healthyAfter - passed) * interval
    if (ok) {
      fails.set(target, 0)
      const n = (passes.get(target) ?? 0) + 1
      passes.set(target, n)
      if (target.ejectedUntil !== 0 && n >= config.healthyAfter) targets.restore(target)
      else if (target.unhealthy) targets.markUnhealthy(target, readmitAt(n))
    } else {
      passes.set(target, 0)
      const n = (fails.get(target) ?? 0) + 1
      fails.set(target, n)
      if (n >= config.unhealthyAfter || target.unhealthy) targets.markUnhealthy(target, readmitAt(0))
    }
  }

  const timer = setInterval(() => {
    for (const target of targets.targets) void probe(target)
  }, interval)
  // The gateway's life is decided by its server, not by this timer.
  timer.unref()
  return {
    stop () {
      stopped = true
      clearInterval(timer)
    }
  }
}
