import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { errorBody } from './error-response.js'
import { ERR_SHUTTING_DOWN } from './errors.js'
import { httpServerOptions, type ServerLimits } from './ops/server-limits.js'

// One listening HTTP server in front of one gateway at a time. A hot reload
// builds a new gateway beside the running one and swaps it in: connections
// stay open, every request that arrives from then on goes to the new
// gateway, and the old one is closed once the requests it was answering are
// done (or the grace is over). The gateways themselves never listen.

interface Generation {
  app: FastifyInstance
  active: number
  onIdle: (() => void) | null
}

function generation (app: FastifyInstance): Generation {
  return { app, active: 0, onIdle: null }
}

/** Resolves once `gen` answers nothing, or after `graceMs`; true when it drained. */
function drained (gen: Generation, graceMs: number): Promise<boolean> {
  if (gen.active === 0) return Promise.resolve(true)
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      gen.onIdle = null
      resolve(false)
    }, graceMs)
    gen.onIdle = () => {
      clearTimeout(timer)
      resolve(true)
    }
  })
}

export class GatewayHost {
  readonly server: Server
  #current: Generation
  #closing = false
  /** gateways swapped out and still finishing their requests */
  readonly #retiring = new Set<Promise<boolean>>()

  constructor (app: FastifyInstance, limits: ServerLimits) {
    this.#current = generation(app)
    this.server = createServer(httpServerOptions(limits), (req, res) => { this.#dispatch(req, res) })
    // Fastify answers malformed requests (400, 431, 408) on its own server's clientError.
    this.server.on('clientError', (err: Error, socket: Duplex) => {
      this.#current.app.server.emit('clientError', err, socket)
    })
    this.#routeUpgrades()
  }

  get app (): FastifyInstance {
    return this.#current.app
  }

  /** Requests the current gateway is answering now. */
  get inFlight (): number {
    return this.#current.active
  }

  /** `reusePort`: every worker binds its own socket on the port and the kernel spreads connections (Linux). */
  listen (host: string, port: number, reusePort = false): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({ port, host, ...(reusePort ? { reusePort } : {}) }, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
  }

  /** Timeouts a reload may change; the header size limit needs a restart. */
  applyLimits (limits: ServerLimits): void {
    this.server.requestTimeout = limits.requestTimeout
    this.server.headersTimeout = limits.headersTimeout
    this.server.keepAliveTimeout = limits.keepAliveTimeout
  }

  /**
   * Sends every request from now on to `next`, at once. The gateway it
   * replaces is closed once its requests are done (or `graceMs` has passed);
   * the returned promise says when, and whether it drained in time.
   */
  swap (next: FastifyInstance, graceMs: number): Promise<boolean> {
    const previous = this.#current
    this.#current = generation(next)
    this.#routeUpgrades()
    const retired = drained(previous, graceMs).then(async (done) => {
      await previous.app.close()
      return done
    })
    this.#retiring.add(retired)
    void retired.finally(() => this.#retiring.delete(retired))
    return retired
  }

  /**
   * Stops accepting connections, answers 503 to requests that still arrive on
   * open ones, lets those in flight finish within `graceMs`, then closes the gateway.
   */
  async close (graceMs: number): Promise<boolean> {
    this.#closing = true
    this.server.close()
    this.server.closeIdleConnections()
    const done = await drained(this.#current, graceMs)
    const retired = await Promise.all(this.#retiring)
    this.server.closeAllConnections()
    await this.#current.app.close()
    return done && retired.every(Boolean)
  }

  #dispatch (req: IncomingMessage, res: ServerResponse): void {
    if (this.#closing) {
      const body = errorBody(new ERR_SHUTTING_DOWN())
      res.writeHead(503, { 'content-type': 'application/json; charset=utf-8', connection: 'close', 'retry-after': '1' })
      res.end(JSON.stringify(body))
      return
    }
    const gen = this.#current
    gen.active++
    res.once('close', () => {
      gen.active--
      if (gen.active === 0) gen.onIdle?.()
    })
    gen.app.routing(req, res)
  }

  readonly #onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    this.#current.app.server.emit('upgrade', req, socket, head)
  }

  /**
   * Node treats an upgrade request as a plain request when the server has no
   * 'upgrade' listener; keep it that way for a gateway without WebSocket routes.
   */
  #routeUpgrades (): void {
    this.server.off('upgrade', this.#onUpgrade)
    if (this.#current.app.server.listenerCount('upgrade') > 0) this.server.on('upgrade', this.#onUpgrade)
  }
}
