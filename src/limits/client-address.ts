import { normalizeIP } from '@fastify/rate-limit'
import type { FastifyRequest } from 'fastify'

/** IPv6 clients usually hold a whole /64: one budget per /64, not per address. */
export const IPV6_SUBNET = 64
/** The client address a budget is keyed by: request.ip honours server.trustProxy, so a client cannot pick it. */
export function clientAddress (request: FastifyRequest): string {
  return normalizeIP(request.ip, IPV6_SUBNET)
}
