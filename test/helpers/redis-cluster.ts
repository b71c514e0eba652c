import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { promisify } from 'node:util'
import type { Redis } from 'ioredis'
import type { Test } from 'tap'
import { keySlot } from '../../src/sessions/redis-slot.js'
import { canListen, dataNodeAuthArgs, freePort, PLAIN_TCP, redisProcessGroup, startOnFreePort, waitForPing, withNode, withPassword, type RedisAuth, type RedisTransport } from './redis-server.js'
import { waitFor } from './wait-for.js'

// A real Redis Cluster from the redis-server binary: three primaries with one
// replica each, built by `redis-cli --cluster create`, on free ports of this
// machine. Start it once per test file: building one and every failover take
// seconds. cluster-node-timeout is 1 s so a failover is quick; full coverage
// is required (Redis's default), so while a primary is down and not yet
// replaced the whole cluster refuses writes, as it would in production.

export interface ClusterTopology {
  /** "host:port" of every node, as redis.cluster takes them */
  seeds: string[]
  /** the port of the primary that serves `key`'s slot now */
  primaryOf (key: string): Promise<number>
  /** kill -9 of the primary serving `key`'s slot; resolves once a replica has taken the slot over */
  killPrimaryOf (key: string): Promise<void>
  /** starts the killed node again (it rejoins as a replica); resolves once it is in sync */
  restoreKilled (): Promise<void>
  /** a resharding of one slot: moves `key`'s slot, with its keys, to another primary; resolves with the new primary's port */
  moveSlotOf (key: string): Promise<number>
  /**
   * kill -STOP of the primary serving `key`'s slot: its sockets stay open and
   * nothing on them is answered, closed or reset. Resolves with its port at once.
   */
  freezePrimaryOf (key: string): Promise<number>
  /** kill -CONT of the frozen node (no-op when none is frozen) */
  thawFrozen (): void
}

export interface ClusterTopologyOptions {
  /** cluster-node-timeout: how long a silent primary lasts before its replica takes over */
  nodeTimeoutMs?: number
  /** every node TLS only, the cluster bus and replication too (tlsTransport); plain TCP by default */
  transport?: RedisTransport
  /** the nodes name themselves by this hostname in the slot table (cluster-preferred-endpoint-type hostname), as managed clusters do */
  announceHostname?: string
  /** the password every node requires (replicas use it too), an ACL user; none by default (sentinelPassword does not apply) */
  auth?: RedisAuth
}

interface Node { port: number, proc: ChildProcess }

/** Gateway config for a test on `topology`: timeouts that ride out a failover, a staleness window longer than one. */
export function clusterGatewayConfig (topology: ClusterTopology, keyPrefix: string): Record<string, unknown> {
  return {
    redis: { cluster: topology.seeds, keyPrefix, connectTimeout: '1s', commandTimeout: '1500ms', waitTimeout: '1s' },
    denylist: { maxStaleness: '15s' }
  }
}

const run = promisify(execFile)

