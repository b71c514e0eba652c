import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

// A client may bring its own request id so a trace spans its logs and ours,
// but only a short one of safe characters: it is logged and sent upstream.
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export function requestIdFor (req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && CLIENT_REQUEST_ID.test(given) ? given : randomUUID()
}
