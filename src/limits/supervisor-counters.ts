import { askSupervisor, type Answerer } from '../cluster-ipc.js'
import { StoreUnavailableError } from '../sessions/session-store.js'
import { MemoryLoginThrottle, MAX_LOCAL_COUNTERS, type LoginAttempt, type LoginBudget, type LoginThrottle, type ThrottleVerdict } from './login-throttle.js'
import type { CountCallback, WindowCount } from './redis-rate-counter.js'
import { answerCounts, failCounts, piecesOf, TurnBatcher, type CountBatch } from './count-batch.js'

// With server.workers > 1 on the embedded store, the rate limits and the
// login throttle are counted by the supervisor, over node:cluster's IPC, so
// that n workers give a client the configured budget, not n times it (a
// login throttle that gives an attacker n× the guesses is a hole). The
// supervisor's one thread makes each count atomic across workers.
//
// Why the supervisor rather than the shared SQLite file: node:sqlite is
// synchronous, and a write waits for the file's one write lock by sleeping
// the thread — a rate count per request would stall a worker's event loop
// whenever another worker writes. Over IPC a worker only sends: the counts
// of one event-loop turn travel as one message (as the Redis counter batches
// one script call), and the answer comes back asynchronously. Nothing of
// this runs with one worker (counters stay in process, as before) or for a
// route whose rate limit is off.

export const TOPIC_RATE = 'rate-count'
export const TOPIC_LOGIN_TAKE = 'login-take'
export const TOPIC_LOGIN_GIVE_BACK = 'login-give-back'

/** A count the supervisor has not answered in this long fails (the route's onStoreError decides). */
export const SUPERVISOR_TIMEOUT_MS = 1_000

/** Counts of one event-loop turn per message: bounds one message's size. */
export const MAX_KEYS_PER_MESSAGE = 512

interface RateBatch { keys: string[], windows: number[] }
interface LoginQuestion { budget: LoginBudget, attempt: LoginAttempt }

/** Worker side of the rate counter; the same `count` shape as RedisRateCounter. */
export class SupervisorRateCounter {
  readonly #batcher = new TurnBatcher((batch) => {
    for (const piece of piecesOf(batch, MAX_KEYS_PER_MESSAGE)) this.#send(piece)
  })

  count (key: string, windowMs: number, callback: CountCallback): void {
    this.#batcher.add(key, windowMs, callback)
  }

  #send ({ keys, windows, callbacks }: CountBatch): void {
    const question: RateBatch = { keys, windows }
    askSupervisor(TOPIC_RATE, question, SUPERVISOR_TIMEOUT_MS).then(
      (reply) => { answerCounts(callbacks, reply, 'the supervisor answered a rate count with nonsense') },
      (err: unknown) => { failCounts(callbacks, err) }
    )
  }
}

/** Worker side of the login throttle. */
export class SupervisorLoginThrottle implements LoginThrottle {
  readonly #budget: LoginBudget

  constructor (budget: LoginBudget) {
    this.#budget = budget
  }

  async take (attempt: LoginAttempt): Promise<ThrottleVerdict> {
    const reply = await this.#ask(TOPIC_LOGIN_TAKE, attempt)
    if (typeof reply !== 'object' || reply === null || typeof (reply as { allowed?: unknown }).allowed !== 'boolean') {
      throw new StoreUnavailableError('the supervisor answered a login throttle question with nonsense')
    }
    return reply as ThrottleVerdict
  }

  async giveBack (attempt: LoginAttempt): Promise<void> {
    await this.#ask(TOPIC_LOGIN_GIVE_BACK, attempt)
  }

  async #ask (topic: string, attempt: LoginAttempt): Promise<unknown> {
    try {
      return await askSupervisor(topic, { budget: this.#budget, attempt } satisfies LoginQuestion, SUPERVISOR_TIMEOUT_MS)
    } catch (err) {
      // Fails closed: login answers 503 rather than count nothing.
      throw new StoreUnavailableError('the login throttle (counted by the supervisor) did not answer', { cause: err })
    }
  }
}

interface WindowCounter { count: number, resetAt: number }

/** Supervisor side: the counters of every worker, and what answers their questions. */
export class SupervisorCounters {
  readonly #windows = new Map<string, WindowCounter>()
  /** one throttle per budget: a reload that changes the budget starts new counts, as a single process does */
  readonly #throttles = new Map<string, MemoryLoginThrottle>()
  readonly #sweep: NodeJS.Timeout

  constructor (sweepIntervalMs = 10_000) {
    this.#sweep = setInterval(() => { this.sweep(Date.now()) }, sweepIntervalMs)
    this.#sweep.unref()
  }

  /** Counts one request per key: its count in the window and the ms until the window ends. */
  count (keys: string[], windows: number[], now: number): number[] {
    const out: number[] = []
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!
      let counter = this.#windows.get(key)
      if (counter === undefined || counter.resetAt <= now) {
        if (counter === undefined && this.#windows.size >= MAX_LOCAL_COUNTERS) this.sweep(now)
        counter = { count: 0, resetAt: now + (windows[i] ?? 0) }
        this.#windows.set(key, counter)
      }
      counter.count++
      out.push(counter.count, counter.resetAt - now)
    }
    return out
  }

  sweep (now: number): void {
    for (const [key, counter] of this.#windows) if (counter.resetAt <= now) this.#windows.delete(key)
  }

  #throttle (budget: LoginBudget): MemoryLoginThrottle {
    const id = `${budget.accountMax}/${budget.addressMax}/${budget.windowMs}`
    let throttle = this.#throttles.get(id)
    if (throttle === undefined) {
      throttle = new MemoryLoginThrottle(budget)
      this.#throttles.set(id, throttle)
    }
    return throttle
  }

  answerers (): Record<string, Answerer> {
    return {
      [TOPIC_RATE]: (body) => {
        const { keys, windows } = body as RateBatch
        return this.count(keys, windows, Date.now())
      },
      [TOPIC_LOGIN_TAKE]: (body) => {
        const { budget, attempt } = body as LoginQuestion
        return this.#throttle(budget).take(attempt, Date.now())
      },
      [TOPIC_LOGIN_GIVE_BACK]: async (body) => {
        const { budget, attempt } = body as LoginQuestion
        await this.#throttle(budget).giveBack(attempt, Date.now())
        return null
      }
    }
  }

  close (): void {
    clearInterval(this.#sweep)
  }
}

export type { WindowCount }
