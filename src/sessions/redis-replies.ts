import { StoreUnavailableError, type DenyEntry, type RotateOutcome, type SessionInfo } from './session-store.js'

// What the store's scripts answer, checked: a reply of the wrong shape is a
// store failure (503), never a crash or a session made of undefined.

/** Redis wants integer milliseconds. */
export function ms (n: number): number {
  return Math.trunc(n)
}

export function parseReply<T> (what: string, reply: unknown, parse: (v: unknown) => T): T {
  try {
    return parse(reply)
  } catch (err) {
    throw new StoreUnavailableError(`Redis ${what} answered something unexpected`, { cause: err })
  }
}

export function asArray (v: unknown): unknown[] {
  if (!Array.isArray(v)) throw new TypeError('expected an array')
  return v
}

export function asString (v: unknown): string {
  if (typeof v !== 'string') throw new TypeError('expected a string')
  return v
}

export function asTime (v: unknown): number {
  const n = Number(asString(v))
  if (!Number.isSafeInteger(n)) throw new TypeError('expected an integer')
  return n
}

export function parseSessionRow (v: unknown): SessionInfo {
  const [sid, sub, createdAt, lastUsedAt, expiresAt, userAgent, address] = asArray(v)
  return {
    sid: asString(sid),
    sub: asString(sub),
    createdAt: asTime(createdAt),
    lastUsedAt: asTime(lastUsedAt),
    expiresAt: asTime(expiresAt),
    userAgent: asString(userAgent),
    address: asString(address)
  }
}

export function parseRotateReply (v: unknown): RotateOutcome {
  const reply = asArray(v)
  switch (reply[0]) {
    case 'rotated': return { kind: 'rotated', session: parseSessionRow(reply[1]) }
    case 'grace': return { kind: 'grace', session: parseSessionRow(reply[1]), sealedCurrent: asString(reply[2]) }
    case 'reuse': return { kind: 'reuse', sid: asString(reply[1]), sub: asString(reply[2]) }
    case 'invalid': return { kind: 'invalid' }
    default: throw new TypeError('unknown rotate outcome')
  }
}

/** The JSON the scripts publish and return: numbers as integer strings. */
export function parseDenyMessage (text: string): DenyEntry | null {
  let v: unknown
  try {
    v = JSON.parse(text)
  } catch {
    return null
  }
  if (typeof v !== 'object' || v === null) return null
  const { kind, value, expiresAt, before } = v as Record<string, unknown>
  if (typeof value !== 'string' || typeof expiresAt !== 'string') return null
  const expires = Number(expiresAt)
  if (!Number.isSafeInteger(expires)) return null
  if (kind === 'jti' || kind === 'sid') return { kind, value, expiresAt: expires }
  if (kind !== 'sub' || typeof before !== 'string') return null
  const revokedBefore = Number(before)
  return Number.isSafeInteger(revokedBefore) ? { kind, value, before: revokedBefore, expiresAt: expires } : null
}
