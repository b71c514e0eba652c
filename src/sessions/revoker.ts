import type { DenylistMirror } from './denylist-mirror.js'
import { StoreUnconfirmedError, UnconfirmedWrites, type DenyEntry, type SessionInfo, type SessionStore } from './session-store.js'

// Ending sessions and revoking access tokens, the same way from every entry
// point (logout, session list, reuse, admin). A denylist entry lives as long
// as the newest access token it can match: at most accessTtl + clock skew.
// The revocation is written first and the sessions ended after: on Redis
// Cluster the denylist and a session live in different slots, so they cannot
// change in one script, and a failure between the two must leave a revoked
// session behind, never an ended one whose access tokens still work.
export class Revoker {
  private readonly store: SessionStore
  private readonly mirror: DenylistMirror
  /** How long a denylist entry must live: an access token verifies until exp + clock skew. */
  readonly horizonMs: number

  constructor (store: SessionStore, mirror: DenylistMirror, accessTtlMs: number, clockSkewMs: number) {
    this.store = store
    this.mirror = mirror
    this.horizonMs = accessTtlMs + clockSkewMs
  }

  /** Ends one session and denies its access tokens. Returns it, or null if it was not live. */
  async endSession (sid: string, now = Date.now()): Promise<SessionInfo | null> {
    // A revocation the replicas were slow to confirm is in force on the
    // primary: the session is ended all the same, then the client hears 503.
    const writes = new UnconfirmedWrites()
    await writes.run(() => this.deny({ kind: 'sid', value: sid, expiresAt: now + this.horizonMs }))
    const ended = await writes.run(() => this.store.endSession(sid))
    writes.settle()
    return ended ?? null
  }

  /** Ends every session of a user and denies every access token issued before now. */
  async endUser (sub: string, now = Date.now()): Promise<string[]> {
    // `before` has one-second resolution (iat); the sid entries cover tokens
    // issued earlier in this same second, so a login right after still works.
    const entries = await this.store.endUser(sub, Math.floor(now / 1000), now + this.horizonMs)
    const sids: string[] = []
    for (const entry of entries) {
      this.mirror.apply(entry)
      if (entry.kind === 'sid') sids.push(entry.value)
    }
    return sids
  }

  async revokeJti (jti: string, now = Date.now()): Promise<void> {
    await this.deny({ kind: 'jti', value: jti, expiresAt: now + this.horizonMs })
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
