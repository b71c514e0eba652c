import { Redis } from 'ioredis'

// What one Redis round trip costs the client's CPU, with no HTTP around it:
// CONCURRENCY loops each sending a small Lua script by EVALSHA (INCR, PEXPIRE, PTTL, as a
// rate-limit counter does) until COMMANDS are done.
//
//   taskset -c 1 node dist/bench/redis-roundtrip.js [redis://127.0.0.1:6379] [auto]
//
// `auto` turns on ioredis's auto-pipelining for comparison.

const COMMANDS = 200_000
const CONCURRENCY = 50
const COUNTER = "local c = redis.call('INCR', KEYS[1]) if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return {c, redis.call('PTTL', KEYS[1])}"

async function main (): Promise<void> {
  const [url = 'redis://127.0.0.1:6379', mode] = process.argv.slice(2)
  const redis = new Redis(url, { enableAutoPipelining: mode === 'auto', commandTimeout: 1000 })
  // EVALSHA of a script defined once, as @fastify/rate-limit's Redis store sends it
  redis.defineCommand('counter', { numberOfKeys: 1, lua: COUNTER })
  const counter = (redis as unknown as { counter: (key: string, windowMs: number) => Promise<unknown> }).counter.bind(redis)
  const prefix = `tgbench:rtt:${process.pid}:`
  let sent = 0
  const cpu = process.cpuUsage()
  const started = Date.now()
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (sent < COMMANDS) {
      sent++
      await counter(`${prefix}${sent % 1000}`, 60_000)
    }
  }))
  const used = process.cpuUsage(cpu)
  const seconds = (Date.now() - started) / 1000
  console.log(`${mode === 'auto' ? 'auto-pipelining' : 'one write per command'}: ` +
    `${((used.user + used.system) / COMMANDS).toFixed(1)} µs CPU per command ` +
    `(user ${(used.user / COMMANDS).toFixed(1)}, system ${(used.system / COMMANDS).toFixed(1)}), ${Math.round(COMMANDS / seconds)} commands/s`)
  redis.disconnect()
}

main().catch((err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
