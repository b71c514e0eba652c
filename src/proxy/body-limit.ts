import { Transform, type Readable, type TransformCallback } from 'node:stream'
import { ERR_BODY_TOO_LARGE } from '../errors.js'

// A proxied body is streamed, not buffered, so its size is only known as it
// flows. This counts it on the way through and fails the stream at the first
// byte over the limit; the upstream request is aborted, never completed.
export function limitBody (source: Readable, limit: number): Readable {
  let seen = 0
  const counter = new Transform({
    transform (chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback) {
      seen += chunk.length
      if (seen > limit) done(new ERR_BODY_TOO_LARGE())
      else done(null, chunk)
    }
  })
  source.on('error', (err) => counter.destroy(err))
  return source.pipe(counter)
}

/** A declared Content-Length over the limit is refused before a byte is read. */
export function declaredLengthExceeds (header: string | undefined, limit: number): boolean {
  if (header === undefined) return false
  const length = Number(header)
  return !Number.isFinite(length) || length > limit
}
