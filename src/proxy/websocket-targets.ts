import { connect as netConnect, type NetConnectOpts, type Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import type { TargetSet, UpstreamTarget } from './upstream-targets.js'

// A proxied WebSocket goes to the target the balancer picks, like any
// request, and its connection attempt feeds the same passive health: a
// target that refuses or resets the upstream side's TCP (or TLS) connection
// counts a failure and is ejected after `ejectAfter` in a row; one that
// connects is healthy. An open socket counts as in flight on its target for
// as long as it lives, so least-request spreads long-lived sockets too.
//
// @fastify/http-proxy opens the upstream side with `ws`, which takes a
// `createConnection` option: that is where the attempt is seen, the target
// found from the host and port `ws` connects to.

/** The close reason a client sees when the upstream side's connection fails. */
export const UPSTREAM_FAILED = 'upstream unavailable'

type ConnectOptions = NetConnectOpts & ConnectionOptions & { host?: string, port?: number | string }

function hostPort (host: string, port: number | string): string {
  return `${host.replace(/^\[|\]$/g, '')}:${String(port)}`
}

/** The target behind each host:port the route's targets listen on. */
function targetsByAddress (targets: TargetSet): ReadonlyMap<string, UpstreamTarget> {
  const out = new Map<string, UpstreamTarget>()
  for (const target of targets.targets) {
    const url = new URL(target.origin)
    out.set(hostPort(url.hostname, url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : url.port), target)
  }
  return out
}

/** `ws`'s createConnection for a route's upstream sides: connects as `ws` would, and tells the target set how it went. */
export function websocketConnector (targets: TargetSet, secure: boolean): (options: ConnectOptions) => Socket {
  const byAddress = targetsByAddress(targets)
  return (options) => {
    let socket: Socket
    if (secure) {
      // as ws's own tlsConnect: SNI unless the host is an address
      socket = tlsConnect({ ...options, path: undefined, servername: options.servername ?? (/^[\d.]+$|:/.test(options.host ?? '') ? '' : options.host) })
    } else {
      socket = netConnect({ ...options, path: undefined } as NetConnectOpts)
    }
    // @fastify/http-proxy closes the client's side with 1011 and the error's
    // message as the reason ("connect ECONNREFUSED 10.0.1.6:3001"): the
    // client is told only that the upstream failed (the code stays for logs).
    socket.on('error', (err) => { err.message = UPSTREAM_FAILED })
    const target = byAddress.get(hostPort(options.host ?? '', options.port ?? (secure ? 443 : 80)))
    if (target === undefined) return socket
    target.observer.request()
    target.inflight++
    let settled = false
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      settled = true
      targets.succeeded(target)
    })
    socket.once('error', () => {
      if (settled) return
      settled = true
      targets.failed(target, performance.now())
    })
    socket.once('close', () => {
      target.inflight--
      // closed before it connected or failed (the link was torn down first): let another try
      if (!settled) targets.released(target)
    })
    return socket
  }
}
