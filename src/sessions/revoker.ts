import type { GatewayConfig } from '../config/schema.js'
import { maxTokenLifetimeMs } from '../tokens/trusted-issuers.js'
import type { DenylistMirror } from './denylist-mirror.js'
import { StoreUnconfirmedError, UnconfirmedWrites, type DenyEntry, type SessionInfo, type SessionStore } from './session-store.js'

// Ending sessions and revoking access tokens, the same way from every entry
// point (logout, session list, reuse, admin). A denylist entry lives as long
// as the newest access token it can match (see DenyHorizons).
// The revocation is written first and the sessions ended after: on Redis
// Cluster the denylist and a session live in different slots, so they cannot
// change in one script, and a failure between the two must leave a revoked
// session behind, never an ended one whose access tokens still work.

/** How long denylist entries must live, by what they can match. */
export interface DenyHorizons {
  /**
   * A sid matches our own tokens only (outside tokens have none), which
   * verify until exp + skew and live at most tokens.accessTtl (a machine
   * client's accessTtl may not be longer).
   */
  sessionMs: number
  /**
   * A sub or jti also matches a trusted issuer's tokens, which live up to
   * that issuer's maxTokenLifetime: the longest lifetime of any token we
   * accept, plus the skew twice, once for exp's tolerance and once for an
   * iat up to the skew ahead of our clock (TrustedIssuer.checkLifetime).
   */
  tokenMs: number
}

export function denyHorizons (tokens: GatewayConfig['tokens'], parse: (d: string) => number): DenyHorizons {
  const accessTtlMs = parse(tokens.accessTtl)
  const skewMs = parse(tokens.clockSkew)
  const longest = Math.max(accessTtlMs, ...tokens.trustedIssuers.map((i) => maxTokenLifetimeMs(i, parse)))
  return { sessionMs: accessTtlMs + skewMs, tokenMs: tokens.trustedIssuers.length === 0 ? accessTtlMs + skewMs : longest + 2 * skewMs }
}

export class Revoker {
  private readonly store: SessionStore
  private readonly mirror: DenylistMirror
  readonly horizons: DenyHorizons

  constructor (store: SessionStore, mirror: DenylistMirror, horizons: DenyHorizons) {
    this.store = store
    this.mirror = mirror
    this.horizons = horizons
  }

  /** Ends one session and denies its access tokens. Returns it, or null if it was not live. */
  async endSession (sid: string, now = Date.now()): Promise<SessionInfo | null> {
    // '' is the sid of every outside issuer's token: it names no session.
    if (sid === '') return null
    // A revocation the replicas were slow to confirm is in force on the
    // primary: the session is ended all the same, then the client hears 503.
    const writes = new UnconfirmedWrites()
    await writes.run(() => this.deny({ kind: 'sid', value: sid, expiresAt: now + this.horizons.sessionMs }))
    const ended = await writes.run(() => this.store.endSession(sid))
    writes.settle()
    return ended ?? null
  }

  /** Ends every session of a user and denies every access token issued before now. */
  async endUser (sub: string, now = Date.now()): Promise<string[]> {
    // `before` has one-second resolution (iat); the sid entries cover tokens
    // issued earlier in this same second, so a login right after still works.
    // One expiry for all: the sub entry needs the token horizon, and the sid
    // entries merely outlive their tokens by the difference.
    const before = Math.floor(now / 1000)
    const expiresAt = now + this.horizons.tokenMs
    let entries: DenyEntry[]
    try {
      entries = await this.store.endUser(sub, before, expiresAt)
    } catch (err) {
      // written but not confirmed: in force all the same, here at once too
      // (the sid entries, for tokens of this very second, come by the feed)
      if (err instanceof StoreUnconfirmedError) this.mirror.apply({ kind: 'sub', value: sub, before, expiresAt })
      throw err
    }
    const sids: string[] = []
    for (const entry of entries) {
      this.mirror.apply(entry)
      if (entry.kind === 'sid') sids.push(entry.value)
    }
    return sids
  }

  /** A token without a jti ('', as an outside issuer's may be) cannot be revoked alone: nothing is written. */
  async revokeJti (jti: string, now = Date.now()): Promise<void> {
    if (jti === '') return
    await this.deny({ kind: 'jti', value: jti, expiresAt: now + this.horizons.tokenMs })
  }

  /** Applied to this instance's mirror at once, so the next request here already sees it. */
  private async deny (entry: DenyEntry): Promise<void> {
    try {
      await this.store.revoke(entry)
    } catch (err) {
      // written but not confirmed: in force all the same, here too
      if (err instanceof StoreUnconfirmedError) this.mirror.apply(entry)
      throw err
    }
    this.mirror.apply(entry)
  }
}
