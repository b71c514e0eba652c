import { Pool } from 'undici'
import type { BalanceMode } from '../config/schema.js'

// The targets of one route: which one the next request goes to, which ones
// are ejected after failing, and when the whole route's circuit is open.
// Everything here is plain counters and one clock read per pick, because it
// runs on every proxied request.

/** What the metrics see of a target; called on the request path, so implementations only bump prebuilt children. */
export interface TargetObserver {
  request (): void
  failure (): void
  ejection (): void
}

const SILENT: TargetObserver = { request () {}, failure () {}, ejection () {} }

/** Ejections grow from ejectFor by doubling, at most this many times longer. */
const MAX_BACKOFF_FACTOR = 32

export class UpstreamTarget {
  readonly origin: string
  readonly pool: Pool
  /** requests dispatched and not yet finished, for least-request */
  inflight = 0
  /** passive failures in a row since the last answer */
  failuresInRow = 0
  /** performance.now() until which the target is out; 0 when it is in */
  ejectedUntil = 0
  /** consecutive ejections without an answer in between: the back-off doubles with each */
  level = 0
  /** a trial request after an ejection is in flight: no other request goes here until it ends */
  probing = false
  /**
   * the active health check found it failing: it stays out, with no passive
   * trial, until the check sees it pass `healthyAfter` times (restore)
   */
  unhealthy = false
  observer: TargetObserver = SILENT

  constructor (url: string) {
    this.origin = new URL(url).origin
    this.pool = new Pool(this.origin)
  }

  /** 1 when the target takes traffic, 0 while it is ejected or held out by the health check (a trial may be running). */
  get up (): number {
    return this.ejectedUntil === 0 ? 1 : 0
  }
}

export interface TargetSetOptions {
  balance: BalanceMode
  ejectAfter: number
  /** ms of the first ejection */
  ejectFor: number
}

export class TargetSet {
  readonly targets: readonly UpstreamTarget[]
  readonly #balance: BalanceMode
  readonly #ejectAfter: number
  readonly #ejectFor: number
  #next = 0

  constructor (urls: readonly string[], options: TargetSetOptions) {
    this.targets = urls.map((url) => new UpstreamTarget(url))
    this.#balance = options.balance
    this.#ejectAfter = options.ejectAfter
    this.#ejectFor = options.ejectFor
  }

  /**
   * The target for the next attempt, or null when none may be tried now (the
   * circuit is open: every target is ejected, or on trial with a request
   * already). A target whose ejection is over gets exactly one trial request
   * when its turn comes, so a recovered target comes back by itself; one the
   * health check holds out gets none (its probes decide). `exclude` is the
   * target a retry comes from.
   */
  pick (now: number, exclude: UpstreamTarget | null = null): UpstreamTarget | null {
    const targets = this.targets
    const count = targets.length
    let best: UpstreamTarget | null = null
    for (let k = 0; k < count; k++) {
      // Round-robin starts at the next target in turn; least-request scans
      // from there too, so ties are spread instead of always taking the first.
      const target = targets[(this.#next + k) % count]
      if (target === exclude) continue
      if (target.ejectedUntil !== 0) {
        if (target.unhealthy || target.probing || target.ejectedUntil > now) continue
        target.probing = true
        best = target
        break
      }
      if (best === null) {
        best = target
        if (this.#balance === 'round-robin') break
      } else if (target.inflight < best.inflight) {
        best = target
      }
    }
    this.#next = (this.#next + 1) % count
    return best
  }

  /**
   * The target answered (its headers arrived): it is healthy again, unless the
   * health check holds it out. Its probe path is what the operator chose to
   * judge it by: a request sent before the verdict, answered after, must not
   * overturn it (an app that answers / but fails /healthz is out).
   */
  succeeded (target: UpstreamTarget): void {
    target.failuresInRow = 0
    if (target.unhealthy) {
      target.probing = false
      return
    }
    if (target.ejectedUntil !== 0 || target.probing) {
      target.probing = false
      target.ejectedUntil = 0
      target.level = 0
    }
  }

  /** The target failed to connect, reset or timed out. */
  failed (target: UpstreamTarget, now: number): void {
    target.observer.failure()
    target.failuresInRow++
    if (target.unhealthy) {
      // Out already, for as long as the health check says.
      target.probing = false
    } else if (target.probing) {
      // The trial failed: out again, for twice as long as last time.
      target.probing = false
      this.eject(target, now)
    } else if (target.ejectedUntil === 0 && target.failuresInRow >= this.#ejectAfter) {
      this.eject(target, now)
    }
  }

  /** A trial request ended without telling anything (the client went away): let another request try. */
  released (target: UpstreamTarget): void {
    target.probing = false
  }

  eject (target: UpstreamTarget, now: number): void {
    const factor = Math.min(2 ** target.level, MAX_BACKOFF_FACTOR)
    target.ejectedUntil = now + this.#ejectFor * factor
    target.level++
    target.observer.ejection()
  }

  /**
   * The active health check saw the target fail `unhealthyAfter` times: out
   * until restore. `until` is when the check could first bring it back, only
   * for Retry-After; pick does not look at it.
   */
  markUnhealthy (target: UpstreamTarget, until: number): void {
    if (target.ejectedUntil === 0) target.observer.ejection()
    target.unhealthy = true
    target.ejectedUntil = until
  }

  /** An active health check saw the target pass often enough: back in at once, whatever took it out. */
  restore (target: UpstreamTarget): void {
    target.unhealthy = false
    this.succeeded(target)
  }

  /** Whole seconds until the first ejected target may be tried again, at least 1: the Retry-After of an open circuit. */
  retryAfter (now: number): number {
    let soonest = Infinity
    for (const target of this.targets) if (target.ejectedUntil !== 0 && target.ejectedUntil < soonest) soonest = target.ejectedUntil
    return soonest === Infinity ? 1 : Math.max(1, Math.ceil((soonest - now) / 1000))
  }

  async close (): Promise<void> {
    await Promise.all(this.targets.map((target) => target.pool.destroy()))
  }
}
