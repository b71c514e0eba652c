import { Writable } from 'node:stream'
import { mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import t, { type Test } from 'tap'
import type { FastifyBaseLogger } from 'fastify'
import { ACCESS_MESSAGE, accessLineTemplateApplies, accessLineWriter, type AccessFields } from '../../src/ops/access-line.js'
import { BatchedLogDestination } from '../../src/ops/log-destination.js'
import { loggerOptions } from '../../src/ops/logger.js'

// The bin's access line is encoded by hand, straight into its log
// destination's buffer; log shippers see the line pino would have written
// for the same fields, byte for byte, or pino writes it itself when the
// logger is set up in a way the template does not know.

function capture (): { stream: Writable, lines: string[] } {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l) => l !== ''))
      done()
    }
  })
  return { stream, lines }
}

/** The bin's destination over a file, and the lines that reached the file. */
function fileDestination (t: Test): { destination: BatchedLogDestination, lines: () => string[] } {
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-access-line-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'access.log')
  const destination = new BatchedLogDestination(openSync(file, 'w'))
  return {
    destination,
    lines () {
      destination.flushSync()
      return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '')
    }
  }
}

const FIXED_TIME = (): string => ',"time":1700000000000'

const CASES: AccessFields[] = [
  { reqId: 'r-1', route: '/api', method: 'GET', url: '/api/x?q=1', status: 200, ms: 1.25, upstream: 'http://127.0.0.1:3000', user: 'u-1' },
  { reqId: 'r-2', route: '(unmatched)', method: 'POST', url: '/nowhere', status: 404, ms: 0 },
  { reqId: 'r-3', route: '/auth/login', method: 'POST', url: '/auth/login', status: 401, ms: 12 },
  { reqId: 'r-4', route: '/api', method: 'GET', url: '/api/y', status: 204, ms: 7.2, upstream: 'http://127.0.0.1:3000' },
  // what a client controls must come out escaped as JSON.stringify escapes it
  { reqId: 'id "quoted" \\ back', route: '/a "route"', method: 'GET', url: '/a/"b"\u0001\u2028é😀\ud800', status: 502, ms: 30000.5, upstream: 'http://h/"x"', user: 'name with "quotes"' }
]

/** Writes every case through the byte template and through pino; returns both sets of lines. */
function bothWays (t: Test, cases: AccessFields[], options: pino.LoggerOptions): { byHand: string[], viaPino: string[] } {
  const reference = capture()
  const pinoLogger = pino(options, reference.stream).child({}, { redact: { paths: [] } })
  const file = fileDestination(t)
  const logger = pino(options, file.destination) as FastifyBaseLogger
  t.ok(accessLineTemplateApplies(logger), 'the bin\'s logger and destination take the template')
  const lineFor = accessLineWriter(logger)
  for (const c of cases) {
    lineFor(c.route, c.upstream)(c.reqId, c.method, c.url, c.status, c.ms, c.user)
    const fields: AccessFields = { reqId: c.reqId, route: c.route, method: c.method, url: c.url, status: c.status, ms: Math.round(c.ms * 100) / 100 }
    if (c.upstream !== undefined) fields.upstream = c.upstream
    if (c.user !== undefined) fields.user = c.user
    pinoLogger.info(fields, ACCESS_MESSAGE)
  }
  return { byHand: file.lines(), viaPino: reference.lines }
}

t.test('the line is the one pino writes for the same fields', async (t) => {
  for (const base of [undefined, { pid: 42, hostname: 'h', role: 'worker' }]) {
    const options = { ...(loggerOptions('info', false) as pino.LoggerOptions), timestamp: FIXED_TIME, ...(base === undefined ? {} : { base }) }
    const { byHand, viaPino } = bothWays(t, CASES, options)
    t.equal(byHand.length, CASES.length)
    t.same(byHand, viaPino, `byte for byte, base ${JSON.stringify(base)}`)
    t.ok(byHand.every((l) => JSON.parse(l) !== null), 'every line parses')
  }
})

t.test('with pino\'s own epoch time, the time is now, and the rest is pino\'s line', async (t) => {
  const before = Date.now()
  const { byHand, viaPino } = bothWays(t, CASES, loggerOptions('info', false) as pino.LoggerOptions)
  const after = Date.now()
  const times = byHand.map((l) => (JSON.parse(l) as { time: number }).time)
  t.ok(times.every((time) => time >= before && time <= after), 'written as the clock read')
  const untimed = (lines: string[]): string[] => lines.map((l) => l.replace(/,"time":\d+,/, ',"time":0,'))
  t.same(untimed(byHand), untimed(viaPino))
})

