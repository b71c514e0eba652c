import { fstatSync, writeSync } from 'node:fs'

// Where the bin's log lines go. With an access line per request, pino's
// asynchronous destination cost more than the line: it hands each write to
// libuv's thread pool (a thread to wake on a busy core), and its synchronous
// one makes a write(2) per line. Here lines are held and written in batches,
// on the main thread, as the event loop turns:
//
// - to a pipe, a socket or a terminal (a service manager, a container runtime,
//   `kubectl logs -f`), the lines of one turn go out as the turn ends
//   (setImmediate), or sooner when they fill PIPE_BUF: whole lines, never
//   more than PIPE_BUF to a write;
// - to a regular file, lines wait up to FILE_HOLD_MS or FILE_BATCH_BYTES:
//   a write(2) to a file costs about as much as writing a few kilobytes
//   (inode times, the journal), and a loaded gateway turns its loop every
//   few requests, so batching by turn left most of that cost per line.
//   Writes to a regular file are not interleaved with other processes'
//   writes to it, whatever their size.
//
// The writes are synchronous, as those of pino's default destination: a
// reader that stops reading (a full pipe) slows the gateway down rather than
// growing its memory without bound. Lines held when the process stops are
// written by flushSync (exit, SIGTERM, SIGHUP); a kill -9 loses what is held.

/**
 * Lines go out to a pipe in writes of at most this many bytes, cut between
 * lines: a write of up to PIPE_BUF (4096 on Linux) to a pipe is atomic, so
 * the workers under one supervisor, which share its stdout, never
 * interleave halves of their lines.
 */
export const MAX_WRITE_BYTES = 4096

/** How long a line to a regular file may wait for others to share its write. */
export const FILE_HOLD_MS = 10

/** Held lines to a regular file are written at once when they reach this size. */
export const FILE_BATCH_BYTES = 64 * 1024

/** How long a full non-blocking pipe (EAGAIN) is waited on before the next try. */
const EAGAIN_WAIT_MS = 1

/** UTF-8 takes at most three bytes per UTF-16 unit (a surrogate pair's four bytes are two units). */
const MAX_UTF8_PER_UNIT = 3

function isRegularFile (fd: number): boolean {
  try {
    return fstatSync(fd).isFile()
  } catch {
    return false
  }
}

export class BatchedLogDestination {
  readonly #fd: number
  /** to a regular file: batches by time and size, no cut at PIPE_BUF */
  readonly #toFile: boolean
  // Lines are encoded into one buffer as they come, so a batch is neither a
  // long string nor a fresh buffer: a write is whole lines, at most its size.
  readonly #buffer: Buffer
  #used = 0
  #scheduled = false
  readonly #flushScheduled = (): void => {
    this.#scheduled = false
    this.flushSync()
  }

  constructor (fd: number) {
    this.#fd = fd
    this.#toFile = isRegularFile(fd)
    this.#buffer = Buffer.allocUnsafe(this.#toFile ? FILE_BATCH_BYTES : MAX_WRITE_BYTES)
  }

  /** pino's destination interface: whole lines, each ending in a newline. */
  write (lines: string): boolean {
    const at = this.reserve(lines.length * MAX_UTF8_PER_UNIT)
    if (at < 0) {
      // longer than a write: out whole, at once
      const data = Buffer.from(lines)
      this.#writeAll(data, 0, data.length)
      return true
    }
    this.commit(at + this.#buffer.write(lines, at))
    return true
  }

  /**
   * The buffer lines are encoded into. A writer that builds its lines as
   * bytes (src/ops/access-line.ts) encodes one at the offset `reserve` gives
   * and hands its end to `commit`: no string is built for it.
   */
  get buffer (): Buffer {
    return this.#buffer
  }

  /**
   * Where a line of at most `bytes` bytes goes in `buffer`, after writing out
   * what is held if it would not fit; -1 when no write could hold a line that
   * long (give it to `write` instead, which sends it out whole).
   */
  reserve (bytes: number): number {
    if (bytes > this.#buffer.length) {
      this.flushSync()
      return -1
    }
    if (bytes > this.#buffer.length - this.#used) this.flushSync()
    return this.#used
  }

  /** The line encoded at the offset `reserve` gave ends at `end`. */
  commit (end: number): void {
    this.#used = end
    if (!this.#scheduled) {
      this.#scheduled = true
      if (this.#toFile) {
        // unref: a process with nothing else to do exits at once, and its
        // exit handler writes what is held
        setTimeout(this.#flushScheduled, FILE_HOLD_MS).unref()
      } else {
        setImmediate(this.#flushScheduled)
      }
    }
  }

  /** Writes out every line held now (also on exit, stop and reload). */
  flushSync (): void {
    if (this.#used === 0) return
    const used = this.#used
    this.#used = 0
    this.#writeAll(this.#buffer, 0, used)
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
