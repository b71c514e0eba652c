import type { FastifyRequest } from 'fastify'
import type { ForwardFacts } from './identity-headers.js'

// What the gateway tells upstreams about the connection, computed by the
// gateway: a client's own X-Forwarded-* only counts when it came through a
// hop that `server.trustProxy` trusts (Fastify's proxy-addr does the walk).
export function forwardFacts (request: FastifyRequest, trustProxy: boolean): ForwardFacts {
  const socketAddress = request.socket.remoteAddress ?? ''
  const chain = trustProxy && request.ips !== undefined ? [...request.ips].reverse().join(', ') : socketAddress
  return {
    requestId: request.id,
    forwardedFor: chain,
    forwardedProto: request.protocol,
    forwardedHost: request.host
  }
}