t.test('every character a client sends comes out as JSON.stringify writes it', async (t) => {
  const every = Array.from({ length: 0x80 }, (_, c) => String.fromCharCode(c))
  const samples = [...every, '', 'plain', every.join(''), '/a b/c?d=e&f', 'é', '\u2028', '😀', '\ud800', 'x\udc00y', 'tab\tin', 'del\u007f']
  const cases = samples.map((value, i): AccessFields => ({ reqId: value, route: '/api', method: value, url: value, status: 200, ms: i, user: value }))
  const { byHand, viaPino } = bothWays(t, cases, { ...(loggerOptions('info', false) as pino.LoggerOptions), timestamp: FIXED_TIME })
  t.equal(byHand.length, samples.length)
  // named by their UTF-16 units: U+2028 or a lone surrogate in a name would break the TAP stream
  const units = (value: string): string => Array.from({ length: value.length }, (_, i) => value.charCodeAt(i).toString(16)).join(' ')
  // A lone surrogate is escaped, as JSON.stringify does and pino does from
  // Node 25 (before, pino leaves it raw and UTF-8 turns it into U+FFFD):
  // the line gives back exactly what the client sent.
  const loneSurrogate = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/
  samples.forEach((value, i) => {
    const line = byHand[i] ?? ''
    t.equal((JSON.parse(line) as { url: string }).url, value, `units [${units(value)}]: parses back to the same string`)
    t.ok(line.includes(`"url":${JSON.stringify(value)},`), `units [${units(value)}]: escaped as JSON.stringify escapes it`)
    if (!loneSurrogate.test(value)) t.equal(line, viaPino[i], `units [${units(value)}]: pino's line`)
  })
})

t.test('latency is written in hundredths of a millisecond as pino writes the rounded number', async (t) => {
  const values = [0, 0.004, 0.005, 0.01, 0.1, 0.99, 1, 6.77, 7.2, 9.999, 10, 12, 48.13, 100.05, 999.99, 1234.5, 30000.5, 86400000, 123456789.01]
  for (let h = 0; h < 2000; h += 7) values.push(h / 100)
  const cases = values.map((ms): AccessFields => ({ reqId: 'r', route: '/api', method: 'GET', url: '/api', status: 200, ms }))
  const { byHand, viaPino } = bothWays(t, cases, { ...(loggerOptions('info', false) as pino.LoggerOptions), timestamp: FIXED_TIME })
  t.same(byHand, viaPino)
})

t.test('what the template cannot hold goes through pino, in order', async (t) => {
  const cases: AccessFields[] = [
    { reqId: 'r-1', route: '/api', method: 'GET', url: '/api/1', status: 200, ms: 1 },
    // longer than one write to the file
    { reqId: 'r-2', route: '/api', method: 'GET', url: '/' + 'a'.repeat(20_000), status: 200, ms: 1 },
    // no latency (pino writes null)
    { reqId: 'r-3', route: '/api', method: 'GET', url: '/api/3', status: 200, ms: Number.NaN },
    { reqId: 'r-4', route: '/api', method: 'GET', url: '/api/4', status: 200, ms: 4 }
  ]
  const { byHand, viaPino } = bothWays(t, cases, { ...(loggerOptions('info', false) as pino.LoggerOptions), timestamp: FIXED_TIME })
  t.same(byHand, viaPino)
  t.same(byHand.map((l) => (JSON.parse(l) as { reqId: string }).reqId), ['r-1', 'r-2', 'r-3', 'r-4'])
})

t.test('a logger the template does not know writes through pino, fields intact', async (t) => {
  const setups: Array<[string, pino.LoggerOptions]> = [
    ['a level formatter', { formatters: { level: (label) => ({ level: label }) } }],
    ['a log formatter', { formatters: { log: (obj) => ({ ...obj, extra: true }) } }],
    ['a mixin', { mixin: () => ({ mixed: 1 }) }],
    ['a serializer of a field', { serializers: { url: () => '[url]' } }],
    ['another destination', {}]
  ]
  for (const [name, options] of setups) {
    const file = fileDestination(t)
    const out = capture()
    const logger = pino({ ...options, timestamp: FIXED_TIME }, name === 'another destination' ? out.stream : file.destination) as FastifyBaseLogger
    t.notOk(accessLineTemplateApplies(logger), `${name}: pino writes the line`)
    const c = CASES[0] as AccessFields
    accessLineWriter(logger)(c.route, c.upstream)(c.reqId, c.method, c.url, c.status, c.ms, c.user)
    await new Promise((resolve) => setImmediate(resolve))
    const written = name === 'another destination' ? out.lines : file.lines()
    const line = JSON.parse(written[0] ?? '{}') as Record<string, unknown>
    t.equal(line.msg, ACCESS_MESSAGE, name)
    t.equal(line.reqId, 'r-1', `${name}: the fields are there`)
    t.equal(line.upstream, 'http://127.0.0.1:3000', `${name}: the route's fields too`)
    if (name === 'a level formatter') t.equal(line.level, 'info', 'the formatter was applied')
    if (name === 'a log formatter') t.equal(line.extra, true, 'the formatter was applied')
    if (name === 'a mixin') t.equal(line.mixed, 1, 'the mixin was applied')
    if (name === 'a serializer of a field') t.equal(line.url, '[url]', 'the serializer was applied')
  }
})