export async function startClusterTopology (t: Test, opts: ClusterTopologyOptions = {}): Promise<ClusterTopology> {
  const group = redisProcessGroup<Node>(t, 'cluster')
  const { dir, nodes, thawFrozen } = group
  // admin connections and redis-cli authenticate as the default user
  const transport = withPassword(opts.transport ?? PLAIN_TCP, opts.auth?.password)
  const admin = <T>(port: number, use: (r: Redis) => Promise<T>): Promise<T> => withNode(transport, port, use)

  const launch = (port: number): ChildProcess => {
    const proc = spawn('redis-server', [...transport.listen(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--dbfilename', `dump-${port}.rdb`, '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`,
      '--cluster-node-timeout', String(opts.nodeTimeoutMs ?? 1000),
      ...(opts.announceHostname === undefined ? [] : ['--cluster-announce-hostname', opts.announceHostname, '--cluster-preferred-endpoint-type', 'hostname']),
      // a replica (re)joining syncs at once, not after the default 5 s wait for company
      '--repl-diskless-sync-delay', '0', ...dataNodeAuthArgs(opts.auth)], { stdio: 'ignore' })
    nodes.push({ port, proc })
    return proc
  }
  const start = async (port: number): Promise<void> => { await waitForPing(port, launch(port), transport) }
  const ports: number[] = []
  // the cluster bus listens on port + 10000: both must be free
  const pickPort = async (): Promise<number> => {
    for (;;) {
      const port = await freePort()
      if (port <= 55_000 && !ports.includes(port) && await canListen(port + 10_000)) {
        ports.push(port)
        return port
      }
    }
  }
  const started = await Promise.all(Array.from({ length: 6 }, () => startOnFreePort(launch, transport, pickPort)))
  // a node that exited at start stays out of the list of nodes to kill and ask
  for (const n of [...nodes]) if (!started.some((s) => s.proc === n.proc)) nodes.splice(nodes.indexOf(n), 1)
  const seeds = started.map((s) => `127.0.0.1:${s.port}`)
  // bounded: redis-cli waits for the nodes to join without end if they cannot meet
  await run('redis-cli', [...transport.cli, '--cluster', 'create', ...seeds, '--cluster-replicas', '1', '--cluster-yes'], { timeout: 60_000 })

  // a frozen node would hang any question put to it
  const live = (): Node[] => nodes.filter((n) => n.proc.exitCode === null && n.proc.signalCode === null && n !== group.frozen())
  /** slot ranges with their primary's and replicas' ports, as a live node sees them */
  const slotTable = async (port: number): Promise<Array<{ from: number, to: number, primary: number, replicas: number[] }>> =>
    admin(port, async (r) => {
      const slots = await r.call('CLUSTER', 'SLOTS') as Array<[number, number, ...Array<[string, number, string]>]>
      return slots.map(([from, to, primary, ...replicas]) => ({ from, to, primary: primary[1], replicas: replicas.map((x) => x[1]) }))
    })
  const whole = async (): Promise<boolean> => {
    for (const n of live()) {
      const info = await admin(n.port, (r) => r.call('CLUSTER', 'INFO')) as string
      if (!info.includes('cluster_state:ok')) return false
    }
    const table = await slotTable(live()[0]!.port)
    const covered = table.reduce((sum, r) => sum + r.to - r.from + 1, 0)
    if (covered !== 16384 || table.length === 0) return false
    // every primary has a replica that is in sync
    for (const primary of new Set(table.map((r) => r.primary))) {
      const repl = await admin(primary, (r) => r.info('replication'))
      if (!/slave0:[^\r\n]*state=online/.test(repl)) return false
    }
    return true
  }
  await waitFor('the cluster is whole and every replica in sync', whole, 400, 50)

  const primaryOf = async (key: string): Promise<number> => {
    const slot = keySlot(key)
    const table = await slotTable(live()[0]!.port)
    const range = table.find((r) => r.from <= slot && slot <= r.to)
    if (range === undefined) throw new Error(`no node serves slot ${slot}`)
    return range.primary
  }
  let killed: Node | undefined

  return {
    seeds,
    primaryOf,
    killPrimaryOf: async (key) => {
      const port = await primaryOf(key)
      const node = nodes.find((n) => n.port === port)
      if (node === undefined) throw new Error(`no node on port ${port}`)
      const exited = once(node.proc, 'exit')
      node.proc.kill('SIGKILL')
      await exited
      killed = node
      await waitFor('a replica takes the slot over', async () => {
        if ((await primaryOf(key)) === port) return false
        return live().every((n) => n.port === port) || await allOk()
      }, 400, 50)
    },
    restoreKilled: async () => {
      const node = killed
      if (node === undefined) return
      killed = undefined
      nodes.splice(nodes.indexOf(node), 1)
      // its nodes.conf remembers the cluster: it rejoins, finds its slots
      // taken over, and becomes a replica of the node that took them
      await start(node.port)
      await waitFor('the restored node is a replica in sync', whole, 400, 50)
    },
    moveSlotOf: async (key) => {
      const slot = keySlot(key)
      const from = await primaryOf(key)
      const table = await slotTable(from)
      const to = [...new Set(table.map((r) => r.primary))].find((p) => p !== from)
      if (to === undefined) throw new Error('no other primary to move the slot to')
      const idOf = (port: number): Promise<string> => admin(port, async (r) => String(await r.call('CLUSTER', 'MYID')))
      const [fromId, toId] = [await idOf(from), await idOf(to)]
      // the steps redis-cli --cluster reshard takes, for one slot
      await admin(to, (r) => r.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId))
      await admin(from, async (r) => {
        await r.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId)
        for (;;) {
          const keys = await r.call('CLUSTER', 'GETKEYSINSLOT', slot, 100) as string[]
          if (keys.length === 0) break
          await r.call('MIGRATE', '127.0.0.1', to, '', 0, 5000, 'KEYS', ...keys)
        }
      })
      const primaries = [...new Set(table.map((r) => r.primary))]
      for (const port of [to, from, ...primaries.filter((p) => p !== to && p !== from)]) {
        await admin(port, (r) => r.call('CLUSTER', 'SETSLOT', slot, 'NODE', toId))
      }
      await waitFor('every node agrees where the slot is', async () => {
        for (const n of live()) {
          const t = await slotTable(n.port)
          const range = t.find((r) => r.from <= slot && slot <= r.to)
          if (range?.primary !== to) return false
        }
        return true
      }, 400, 50)
      return to
    },
    freezePrimaryOf: async (key) => {
      const port = await primaryOf(key)
      group.freeze(port)
      return port
    },
    thawFrozen
  }

  async function allOk (): Promise<boolean> {
    for (const n of live()) {
      const info = await admin(n.port, (r) => r.call('CLUSTER', 'INFO')) as string
      if (!info.includes('cluster_state:ok')) return false
    }
    return true
  }
}
