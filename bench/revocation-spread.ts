import { request } from 'node:http'
import { performance } from 'node:perf_hooks'

// How long after a revocation is answered every worker refuses the token:
// with server.workers on the embedded store, the worker that wrote it
// refuses at once and the others once they see the file change. Workers
// cannot be addressed one by one (they share the port), so every probe
// goes on a new connection, which the kernel hands to a worker of its
// choosing, and the spread is over when RUN probes in a row were refused:
// the chance that RUN connections in a row all missed one of two workers is
// 2 × 2^-RUN. The time reported is when the first probe of that run was
// sent: an upper bound on when the last worker began refusing.

const RUN = 16
/** A try that takes longer than this is reported as failed, not waited on. */
const GIVE_UP_MS = 5_000

function status (url: string, method: string, headers: Record<string, string>, body?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false, headers: { connection: 'close', ...headers } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end(body)
  })
}

export interface SpreadResult {
  /** ms from the revocation's answer to the first probe of the refused run, one per try */
  ms: number[]
  /** tries that did not end within GIVE_UP_MS, or whose token was not served before */
  failed: number
}

/**
 * `tries` times: a fresh token is served, revoked by jti through
 * POST /admin/revoke, then probed until every worker refuses it.
 */
export async function revocationSpread (base: string, path: string, adminToken: string, victim: () => { token: string, jti: string }, tries: number): Promise<SpreadResult> {
  const ms: number[] = []
  let failed = 0
  for (let i = 0; i < tries; i++) {
    const { token, jti } = victim()
    const bearer = { authorization: `Bearer ${token}` }
    if (await status(`${base}${path}`, 'GET', bearer) !== 200) {
      failed++
      continue
    }
    const revoked = await status(`${base}/admin/revoke`, 'POST', { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, JSON.stringify({ jti }))
    const answered = performance.now()
    if (revoked !== 200) {
      failed++
      continue
    }
    let refusedInRow = 0
    let runStart = 0
    for (;;) {
      const sent = performance.now()
      if (sent - answered > GIVE_UP_MS) {
        failed++
        break
      }
      if (await status(`${base}${path}`, 'GET', bearer) === 401) {
        if (refusedInRow === 0) runStart = sent
        if (++refusedInRow === RUN) {
          ms.push(runStart - answered)
          break
        }
      } else {
        refusedInRow = 0
      }
    }
  }
  return { ms, failed }
}
