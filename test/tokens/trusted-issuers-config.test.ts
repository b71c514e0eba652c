import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { checkConfig } from '../../src/config/load-config.js'
import { formatIssue } from '../../src/config/yaml-source.js'
import { writeTestConfig } from '../helpers/gateway.js'

// A trusted issuer without a key source, or a route naming an issuer nobody
// configured, refuses to start naming file:line:col and the key.

t.test('trusted-issuer config mistakes are refused with their position', async (t) => {
  const { dir } = await writeTestConfig()
  const file = join(dir, 'issuers.yaml')
  writeFileSync(file, [
    'tokens:',
    '  algorithm: ES256',
    '  keys: [{ kid: k, privateKey: ./signing.pem }]',
    '  trustedIssuers:',
    '    - { issuer: "https://idp.example", audience: api, algorithms: [RS256] }',
    'auth: { users: { file: ./users.yaml } }',
    'routes:',
    '  - { prefix: /a, upstream: "http://127.0.0.1:1", issuers: [tokengate, "https://nobody.example"] }',
    ''
  ].join('\n'))
  const issues = checkConfig(file, {}).issues.map(formatIssue).join('\n')
  t.match(issues, new RegExp(`${file}:5:\\d+ tokens\\.trustedIssuers\\[0\\] needs exactly one of jwksUri or discovery: true`))
  t.match(issues, new RegExp(`${file}:8:\\d+ routes\\[0\\]\\.issuers\\[1\\] "https://nobody.example" is neither`))
  t.notMatch(issues, /issuers\[0\]/, 'our own issuer is always known')
})

t.test('a maxTokenLifetime under a second, and a trusted issuer named like our own, are refused with their position', async (t) => {
  const { dir } = await writeTestConfig()
  const file = join(dir, 'lifetime.yaml')
  writeFileSync(file, [
    'tokens:',
    '  algorithm: ES256',
    '  keys: [{ kid: k, privateKey: ./signing.pem }]',
    '  trustedIssuers:',
    '    - { issuer: "https://idp.example", discovery: true, audience: api, algorithms: [RS256], maxTokenLifetime: 0s }',
    '    - { issuer: tokengate, discovery: true, audience: api, algorithms: [RS256] }',
    'auth: { users: { file: ./users.yaml } }',
    ''
  ].join('\n'))
  const issues = checkConfig(file, {}).issues.map(formatIssue).join('\n')
  t.match(issues, new RegExp(`${file}:5:\\d+ tokens\\.trustedIssuers\\[0\\]\\.maxTokenLifetime must be at least 1s`))
  t.match(issues, new RegExp(`${file}:6:\\d+ tokens\\.trustedIssuers\\[1\\]\\.issuer is the gateway's own tokens\\.issuer`))
})
