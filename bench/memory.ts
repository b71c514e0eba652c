import { Pool } from 'undici'
import type { Server } from './servers.js'

// Memory under many distinct callers: every cache and counter keyed by a
// token or an address must be bounded, so the heap after a garbage collection
// stops growing once those bounds are reached however many more callers come.

export interface MemoryPhase {
  name: string
  /** heap used (MiB, after a full GC) at each checkpoint: before, then after every quarter */
  heapMiB: number[]
  statuses: Record<string, number>
}

const CONCURRENCY = 50

/** Sends `count` requests, the n-th with `headersFor(n)`, and records the heap at every quarter. */
export async function memoryPhase (
  name: string,
  server: Server,
  path: string,
  count: number,
  headersFor: (n: number) => Record<string, string>
): Promise<MemoryPhase> {
  const pool = new Pool(server.url, { connections: CONCURRENCY })
  const heapMiB = [(await server.memory()).heapUsed / 2 ** 20]
  const statuses: Record<string, number> = {}
  let next = 0
  try {
    for (let quarter = 1; quarter <= 4; quarter++) {
      const end = Math.round(count * quarter / 4)
      await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
        for (let n = next++; n < end; n = next++) {
          const res = await pool.request({ path, method: 'GET', headers: headersFor(n) })
          await res.body.dump()
          statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1
        }
      }))
      next = end
      heapMiB.push((await server.memory()).heapUsed / 2 ** 20)
    }
  } finally {
    await pool.close()
  }
  return { name, heapMiB, statuses }
}
