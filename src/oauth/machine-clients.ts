import type { GatewayConfig } from '../config/schema.js'
import { dummyPasswordHash, MAX_PASSWORD_BYTES, verifyPassword } from '../users/password.js'

// Machine clients (`auth.clients`) and how a request proves it is one:
// HTTP Basic (client_secret_basic) or form fields (client_secret_post),
// RFC 6749 §2.3.1. Never both at once (§2.3: one method per request).

export type ClientConfig = GatewayConfig['auth']['clients'][number]

export interface PresentedClient {
  id: string
  secret: string
  method: 'client_secret_basic' | 'client_secret_post'
}

/** Why credentials could not even be read; the route answers invalid_request. */
export class MalformedClientCredentials extends Error {}

/** Basic credentials are form-urlencoded before base64 (RFC 6749 §2.3.1). */
function decodeFormComponent (text: string): string {
  return decodeURIComponent(text.replace(/\+/g, ' '))
}

export function presentedClient (authorization: string | undefined, body: Record<string, unknown>): PresentedClient | null {
  const postId = body.client_id
  const postSecret = body.client_secret
  if (authorization !== undefined && /^basic /i.test(authorization)) {
    if (postSecret !== undefined) throw new MalformedClientCredentials('client credentials both in Authorization and in the body')
    const decoded = Buffer.from(authorization.slice(6).trim(), 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon === -1) throw new MalformedClientCredentials('Basic credentials without ":"')
    try {
      return { id: decodeFormComponent(decoded.slice(0, colon)), secret: decodeFormComponent(decoded.slice(colon + 1)), method: 'client_secret_basic' }
    } catch {
      throw new MalformedClientCredentials('Basic credentials are not form-urlencoded')
    }
  }
  if (postId === undefined && postSecret === undefined) return null
  if (typeof postId !== 'string' || typeof postSecret !== 'string') throw new MalformedClientCredentials('client_id and client_secret must each be given once')
  return { id: postId, secret: postSecret, method: 'client_secret_post' }
}

export class MachineClients {
  readonly #byId: ReadonlyMap<string, ClientConfig>

  constructor (clients: readonly ClientConfig[]) {
    this.#byId = new Map(clients.map((c) => [c.id, c]))
  }

  get size (): number {
    return this.#byId.size
  }

  /** The client when the secret is its own; null otherwise, after the same hashing work for an unknown id. */
  async authenticate (presented: PresentedClient): Promise<ClientConfig | null> {
    const client = this.#byId.get(presented.id)
    if (Buffer.byteLength(presented.secret, 'utf8') > MAX_PASSWORD_BYTES) return null
    const ok = await verifyPassword(client?.secretHash ?? await dummyPasswordHash(), presented.secret)
    return client !== undefined && ok ? client : null
  }
}

/**
 * The scopes a token gets: all of the client's when none are asked for, else
 * exactly those asked for; null when one asked for is not the client's.
 */
export function grantedScopes (client: ClientConfig, requested: string | undefined): string[] | null {
  if (requested === undefined || requested.trim() === '') return [...client.scopes]
  const asked = [...new Set(requested.split(' ').filter((s) => s !== ''))]
  return asked.every((s) => client.scopes.includes(s)) ? asked : null
}
