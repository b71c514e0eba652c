import type { CountCallback } from './redis-rate-counter.js'

// The rate counters that live outside the process (Redis, the supervisor of
// workers) send the counts of one event-loop turn together, so that a busy
// gateway pays one round trip per turn, not one per request.

/** The counts of one turn, in arrival order. */
export interface CountBatch {
  keys: string[]
  windows: number[]
  callbacks: CountCallback[]
}

/** Collects counts and hands them to `send` once per event-loop turn. */
export class TurnBatcher {
  readonly #send: (batch: CountBatch) => void
  #batch: CountBatch = { keys: [], windows: [], callbacks: [] }
  #scheduled = false

  constructor (send: (batch: CountBatch) => void) {
    this.#send = send
  }

  add (key: string, windowMs: number, callback: CountCallback): void {
    this.#batch.keys.push(key)
    this.#batch.windows.push(windowMs)
    this.#batch.callbacks.push(callback)
    if (this.#scheduled) return
    this.#scheduled = true
    // setImmediate, not nextTick: it runs after every socket read of this
    // turn has been handled, so the batch holds all of them.
    setImmediate(this.#flush)
  }

  readonly #flush = (): void => {
    const batch = this.#batch
    this.#batch = { keys: [], windows: [], callbacks: [] }
    this.#scheduled = false
    this.#send(batch)
  }
}

/** `batch` cut into pieces of at most `max` counts (one call or message each). */
export function* piecesOf (batch: CountBatch, max: number): Generator<CountBatch> {
  for (let start = 0; start < batch.keys.length; start += max) {
    const end = start + max
    yield { keys: batch.keys.slice(start, end), windows: batch.windows.slice(start, end), callbacks: batch.callbacks.slice(start, end) }
  }
}

/** Answers each callback from a reply of [current, ttl] pairs in callback order; a reply of another shape fails them all. */
export function answerCounts (callbacks: CountCallback[], reply: unknown, nonsense: string): void {
  if (!Array.isArray(reply) || reply.length !== callbacks.length * 2) {
    failCounts(callbacks, new Error(nonsense))
    return
  }
  for (let i = 0; i < callbacks.length; i++) callbacks[i]!(null, { current: Number(reply[2 * i]), ttl: Number(reply[2 * i + 1]) })
}

export function failCounts (callbacks: CountCallback[], err: unknown): void {
  const error = err instanceof Error ? err : new Error(String(err))
  for (const callback of callbacks) callback(error)
}
