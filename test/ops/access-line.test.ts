import { Writable } from 'node:stream'
import pino from 'pino'
import t from 'tap'
import type { FastifyBaseLogger } from 'fastify'
import { ACCESS_MESSAGE, accessLineTemplateApplies, accessLineWriter, jsonString, type AccessFields } from '../../src/ops/access-line.js'
import { loggerOptions } from '../../src/ops/logger.js'

// The access line is built by hand for speed; log shippers see the line
// pino would have written for the same fields, byte for byte, or pino
// writes it itself when the logger is set up in a way the template does not
// know.

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

const FIXED_TIME = (): string => ',"time":1700000000000'

const CASES: AccessFields[] = [
  { reqId: 'r-1', route: '/api', method: 'GET', url: '/api/x?q=1', status: 200, ms: 1.25, upstream: 'http://127.0.0.1:3000', user: 'u-1' },
  { reqId: 'r-2', route: '(unmatched)', method: 'POST', url: '/nowhere', status: 404, ms: 0 },
  // fields present but undefined are left out, as pino leaves them out
  { reqId: 'r-3', route: '/auth/login', method: 'POST', url: '/auth/login', status: 401, ms: 12, upstream: undefined, user: undefined },
  // what a client controls must come out escaped as JSON.stringify escapes it
  { reqId: 'id "quoted" \\ back', route: '/api', method: 'GET', url: '/a/"b"\u0001\u2028é😀\ud800', status: 502, ms: 30000.5, user: 'name with "quotes"' }
]

t.test('the line is the one pino writes for the same fields', async (t) => {
  for (const base of [undefined, { pid: 42, hostname: 'h', role: 'worker' }]) {
    const viaPino = capture()
    const byHand = capture()
    const options = { ...(loggerOptions('info', false) as pino.LoggerOptions), timestamp: FIXED_TIME, ...(base === undefined ? {} : { base }) } as pino.LoggerOptions
    const reference = pino(options, viaPino.stream).child({}, { redact: { paths: [] } })
    const logger = pino(options, byHand.stream) as FastifyBaseLogger
    t.ok(accessLineTemplateApplies(logger), 'the gateway\'s logger takes the template')
    const write = accessLineWriter(logger)
    for (const fields of CASES) {
      reference.info(fields, ACCESS_MESSAGE)
      write(fields)
    }
    await new Promise((resolve) => setImmediate(resolve))
    t.equal(byHand.lines.length, CASES.length)
    t.same(byHand.lines, viaPino.lines, `byte for byte, base ${JSON.stringify(base)}`)
    t.ok(byHand.lines.every((l) => JSON.parse(l) !== null), 'every line parses')
  }
})

t.test('strings come out as JSON.stringify writes them', async (t) => {
  const every = Array.from({ length: 0x80 }, (_, c) => String.fromCharCode(c))
  const samples = [...every, '', 'plain', every.join(''), '/a b/c?d=e&f', 'é', '\u2028', '😀', '\ud800', 'x\udc00y', 'tab\tin', 'del\u007f']
  // named by their UTF-16 units: U+2028 or a lone surrogate in a name would break the TAP stream
  const units = (value: string): string => Array.from({ length: value.length }, (_, i) => value.charCodeAt(i).toString(16)).join(' ')
  for (const value of samples) t.equal(jsonString(value), JSON.stringify(value), `units [${units(value)}]`)
})

t.test('a logger the template does not know writes through pino, fields intact', async (t) => {
  const setups: Array<[string, pino.LoggerOptions]> = [
    ['a level formatter', { formatters: { level: (label) => ({ level: label }) } }],
    ['a log formatter', { formatters: { log: (obj) => ({ ...obj, extra: true }) } }],
    ['a mixin', { mixin: () => ({ mixed: 1 }) }],
    ['a serializer of a field', { serializers: { url: () => '[url]' } }]
  ]
  for (const [name, options] of setups) {
    const out = capture()
    const logger = pino({ ...options, timestamp: FIXED_TIME }, out.stream) as FastifyBaseLogger
    t.notOk(accessLineTemplateApplies(logger), `${name}: pino writes the line`)
    accessLineWriter(logger)(CASES[0] as AccessFields)
    await new Promise((resolve) => setImmediate(resolve))
    const line = JSON.parse(out.lines[0] ?? '{}') as Record<string, unknown>
    t.equal(line.msg, ACCESS_MESSAGE, name)
    t.equal(line.reqId, 'r-1', `${name}: the fields are there`)
    if (name === 'a level formatter') t.equal(line.level, 'info', 'the formatter was applied')
    if (name === 'a log formatter') t.equal(line.extra, true, 'the formatter was applied')
    if (name === 'a mixin') t.equal(line.mixed, 1, 'the mixin was applied')
    if (name === 'a serializer of a field') t.equal(line.url, '[url]', 'the serializer was applied')
  }
})
