import { readFileSync, writeFileSync } from 'node:fs'
import t from 'tap'
import { parse, stringify } from 'yaml'
import { checkConfig } from '../../src/config/load-config.js'
import { writeTestConfig } from '../helpers/gateway.js'

// A wrong auth.users or auth.clients refuses to start, naming file:line:col and key.

async function issuesFor (edit: (auth: Record<string, unknown>) => void): Promise<string[]> {
  const { file } = await writeTestConfig()
  const doc = parse(readFileSync(file, 'utf8')) as { auth: Record<string, unknown> }
  edit(doc.auth)
  writeFileSync(file, stringify(doc))
  const { loaded, issues } = checkConfig(file, {})
  t.equal(loaded, null)
  return issues.map((i) => `${i.line}:${i.col} ${i.path} ${i.message}`)
}

t.test('a misspelt postgres key and a missing query are each named at their line', async (t) => {
  const issues = await issuesFor((auth) => { auth.users = { postgres: { url: 'postgres://127.0.0.1/test', querry: 'SELECT 1' } } })
  t.match(issues, [/^\d+:\d+ auth\.users\.postgres\.query is required/, /^\d+:\d+ auth\.users\.postgres\.querry is not a known key/])
})

t.test('file and postgres together, or neither, is refused', async (t) => {
  const both = await issuesFor((auth) => { auth.users = { file: './users.yaml', postgres: { url: 'postgres://127.0.0.1/test', query: 'SELECT 1' } } })
  t.match(both.join('\n'), /auth\.users must have exactly one of file or postgres/)
  const neither = await issuesFor((auth) => { auth.users = {} })
  t.match(neither.join('\n'), /auth\.users must have exactly one of file or postgres/)
})

t.test('clients: duplicate ids, a secret that is not an argon2id hash, a lifetime longer than tokens.accessTtl', async (t) => {
  const issues = await issuesFor((auth) => {
    auth.clients = [
      { id: 'svc', secretHash: '$argon2id$v=19$m=19456,t=2,p=1$x$y', scopes: [], accessTtl: '1h' },
      { id: 'svc', secretHash: '$argon2id$v=19$m=19456,t=2,p=1$x$y', scopes: [] }
    ]
  })
  t.match(issues.join('\n'), /auth\.clients\[1\]\.id duplicates auth\.clients\[0\]\.id "svc"/)
  t.match(issues.join('\n'), /auth\.clients\[0\]\.accessTtl must not be longer than tokens\.accessTtl/)
  const plain = await issuesFor((auth) => { auth.clients = [{ id: 'svc', secretHash: 'hunter2', scopes: [] }] })
  t.match(plain.join('\n'), /auth\.clients\[0\]\.secretHash must be an argon2id hash/)
})

t.test('a client may not share its id with a user of the users file', async (t) => {
  const issues = await issuesFor((auth) => { auth.clients = [{ id: 'u-1', secretHash: '$argon2id$v=19$m=19456,t=2,p=1$x$y', scopes: [] }] })
  t.match(issues.join('\n'), /auth\.clients\[0\]\.id is also the id of a user/)
})
