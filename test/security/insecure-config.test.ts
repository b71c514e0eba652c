import { generateKeyPairSync } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { checkConfig } from '../../src/config/load-config.js'
import { formatIssue } from '../../src/config/yaml-source.js'
import { writeTestConfig } from '../helpers/gateway.js'

// Configurations that would make tokens forgeable are refused at start,
// naming the line, rather than run weakly.

async function issuesFor (tokensYaml: string): Promise<string> {
  const { dir } = await writeTestConfig()
  const file = join(dir, 'insecure.yaml')
  writeFileSync(file, `${tokensYaml}\nauth: { users: { file: ./users.yaml } }\n`)
  return checkConfig(file, {}).issues.map(formatIssue).join('\n')
}

t.test('insecure config: a long but guessable HS256 secret is refused with how to make a good one', async (t) => {
  for (const weak of ['a'.repeat(40), 'abcabcabcabcabcabcabcabcabcabcabcabc', 'my-super-secret-jwt-signing-key-12345678', 'your-256-bit-secret-your-256-bit-secret']) {
    const issues = await issuesFor(`tokens:\n  algorithm: HS256\n  secret: "${weak}"`)
    t.match(issues, /insecure\.yaml:3:11 tokens\.secret .*openssl rand -base64 32/, weak)
  }
  // A generated 256-bit value (openssl rand -base64 32 / -hex 32) passes.
  for (const good of ['q3Zr8vK2mX9pL4tW7nB1cF6hJ0sD5gY8aE2uR4iO9kM=', '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08']) {
    t.equal(await issuesFor(`tokens: { algorithm: HS256, secret: "${good}" }`), '', good)
  }
})

t.test('insecure config: an HS256 secret shorter than 32 bytes', async (t) => {
  t.match(await issuesFor('tokens: { algorithm: HS256, secret: "0123456789abcdef0123456789abcde" }'), 'tokens.secret must be at least 32 bytes for HS256 (got 31)')
})

t.test('insecure config: no algorithm', async (t) => {
  t.match(await issuesFor('tokens: { secret: "0123456789abcdef0123456789abcdef" }'), 'tokens.algorithm is required')
})

t.test('insecure config: algorithm none or an unknown one', async (t) => {
  t.match(await issuesFor('tokens: { algorithm: none }'), 'tokens.algorithm must be one of HS256, RS256, ES256, EdDSA')
})

t.test('insecure config: an RSA key too short for RS256', async (t) => {
  const { dir } = await writeTestConfig()
  writeFileSync(join(dir, 'rsa1024.pem'), generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }))
  const file = join(dir, 'rsa.yaml')
  writeFileSync(file, 'tokens:\n  algorithm: RS256\n  keys: [{ kid: r, privateKey: ./rsa1024.pem }]\nauth: { users: { file: ./users.yaml } }\n')
  t.match(checkConfig(file, {}).issues.map(formatIssue).join('\n'), 'must be an RSA key of at least 2048 bits for RS256, got 1024 bits')
})

t.test('insecure config: a key of the wrong type for the algorithm', async (t) => {
  t.match(await issuesFor('tokens:\n  algorithm: EdDSA\n  keys: [{ kid: e, privateKey: ./signing.pem }]'), 'must be an Ed25519 key for EdDSA, got a ec key')
})

t.test('insecure config: an HS256 secret beside asymmetric keys', async (t) => {
  t.match(await issuesFor('tokens:\n  algorithm: ES256\n  secret: "0123456789abcdef0123456789abcdef"\n  keys: [{ kid: e, privateKey: ./signing.pem }]'), 'tokens.secret is for HS256 only')
})

t.test('insecure config: a signed identity assertion with HS256 is refused (upstreams would need the token secret)', async (t) => {
  const hs = 'tokens: { algorithm: HS256, secret: "q3Zr8vK2mX9pL4tW7nB1cF6hJ0sD5gY8aE2uR4iO9kM=" }'
  t.match(await issuesFor(`${hs}\nidentity:\n  assertion: { ttl: 60s }`), /insecure\.yaml:3:14 identity\.assertion needs an asymmetric tokens\.algorithm/)
  t.match(await issuesFor(`${hs}\nroutes:\n  - prefix: /api\n    upstream: http://127.0.0.1:1\n    assertion: true`), /insecure\.yaml:5:16 routes\[0\]\.assertion needs an asymmetric tokens\.algorithm/)
  t.match(await issuesFor(`${hs}\nroutes:\n  - { prefix: /api, upstream: "http://127.0.0.1:1", auth: none, assertion: true }`), /routes\[0\]\.assertion is on, but the route has auth: none/)
})
