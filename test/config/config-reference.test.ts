import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { configReferenceTable, withConfigReference } from '../../src/config/config-reference.js'

// The README's config reference is generated from the schema; this fails when
// someone changes the schema without running `npm run docs:config`.

t.test('the README config reference is the one the schema generates', async (t) => {
  const readme = readFileSync(join(__dirname, '..', '..', 'README.md'), 'utf8')
  t.equal(withConfigReference(readme), readme, 'run `npm run docs:config`')
  const table = configReferenceTable()
  for (const key of ['server.port', 'tokens.keys[].kid', 'routes[].prefix', 'routes[].rateLimit.max', 'auth.loginRateLimit.timeWindow', 'metrics.allow']) {
    t.match(table, `| \`${key}\` |`, key)
  }
})
