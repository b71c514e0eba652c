import { setTimeout as sleep } from 'node:timers/promises'

/**
 * Polls until `check` holds, for effects that cross a connection or a
 * process (pub/sub, reconnects, an upstream seeing a request). A check that
 * throws counts as "not yet". Gives up, naming `what`, after `attempts`.
 */
export async function waitFor (what: string, check: () => boolean | Promise<boolean>, attempts = 200, intervalMs = 25): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    try {
      if (await check()) return
    } catch {
      // not yet
    }
    await sleep(intervalMs)
  }
  throw new Error(`gave up waiting for: ${what}`)
}
