import type { Writable } from 'node:stream'
import type { FastifyServerOptions } from 'fastify'

// What may never appear in a log line: credentials in headers, bodies, URLs
// and error objects. pino's redact covers the structured places; URLs are
// rewritten by the request serializer before they are logged.

export const REDACT_PATHS = [
  'req.headers.authorization', 'req.headers.cookie', 'req.headers["proxy-authorization"]',
  'res.headers["set-cookie"]', 'headers.authorization', 'headers.cookie',
  'password', '*.password', 'refresh_token', '*.refresh_token', 'access_token', '*.access_token',
  'token', '*.token', 'err.config', 'err.headers', 'err.request'
]

const SECRET_QUERY = /([?&](?:access_token|refresh_token|id_token|token|password|secret|code|api_key|apikey)=)[^&#]*/gi

export function redactUrl (url: string): string {
  return url.includes('?') ? url.replace(SECRET_QUERY, '$1[REDACTED]') : url
}

/** pino options for the gateway; `stream` sends the lines somewhere else than stdout (tests read them). */
export function loggerOptions (level: string, pretty: boolean, stream?: Writable): NonNullable<FastifyServerOptions['logger']> {
  return {
    level,
    ...(stream === undefined ? {} : { stream }),
    redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    serializers: {
      req (req: { method: string, url: string, ip?: string, socket?: { remoteAddress?: string } }) {
        return { method: req.method, url: redactUrl(req.url), remoteAddress: req.ip ?? req.socket?.remoteAddress }
      }
    },
    ...(pretty ? { transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } } : {})
  }
}
