// How many retries a route may send: at most RATIO of its requests over the
// last two windows, plus a small floor so a quiet route can still retry its
// few requests. A dying service then gets at most ~20 % more traffic from
// retries, not twice as much (the Linkerd/Finagle retry budget).

const RATIO = 0.2
/** retries allowed per window whatever the traffic */
const FLOOR = 3

export class RetryBudget {
  readonly #windowMs: number
  #windowStart = 0
  #requests = 0
  #retries = 0
  #previousRequests = 0
  #previousRetries = 0

  constructor (windowMs = 5000) {
    this.#windowMs = windowMs
  }

  /** One first attempt of a request. */
  request (now: number): void {
    this.#roll(now)
    this.#requests++
  }

  /** True, and the retry is counted, when the budget has room for one more. */
  tryRetry (now: number): boolean {
    this.#roll(now)
    const requests = this.#requests + this.#previousRequests
    const retries = this.#retries + this.#previousRetries
    if (retries >= FLOOR + RATIO * requests) return false
    this.#retries++
    return true
  }

  #roll (now: number): void {
    if (now - this.#windowStart < this.#windowMs) return
    // A gap longer than one window forgets the previous one too.
    const adjacent = now - this.#windowStart < 2 * this.#windowMs
    this.#previousRequests = adjacent ? this.#requests : 0
    this.#previousRetries = adjacent ? this.#retries : 0
    this.#requests = 0
    this.#retries = 0
    this.#windowStart = now
  }
}
