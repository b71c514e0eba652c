import { once } from 'node:events'
import { connect, createServer, type Socket } from 'node:net'
import type { Test } from 'tap'

// A silent partition, which a cut (startNetworkLink in lifecycle.ts) is not:
// frozen, the proxy forwards nothing in either direction and closes nothing
// (no FIN, no RST), new connections are accepted and then hear nothing. The
// peers' sockets stay open, as they do when a switch drops packets. Thawed,
// it delivers what it held, in order, and carries on.

export interface FreezableProxy {
  /** redis:// URL that goes through the proxy */
  url: string
  port: number
  /** stops forwarding without closing anything */
  freeze (): void
  /** forwards what was held, then everything again */
  thaw (): void
}

interface Pipe {
  from: Socket
  to: Socket
  held: Buffer[]
}

/** A proxy to `target`, closed on teardown. */
export async function startFreezableProxy (t: Test, target: { host: string, port: number }): Promise<FreezableProxy> {
  let frozen = false
  const pipes = new Set<Pipe>()
  const sockets = new Set<Socket>()

  const relay = (from: Socket, to: Socket): void => {
    const pipe: Pipe = { from, to, held: [] }
    pipes.add(pipe)
    from.on('data', (chunk: Buffer) => {
      if (frozen) pipe.held.push(chunk)
      else to.write(chunk)
    })
    from.on('close', () => {
      // A close seen while frozen is not passed on either: the other side
      // finds out when the partition heals (or from its own timeouts).
      const pass = (): void => {
        pipes.delete(pipe)
        to.end()
      }
      if (frozen) deferred.push(pass)
      else pass()
    })
  }
  const deferred: Array<() => void> = []

  const server = createServer((client) => {
    const upstream = connect(target.port, target.host)
    for (const sock of [client, upstream]) {
      sockets.add(sock)
      sock.on('close', () => sockets.delete(sock))
      sock.on('error', () => { sock.destroy() })
    }
    relay(client, upstream)
    relay(upstream, client)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')

  t.teardown(async () => {
    for (const sock of sockets) sock.destroy()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })

  return {
    url: `redis://127.0.0.1:${address.port}`,
    port: address.port,
    freeze: () => { frozen = true },
    thaw: () => {
      frozen = false
      for (const pipe of pipes) {
        for (const chunk of pipe.held) if (!pipe.to.destroyed) pipe.to.write(chunk)
        pipe.held = []
      }
      for (const pass of deferred.splice(0)) pass()
    }
  }
}
