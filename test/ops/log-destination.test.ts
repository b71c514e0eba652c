import { spawn, spawnSync } from 'node:child_process'
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setImmediate as nextTurn } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { BatchedLogDestination, FILE_BATCH_BYTES, MAX_WRITE_BYTES } from '../../src/ops/log-destination.js'
import { waitFor } from '../helpers/wait-for.js'

// The bin's log destination: to a pipe, the lines of one event-loop turn go
// out at its end, in writes cut between lines; to a file, lines are held a
// few milliseconds to share a write; nothing is lost on a full pipe or a
// clean stop, and a reader that went away costs the gateway nothing but the
// lines.

const COMPILED = join(__dirname, '..', '..', 'dist', 'src', 'ops', 'log-destination.js')

function tempFile (t: Test, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-logdest-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return join(dir, name)
}

/** A named pipe: a descriptor to write to (what a service manager hands over as stdout) and what has arrived so far. */
function pipe (t: Test): { fd: number, arrived: () => string } {
  const path = tempFile(t, 'fifo')
  t.equal(spawnSync('mkfifo', [path]).status, 0, 'mkfifo')
  // the reader first, without blocking; then a writer, which finds it there
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  const fd = openSync(path, constants.O_WRONLY)
  t.teardown(() => { closeSync(fd); closeSync(reader) })
  let text = ''
  const chunk = Buffer.alloc(65536)
  return {
    fd,
    arrived () {
      for (;;) {
        let n = 0
        try {
          n = readSync(reader, chunk)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EAGAIN') return text
          throw err
        }
        if (n === 0) return text
        text += chunk.toString('utf8', 0, n)
      }
    }
  }
}

t.test('to a pipe, lines logged in one turn are written when the turn ends, all of them, in order', async (t) => {
  const out = pipe(t)
  const dest = new BatchedLogDestination(out.fd)
  for (let i = 0; i < 3; i++) dest.write(`{"n":${i}}\n`)
  t.equal(out.arrived(), '', 'nothing written while the turn runs')
  await nextTurn()
  t.equal(out.arrived(), '{"n":0}\n{"n":1}\n{"n":2}\n', 'the whole turn, once it ended')
  dest.write('{"n":3}\n')
  dest.flushSync()
  t.equal(out.arrived().split('\n').at(-2), '{"n":3}', 'flushSync writes at once (exit, stop, reload)')
})

t.test('to a pipe, a turn larger than a write goes out whole lines at a time, never half a line', async (t) => {
  const out = pipe(t)
  const dest = new BatchedLogDestination(out.fd)
  const lines = Array.from({ length: 200 }, (_, i) => JSON.stringify({ n: i, pad: 'é'.repeat(i % 70) }) + '\n')
  const long = JSON.stringify({ long: 'x'.repeat(3 * MAX_WRITE_BYTES) }) + '\n'
  for (const line of [...lines.slice(0, 100), long, ...lines.slice(100)]) dest.write(line)
  await nextTurn()
  t.equal(out.arrived(), [...lines.slice(0, 100), long, ...lines.slice(100)].join(''), 'every byte, in order, a line longer than a write included')
})

t.test('to a file, lines are held to share a write, then all written in order; a full batch and flushSync write at once', async (t) => {
  const file = tempFile(t, 'log')
  const fd = openSync(file, 'a')
  t.teardown(() => closeSync(fd))
  const dest = new BatchedLogDestination(fd)
  const lines = Array.from({ length: 50 }, (_, i) => `{"n":${i}}\n`)
  for (const line of lines) dest.write(line)
  t.equal(readFileSync(file, 'utf8'), '', 'nothing written while the turn runs')
  await waitFor('the held lines in the file', () => readFileSync(file, 'utf8') === lines.join(''))
  t.pass('every line, in order')
  const big = JSON.stringify({ pad: 'b'.repeat(FILE_BATCH_BYTES) }) + '\n'
  dest.write(big)
  t.equal(readFileSync(file, 'utf8'), lines.join('') + big, 'a batch of FILE_BATCH_BYTES is written in the same turn')
  dest.write('{"last":true}\n')
  dest.flushSync()
  t.equal(readFileSync(file, 'utf8').split('\n').at(-2), '{"last":true}', 'flushSync writes at once (exit, stop, reload)')
})

