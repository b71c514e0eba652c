import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Redis } from 'ioredis'
import type { Test } from 'tap'
import { dataNodeAuthArgs, PLAIN_TCP, redisProcessGroup, startOnFreePort, waitForPing, withNode, withPassword, type RedisAuth, type RedisTransport } from './redis-server.js'
import { waitFor } from './wait-for.js'

// A real Sentinel topology from the redis-server binary: one primary, one
// replica, three sentinels (quorum 2), all on free ports of this machine.
// Start it once per test file: a failover takes seconds.

export const MASTER_NAME = 'tgmaster'

export interface SentinelTopology {
  /** "host:port" of each sentinel, as redis.sentinels takes them */
  sentinels: string[]
  masterName: string
  /** the port of the data node the sentinels call primary now */
  primaryPort (): Promise<number>
  /** kill -9 of the current primary; resolves once the sentinels have promoted the replica */
  killPrimary (): Promise<void>
  /** starts the killed node again as a replica of the new primary; resolves once it is in sync */
  restoreKilled (): Promise<void>
  /**
   * kill -STOP of the current primary: its sockets stay open and nothing on
   * them is answered, closed or reset. Resolves with its port at once.
   */
  freezePrimary (): Promise<number>
  /** kill -CONT of the frozen node (no-op when none is frozen) */
  thawFrozen (): void
}

export interface SentinelTopologyOptions {
  /** the sentinels' down-after-milliseconds: how long a silent primary lasts before a failover */
  downAfterMs?: number
  /** every node and sentinel TLS only (tlsTransport); plain TCP by default */
  transport?: RedisTransport
  /** passwords the data nodes and the sentinels require, an ACL user on the data nodes; none by default */
  auth?: RedisAuth
}

interface Node { port: number, proc: ChildProcess, args: string[] }

export async function startSentinelTopology (t: Test, opts: SentinelTopologyOptions = {}): Promise<SentinelTopology> {
  const group = redisProcessGroup<Node>(t, 'sentinel')
  const { dir, nodes, thawFrozen } = group
  const transport = opts.transport ?? PLAIN_TCP
  const admin = <T>(port: number, use: (r: Redis) => Promise<T>): Promise<T> => withNode(withPassword(transport, opts.auth?.password), port, use)
  const adminSentinel = <T>(port: number, use: (r: Redis) => Promise<T>): Promise<T> => withNode(withPassword(transport, opts.auth?.sentinelPassword), port, use)

  const launch = (args: string[]) => (port: number): ChildProcess => {
    const resolved = [...args, ...transport.listen(port)].map((a) => a.replaceAll('{port}', String(port)))
    return spawn('redis-server', resolved, { stdio: 'ignore' })
  }
  /** on `port` (a restart), or on a free one */
  const start = async (args: string[], port?: number): Promise<Node> => {
    let proc: ChildProcess
    if (port === undefined) ({ port, proc } = await startOnFreePort(launch(args), transport))
    else {
      proc = launch(args)(port)
      await waitForPing(port, proc, transport)
    }
    const node = { port, proc, args }
    nodes.push(node)
    return node
  }
  let killed: Node | undefined
  // A replica writes the RDB it syncs to its dir: keep it out of the repo,
  // where every later redis-server would load it at start.
  // A replica (re)joining syncs at once, not after the default 5 s wait for company.
  const dataNode = (extra: string[]): string[] => ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--dbfilename', 'dump-{port}.rdb',
    '--repl-diskless-sync-delay', '0', ...dataNodeAuthArgs(opts.auth), ...extra]

  const primary = await start(dataNode([]))
  await start(dataNode(['--replicaof', '127.0.0.1', String(primary.port)]))
  await admin(primary.port, async (r) => {
    await waitFor('the replica is in sync', async () => /slave0:[^\r\n]*state=online/.test(await r.info('replication')), 200, 50)
  })

  const sentinels: Node[] = []
  for (let i = 0; i < 3; i++) {
    const file = join(dir, `sentinel-${i}.conf`)
    // a sentinel rewrites its config file, so each gets its own
    writeFileSync(file, '')
    const ownPassword = opts.auth?.sentinelPassword === undefined ? [] : ['--requirepass', opts.auth.sentinelPassword]
    const node = await start([file, '--sentinel', '--bind', '127.0.0.1', ...ownPassword])
    await adminSentinel(node.port, async (r) => {
      await r.call('SENTINEL', 'MONITOR', MASTER_NAME, '127.0.0.1', String(primary.port), '2')
      await r.call('SENTINEL', 'SET', MASTER_NAME, 'down-after-milliseconds', String(opts.downAfterMs ?? 1000), 'failover-timeout', '3000')
      // the sentinels log in to the data nodes as their default user
      if (opts.auth !== undefined) await r.call('SENTINEL', 'SET', MASTER_NAME, 'auth-pass', opts.auth.password)
    })
    sentinels.push(node)
  }
  const asSentinel = <T>(use: (r: Redis) => Promise<T>): Promise<T> => adminSentinel(sentinels[0].port, use)
  await asSentinel(async (r) => {
    await waitFor('the sentinels know the replica and each other', async () => {
      const replicas = await r.call('SENTINEL', 'REPLICAS', MASTER_NAME) as unknown[]
      const peers = await r.call('SENTINEL', 'SENTINELS', MASTER_NAME) as unknown[]
      return replicas.length === 1 && peers.length === 2
    }, 300, 50)
  })

  const primaryPort = (): Promise<number> => asSentinel(async (r) => {
    const [, port] = await r.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', MASTER_NAME) as [string, string]
    return Number(port)
  })

  return {
    sentinels: sentinels.map((s) => `127.0.0.1:${s.port}`),
    masterName: MASTER_NAME,
    primaryPort,
    killPrimary: async () => {
      const port = await primaryPort()
      const node = nodes.find((n) => n.port === port)
      if (node === undefined) throw new Error(`no node on port ${port}`)
      const exited = once(node.proc, 'exit')
      node.proc.kill('SIGKILL')
      await exited
      killed = node
      await waitFor('the sentinels promote the replica', async () => (await primaryPort()) !== port, 400, 50)
    },
    restoreKilled: async () => {
      const node = killed
      if (node === undefined) return
      killed = undefined
      nodes.splice(nodes.indexOf(node), 1)
      const primary = await primaryPort()
      await start(dataNode(['--replicaof', '127.0.0.1', String(primary)]), node.port)
      await admin(primary, async (r) => {
        await waitFor('the restored node is in sync', async () => /slave0:[^\r\n]*state=online/.test(await r.info('replication')), 400, 50)
      })
      // and every sentinel counts it as a healthy replica again, so that the
      // next kill has a replica to promote
      for (const sentinel of sentinels) {
        await adminSentinel(sentinel.port, async (r) => {
          await waitFor('the sentinels see the restored replica', async () => {
            const replicas = await r.call('SENTINEL', 'REPLICAS', MASTER_NAME) as string[][]
            return replicas.some((fields) => {
              const f = new Map<string, string>()
              for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!)
              return f.get('port') === String(node.port) && f.get('flags') === 'slave' && f.get('master-link-status') === 'ok'
            })
          }, 400, 50)
        })
      }
    },
    freezePrimary: async () => {
      const port = await primaryPort()
      group.freeze(port)
      return port
    },
    thawFrozen
  }
}
