import pino from 'pino'
import type { FastifyBaseLogger } from 'fastify'
import { BatchedLogDestination } from './log-destination.js'

// The access line. pino's generic path (walk the object, test every value's
// type, escape it, join the logger's bindings, then encode the string) cost
// about as much as the rest of the line's share of a proxied request in the
// bin under load, and a line built as a string by hand still cost a dozen
// concatenations, a flattening and a UTF-8 encoding per request. The fields
// of an access line are fixed, so when the logger writes to the bin's own
// destination (src/ops/log-destination.ts) the line is encoded straight into
// that destination's buffer: the route's constant parts are bytes made once
// per route, and the request's strings are copied byte by byte while they
// are checked for anything JSON must escape. It is byte for byte the line
// pino writes for the same fields (test/ops/access-line.test.ts holds it to
// that); any other logger or destination gets the line from pino itself.

export const ACCESS_MESSAGE = 'request completed'

export interface AccessFields {
  reqId: string
  route: string
  method: string
  url: string
  status: number
  ms: number
  upstream?: string
  user?: string
}

/** Writes the access line of one request on a route the line was made for. */
export type AccessLine = (reqId: string, method: string, url: string, status: number, elapsedMs: number, user: string | undefined) => void

const INFO = pino.levels.values.info
const FIELD_NAMES: ReadonlyArray<keyof AccessFields> = ['reqId', 'route', 'method', 'url', 'status', 'ms', 'upstream', 'user']

/**
 * Longest an escaped string grows per UTF-16 unit: a control character is
 * written `\u001f`; a non-ASCII unit takes at most three bytes of UTF-8.
 */
const MAX_BYTES_PER_UNIT = 6
/** Room for a number the line writes itself: a safe integer has 16 digits, hundredths add a point. */
const MAX_NUMBER_BYTES = 24
const QUOTE = 0x22
const BACKSLASH = 0x5c
const DIGIT_0 = 0x30
const POINT = 0x2e

interface Template {
  destination: BatchedLogDestination
  /** pino's time function, unless it is the default epoch time, which is written as digits */
  time: (() => string) | null
  /** what goes between the level and the request id: the time's key (epoch time), the logger's bindings */
  head: string
  messageKey: string
}

/** What of a pino logger the byte template needs; null when its lines are not plain pino lines to our destination. */
function templateOf (log: FastifyBaseLogger): Template | null {
  const raw = log as unknown as Record<symbol, unknown>
  const { streamSym, timeSym, chindingsSym, messageKeySym, mixinSym, hooksSym, formattersSym, serializersSym } = pino.symbols
  const stream = raw[streamSym]
  const time = raw[timeSym]
  const chindings = raw[chindingsSym]
  const messageKey = raw[messageKeySym]
  if (!(stream instanceof BatchedLogDestination) || typeof time !== 'function' || typeof chindings !== 'string' || typeof messageKey !== 'string') return null
  // A mixin, a write hook, a log or level formatter or a serializer of one of
  // our keys changes the line: pino writes those lines itself.
  const hooks = raw[hooksSym] as { streamWrite?: unknown } | undefined
  const formatters = raw[formattersSym] as { level?: (label: string, n: number) => unknown, log?: unknown } | undefined
  const serializers = raw[serializersSym] as Record<string, unknown> | undefined
  if (raw[mixinSym] !== undefined || hooks?.streamWrite !== undefined) return null
  if (formatters?.log !== undefined || JSON.stringify(formatters?.level?.('info', INFO)) !== `{"level":${INFO}}`) return null
  if (serializers !== undefined && FIELD_NAMES.some((k) => serializers[k] !== undefined)) return null
  const epoch = time === pino.stdTimeFunctions.epochTime
  return { destination: stream, time: epoch ? null : time as () => string, head: chindings, messageKey }
}

/** True when `log`'s access lines are encoded by the template, not built by pino's generic path. */
export function accessLineTemplateApplies (log: FastifyBaseLogger): boolean {
  return templateOf(log) !== null
}

/** Copies constant bytes; for the few dozen bytes of a part, a loop beats `set`'s call. */
function putBytes (buffer: Buffer, at: number, bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; i++) buffer[at + i] = bytes[i] as number
  return at + bytes.length
}

/** Writes `value` as JSON.stringify would; printable ASCII byte by byte, anything else through it. */
function putString (buffer: Buffer, at: number, value: string): number {
  buffer[at] = QUOTE
  let end = at + 1
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c < 0x20 || c > 0x7e || c === QUOTE || c === BACKSLASH) return at + buffer.write(JSON.stringify(value), at)
    buffer[end++] = c
  }
  buffer[end] = QUOTE
  return end + 1
}