t.test('a process that exits with lines held writes them', async (t) => {
  const file = tempFile(t, 'log')
  const child = spawn(process.execPath, ['-e', `
    const { openSync } = require('node:fs')
    const { BatchedLogDestination } = require(${JSON.stringify(COMPILED)})
    const dest = new BatchedLogDestination(openSync(${JSON.stringify(file)}, 'a'))
    process.on('exit', () => dest.flushSync())
    for (let n = 0; n < 100; n++) dest.write(JSON.stringify({ n }) + '\\n')
  `], { stdio: 'inherit' })
  t.equal(await new Promise<number | null>((resolve) => child.on('close', resolve)), 0)
  t.equal(readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').length, 100, 'all 100 lines, though the hold timer never fired')
})

/** A process that writes `count` lines of about 300 bytes through the destination on its stdout, `perTurn` a turn. */
function writer (id: string, count: number, perTurn: number, touchStdout: boolean): string {
  return `
    const { BatchedLogDestination } = require(${JSON.stringify(COMPILED)})
    ${touchStdout ? 'process.stdout.write("")' /* makes fd 1, a pipe, non-blocking: writes meet EAGAIN */ : ''}
    const dest = new BatchedLogDestination(1)
    let n = 0
    const turn = () => {
      for (let i = 0; i < ${perTurn} && n < ${count}; i++, n++) dest.write(JSON.stringify({ w: ${JSON.stringify(id)}, n, pad: 'p'.repeat(250) }) + '\\n')
      if (n < ${count}) setImmediate(turn)
    }
    turn()
  `
}

t.test('workers sharing one stdout pipe never interleave their lines', async (t) => {
  // as a supervisor's workers do, three processes write to one inherited
  // pipe, in turns of 1000 lines (300 KB, more than a pipe holds): a write
  // that meets a full pipe is finished later, after other writers' writes
  const ids = ['a', 'b', 'c']
  const parent = spawn(process.execPath, ['-e', `
    const { spawn } = require('node:child_process')
    for (const code of JSON.parse(process.env.WRITERS)) spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'inherit', 'inherit'] })
  `], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, WRITERS: JSON.stringify(ids.map((id) => writer(id, 3000, 1000, false))) } })
  let out = ''
  // a reader that keeps falling behind: writers find the pipe full in the
  // middle of a write, which is where a write larger than PIPE_BUF is split
  let reads = 0
  parent.stdout.setEncoding('utf8').on('data', (d: string) => {
    out += d
    if (++reads % 4 === 0) {
      parent.stdout.pause()
      setTimeout(() => parent.stdout.resume(), 5)
    }
  })
  // the pipe ends once the parent and all three writers are done
  await new Promise((resolve) => parent.stdout.on('end', resolve))
  const parsed = out.split('\n').filter((l) => l !== '').map((l) => {
    try { return JSON.parse(l) as { w: string, n: number } } catch { return null }
  })
  t.equal(parsed.filter((p) => p === null).length, 0, 'every line read from the shared pipe is one whole line')
  for (const id of ids) {
    t.same(parsed.filter((p) => p?.w === id).map((p) => p?.n), Array.from({ length: 3000 }, (_, i) => i), `all of ${id}'s lines, in its order`)
  }
})

t.test('a full non-blocking pipe loses no line: the writer waits for its reader', async (t) => {
  const child = spawn(process.execPath, ['-e', writer('slow', 5000, 500, true)], { stdio: ['ignore', 'pipe', 'inherit'] })
  // read nothing until the pipe (64 KiB) has long been full
  child.stdout.pause()
  await new Promise((resolve) => setTimeout(resolve, 300))
  let out = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d })
  child.stdout.resume()
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  t.equal(code, 0)
  t.equal(out.split('\n').filter((l) => l !== '').length, 5000, 'every line arrived')
})

t.test('a reader that went away (EPIPE) drops the lines and nothing else', async (t) => {
  const child = spawn(process.execPath, ['-e', `
    process.on('SIGPIPE', () => {})
    const { BatchedLogDestination } = require(${JSON.stringify(COMPILED)})
    const dest = new BatchedLogDestination(1)
    setTimeout(() => {
      dest.write('{"after":"the reader left"}\\n')
      dest.flushSync()
      process.stderr.write('still serving')
    }, 200)
  `], { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout.destroy()
  let err = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d })
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  t.equal(code, 0, 'no crash')
  t.equal(err, 'still serving')
})
