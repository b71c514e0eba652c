import { parseDuration } from './duration.js'
import type { GatewayConfig } from './schema.js'
import type { KeyPath } from './yaml-source.js'

// The checks on the redis section that a schema cannot say: one topology at
// most, every node a host:port, Sentinel's companions only beside Sentinel.
// Each problem is reported at the key that causes it (file:line:col).

export interface RedisNode { host: string, port: number }

type Report = (path: KeyPath, message: string) => void

const TOPOLOGY_KEYS = ['url', 'sentinels', 'cluster'] as const

export function checkRedisConfig (redis: GatewayConfig['redis'], report: Report): void {
  const given = TOPOLOGY_KEYS.filter((k) => k === 'url' ? redis.url !== '' : redis[k] !== undefined)
  if (given.length > 1) {
    for (const k of given.slice(1)) report(['redis', k], `cannot be given with redis.${given[0]}: set exactly one of redis.url, redis.sentinels, redis.cluster`)
  }
  if (redis.url !== '' && !/^rediss?:\/\/[^/?#]/.test(redis.url)) report(['redis', 'url'], 'must be a redis:// or rediss:// URL')
  for (const k of ['sentinels', 'cluster'] as const) {
    const list = redis[k]
    if (list === undefined) continue
    if (list.length === 0) report(['redis', k], 'must list at least one "host:port"')
    list.forEach((entry, i) => {
      if (parseNode(entry) === null) report(['redis', k, i], `"${entry}" is not "host:port" with a port from 1 to 65535`)
    })
  }
  if (redis.sentinels !== undefined && redis.masterName === undefined) report(['redis', 'sentinels'], 'needs redis.masterName, the name the sentinels monitor the primary under')
  for (const k of ['masterName', 'sentinelPassword'] as const) {
    if (redis[k] !== undefined && redis.sentinels === undefined) report(['redis', k], 'only applies with redis.sentinels')
  }
  const waitTimeout = redis.waitTimeout ?? DEFAULT_WAIT_TIMEOUT
  // WAIT is one command: past commandTimeout the client gives up on it first.
  if (waitReplicasOf(redis) > 0 && parseDuration(waitTimeout) >= parseDuration(redis.commandTimeout)) {
    report(redis.waitTimeout === undefined ? ['redis', 'commandTimeout'] : ['redis', 'waitTimeout'], `waitTimeout (${waitTimeout}) must be shorter than redis.commandTimeout (${redis.commandTimeout})`)
  }
  if (given.length === 0) {
    for (const k of ['username', 'password', 'tls'] as const) {
      if (redis[k] !== undefined) report(['redis', k], 'has no Redis to apply to: set redis.url, redis.sentinels or redis.cluster')
    }
  }
}

export const DEFAULT_WAIT_TIMEOUT = '250ms'

/**
 * Replicas a revocation, rotation or login waits for: what the config says, else 1 where the
 * topology has replicas (Sentinel and Cluster exist to fail over to one).
 */
export function waitReplicasOf (redis: GatewayConfig['redis']): number {
  return redis.waitReplicas ?? (redis.sentinels !== undefined || redis.cluster !== undefined ? 1 : 0)
}

/** "host:port", "[v6]:port"; null when it is not one. */
export function parseNode (text: string): RedisNode | null {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(text)
  if (m === null) return null
  const port = Number(m[3])
  if (port < 1 || port > 65535) return null
  return { host: m[1] ?? m[2], port }
}