/** Writes a non-negative safe integer's decimal digits. */
function putInteger (buffer: Buffer, at: number, value: number): number {
  let digits = 1
  for (let rest = value; rest >= 10; rest = Math.floor(rest / 10)) digits++
  let i = at + digits
  let rest = value
  while (rest >= 10) {
    const next = Math.floor(rest / 10)
    buffer[--i] = DIGIT_0 + rest - next * 10
    rest = next
  }
  buffer[--i] = DIGIT_0 + rest
  return at + digits
}

/**
 * Writes hundredths as the number they are a hundredth of, the way
 * `String(hundredths / 100)` does (for fewer than 16 significant digits the
 * shortest form of that double is the decimal itself): 677 → 6.77, 720 → 7.2,
 * 1200 → 12.
 */
function putHundredths (buffer: Buffer, at: number, hundredths: number): number {
  const whole = Math.floor(hundredths / 100)
  const fraction = hundredths - whole * 100
  let end = putInteger(buffer, at, whole)
  if (fraction === 0) return end
  buffer[end++] = POINT
  const tenths = Math.floor(fraction / 10)
  buffer[end++] = DIGIT_0 + tenths
  if (fraction !== tenths * 10) buffer[end++] = DIGIT_0 + fraction - tenths * 10
  return end
}

const bytesOf = (text: string): Uint8Array => Buffer.from(text, 'utf8')

/**
 * Makes the access line of each route: call the result once per route with
 * its label and upstream, then the line it returns once per request. Latency
 * is kept to hundredths of a millisecond.
 */
export function accessLineWriter (log: FastifyBaseLogger): (route: string, upstream: string | undefined) => AccessLine {
  const viaPino = (route: string, upstream: string | undefined): AccessLine => (reqId, method, url, status, elapsedMs, user) => {
    const fields: AccessFields = { reqId, route, method, url, status, ms: Math.round(elapsedMs * 100) / 100 }
    // undefined fields are left out of the line, as pino leaves them out
    if (upstream !== undefined) fields.upstream = upstream
    if (user !== undefined) fields.user = user
    log.info(fields, ACCESS_MESSAGE)
  }
  const template = templateOf(log)
  if (template === null) return viaPino
  const { destination, time } = template
  const level = bytesOf(`{"level":${INFO}` + (time === null ? ',"time":' : ''))
  const afterTime = bytesOf(template.head + ',"reqId":')
  const url = bytesOf(',"url":')
  const status = bytesOf(',"status":')
  const ms = bytesOf(',"ms":')
  const tail = `,${JSON.stringify(template.messageKey)}:${JSON.stringify(ACCESS_MESSAGE)}}\n`
  const fixed = level.length + afterTime.length + url.length + status.length + ms.length + 3 * MAX_NUMBER_BYTES

  return (route, upstream) => {
    const slow = viaPino(route, upstream)
    const routeToMethod = bytesOf(`,"route":${JSON.stringify(route)},"method":`)
    const upstreamPart = upstream === undefined ? '' : `,"upstream":${JSON.stringify(upstream)}`
    const withUser = bytesOf(upstreamPart + ',"user":')
    const userTail = bytesOf(tail)
    const noUserTail = bytesOf(upstreamPart + tail)
    const routeBytes = fixed + routeToMethod.length + withUser.length + userTail.length + noUserTail.length
    return (reqId, method, requestUrl, statusCode, elapsedMs, user) => {
      const hundredths = Math.round(elapsedMs * 100)
      const stamp = time === null ? '' : time()
      const units = reqId.length + method.length + requestUrl.length + (user === undefined ? 0 : user.length) + stamp.length
      const at = destination.reserve(routeBytes + MAX_BYTES_PER_UNIT * units)
      // a line longer than one write, a latency that is not a number (pino
      // writes null for it), a status that is not a small integer: pino's way
      if (at < 0 || !(hundredths >= 0 && hundredths <= Number.MAX_SAFE_INTEGER) || !(statusCode >= 0 && statusCode < 1000 && Number.isInteger(statusCode))) {
        slow(reqId, method, requestUrl, statusCode, elapsedMs, user)
        return
      }
      const buffer = destination.buffer
      let end = putBytes(buffer, at, level)
      end = time === null ? putInteger(buffer, end, Date.now()) : end + buffer.write(stamp, end)
      end = putBytes(buffer, end, afterTime)
      end = putString(buffer, end, reqId)
      end = putBytes(buffer, end, routeToMethod)
      end = putString(buffer, end, method)
      end = putBytes(buffer, end, url)
      end = putString(buffer, end, requestUrl)
      end = putBytes(buffer, end, status)
      end = putInteger(buffer, end, statusCode)
      end = putBytes(buffer, end, ms)
      end = putHundredths(buffer, end, hundredths)
      if (user === undefined) {
        end = putBytes(buffer, end, noUserTail)
      } else {
        end = putBytes(buffer, end, withUser)
        end = putString(buffer, end, user)
        end = putBytes(buffer, end, userTail)
      }
      destination.commit(end)
    }
  }
}
