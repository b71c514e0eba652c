import { writeSync } from 'node:fs'

// Where the bin's log lines go. With an access line per request, pino's
// asynchronous destination cost more than the line: it hands each write to
// libuv's thread pool (a thread to wake on a busy core), and its synchronous
// one makes a write(2) per line. Here the lines logged during one turn of the
// event loop are joined and written as the turn ends (setImmediate), on the
// main thread: a few system calls per turn whatever the request rate, no
// thread, no timer, and a line is out a turn after it was logged.
//
// The writes are synchronous, as those of pino's default destination: a
// reader that stops reading (a full pipe) slows the gateway down rather than
// growing its memory without bound.

/**
 * Lines go out in writes of at most this many bytes, cut between lines: a
 * write of up to PIPE_BUF (4096 on Linux) to a pipe is atomic, so the
 * workers under one supervisor, which share its stdout, never interleave
 * halves of their lines.
 */
export const MAX_WRITE_BYTES = 4096

/** How long a full non-blocking pipe (EAGAIN) is waited on before the next try. */
const EAGAIN_WAIT_MS = 1

const NEWLINE = 0x0a

export class TurnBatchedDestination {
  readonly #fd: number
  #pending = ''
  #scheduled = false
  readonly #endOfTurn = (): void => {
    this.#scheduled = false
    this.flushSync()
  }

  constructor (fd: number) {
    this.#fd = fd
  }

  /** pino's destination interface: whole lines, each ending in a newline. */
  write (lines: string): boolean {
    this.#pending += lines
    if (!this.#scheduled) {
      this.#scheduled = true
      setImmediate(this.#endOfTurn)
    }
    return true
  }

  /** Writes out every line held now (also on exit, stop and reload). */
  flushSync (): void {
    if (this.#pending === '') return
    const data = Buffer.from(this.#pending)
    this.#pending = ''
    let from = 0
    while (from < data.length) {
      let to = Math.min(data.length, from + MAX_WRITE_BYTES)
      if (to < data.length) {
        const cut = data.lastIndexOf(NEWLINE, to - 1)
        if (cut >= from) {
          to = cut + 1
        } else {
          // a single line longer than a write goes out whole
          const end = data.indexOf(NEWLINE, from)
          to = end < 0 ? data.length : end + 1
        }
      }
      if (!this.#writeAll(data, from, to)) return
      from = to
    }
  }

  /** False when the lines cannot be written at all. */
  #writeAll (data: Buffer, from: number, to: number): boolean {
    while (from < to) {
      try {
        from += writeSync(this.#fd, data, from, to - from)
      } catch (err) {
        // stdout may be a non-blocking pipe (something else in the process
        // opened it as a stream): wait for the reader, as a blocking write would
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, EAGAIN_WAIT_MS)
          continue
        }
        // The reader is gone (EPIPE) or the disk refuses (ENOSPC, EIO): there
        // is nowhere to put these lines, and serving goes on without them.
        return false
      }
    }
    return true
  }
}
