import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'

// SECURITY.md names, for each guarantee, the test that proves it: a name that
// points at nothing (a file moved or renamed) would leave the claim unproven.

const ROOT = join(__dirname, '..')

t.test('every test file SECURITY.md names exists', async (t) => {
  const text = readFileSync(join(ROOT, 'SECURITY.md'), 'utf8').replace(/\s*\n\s*/g, ' ')
  const named = [...new Set([...text.matchAll(/\b([a-z-]+\/[a-z0-9-]+\.test\.ts)\b/g)].map((m) => m[1]))]
  t.ok(named.length >= 20, `SECURITY.md names its tests (${named.length})`)
  for (const file of named) t.ok(existsSync(join(ROOT, 'test', file)), `test/${file} exists`)
})
