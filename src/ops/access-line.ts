import pino from 'pino'
import type { FastifyBaseLogger } from 'fastify'

// The access line, built by hand. pino's generic path (walk the object, test
// every value's type, escape it, join the logger's bindings) cost about 5 µs
// of CPU per request in the bin under load: as much again as the rest of the
// line's share of the request. The fields of an access line are fixed, so
// the line is one template; it goes to the logger's own destination, after
// the logger's own time and bindings, so it is byte for byte the line pino
// writes for the same fields (test/ops/access-line.test.ts holds it to that).

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

interface Destination { write (line: string): unknown }

const INFO = pino.levels.values.info
const FIELD_NAMES: ReadonlyArray<keyof AccessFields> = ['reqId', 'route', 'method', 'url', 'status', 'ms', 'upstream', 'user']

/** What of a pino logger the template needs; null when its lines are not plain pino lines. */
function templateParts (log: FastifyBaseLogger): { stream: Destination, time: () => string, chindings: string, messageKey: string } | null {
  const raw = log as unknown as Record<symbol, unknown>
  const { streamSym, timeSym, chindingsSym, messageKeySym, mixinSym, hooksSym, needsMetadataGsym, formattersSym, serializersSym } = pino.symbols
  const stream = raw[streamSym] as (Partial<Destination> & Record<symbol, unknown>) | undefined
  const time = raw[timeSym]
  const chindings = raw[chindingsSym]
  const messageKey = raw[messageKeySym]
  if (typeof stream?.write !== 'function' || typeof time !== 'function' || typeof chindings !== 'string' || typeof messageKey !== 'string') return null
  // A multistream must be told each line's level; a mixin, a write hook, a
  // log or level formatter or a serializer of one of our keys changes the
  // line: pino writes those lines itself.
  const hooks = raw[hooksSym] as { streamWrite?: unknown } | undefined
  const formatters = raw[formattersSym] as { level?: (label: string, n: number) => unknown, log?: unknown } | undefined
  const serializers = raw[serializersSym] as Record<string, unknown> | undefined
  if (stream[needsMetadataGsym] === true || raw[mixinSym] !== undefined || hooks?.streamWrite !== undefined) return null
  if (formatters?.log !== undefined || JSON.stringify(formatters?.level?.('info', INFO)) !== `{"level":${INFO}}`) return null
  if (serializers !== undefined && FIELD_NAMES.some((k) => serializers[k] !== undefined)) return null
  return { stream: stream as Destination, time: time as () => string, chindings, messageKey }
}

/** True when `log`'s access lines are built from the template, not by pino's generic path. */
export function accessLineTemplateApplies (log: FastifyBaseLogger): boolean {
  return templateParts(log) !== null
}

/**
 * `JSON.stringify(value)` for a string, without its generic entry for the
 * strings an access line mostly holds (request ids, methods, plain paths,
 * user ids): printable ASCII with no quote or backslash is its own JSON text.
 */
export function jsonString (value: string): string {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i)
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return JSON.stringify(value)
  }
  return '"' + value + '"'
}

/** Writes one access line per call, at info level, through `log`'s destination (or through `log.info` when the template does not apply). */
export function accessLineWriter (log: FastifyBaseLogger): (fields: AccessFields) => void {
  const parts = templateParts(log)
  if (parts === null) return (fields) => { log.info(fields, ACCESS_MESSAGE) }
  const { stream, time, chindings } = parts
  const level = `{"level":${INFO}`
  const tail = `,${JSON.stringify(parts.messageKey)}:${JSON.stringify(ACCESS_MESSAGE)}}\n`
  // route and upstream come from the config, a handful of values: each is
  // escaped once
  const escaped = (prefix: string): ((value: string) => string) => {
    const done = new Map<string, string>()
    return (value) => {
      let part = done.get(value)
      if (part === undefined) {
        part = prefix + JSON.stringify(value)
        done.set(value, part)
      }
      return part
    }
  }
  const routePart = escaped(',"route":')
  const upstreamPart = escaped(',"upstream":')
  return (f) => {
    stream.write(level + time() + chindings +
      ',"reqId":' + jsonString(f.reqId) +
      routePart(f.route) +
      ',"method":' + jsonString(f.method) +
      ',"url":' + jsonString(f.url) +
      ',"status":' + String(f.status) +
      ',"ms":' + String(f.ms) +
      (f.upstream === undefined ? '' : upstreamPart(f.upstream)) +
      (f.user === undefined ? '' : ',"user":' + jsonString(f.user)) +
      tail)
  }
}
