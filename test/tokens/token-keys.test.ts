import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import type { GatewayConfig } from '../../src/config/schema.js'
import type { KeyPath } from '../../src/config/yaml-source.js'
import { loadTokenKeys } from '../../src/tokens/token-keys.js'

// Key loading as plain logic: what is accepted, and that every refusal names
// the config key it is about (the loader turns that into file:line:col).

type Tokens = GatewayConfig['tokens']

function keysDir (): { dir: string, write: (name: string, pem: string) => string } {
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-keys-'))
  return { dir, write: (name, pem) => { writeFileSync(join(dir, name), pem); return name } }
}

const pem = (type: 'ec' | 'rsa' | 'ed25519', options: Record<string, unknown> = {}): { privateKey: string, publicKey: string } =>
  generateKeyPairSync(type as 'ec', { ...options, privateKeyEncoding: { format: 'pem', type: 'pkcs8' }, publicKeyEncoding: { format: 'pem', type: 'spki' } } as never) as unknown as { privateKey: string, publicKey: string }

function load (tokens: Partial<Tokens>, dir: string): { keys: ReturnType<typeof loadTokenKeys>, problems: Array<[string, string]> } {
  const problems: Array<[string, string]> = []
  const keys = loadTokenKeys(tokens as Tokens, dir, (path: KeyPath, message: string) => problems.push([path.join('.'), message]))
  return { keys, problems }
}

t.test('ES256: the first key signs, every key verifies, with a JWK each', async (t) => {
  const { dir, write } = keysDir()
  const a = pem('ec', { namedCurve: 'P-256' })
  const b = pem('ec', { namedCurve: 'P-256' })
  const { keys, problems } = load({ algorithm: 'ES256', keys: [{ kid: 'a', privateKey: write('a.pem', a.privateKey) }, { kid: 'b', publicKey: write('b.pub', b.publicKey) }] }, dir)
  t.same(problems, [])
  t.equal(keys?.signing.kid, 'a')
  t.same(keys?.verifying.map((k) => k.kid), ['a', 'b'])
  t.match(keys?.verifying[1].jwk, { kid: 'b', alg: 'ES256', use: 'sig', kty: 'EC', crv: 'P-256' })
})

t.test('HS256 takes a secret of at least 32 bytes and no keys', async (t) => {
  t.same(load({ algorithm: 'HS256', secret: 'Zq3v9XkP2mW7rT4yB8nD1sF6hJ0cL5aE' }, '.').problems, [])
  t.match(load({ algorithm: 'HS256', secret: 'short' }, '.').problems, [['tokens.secret', /at least 32 bytes/]])
})

t.test('every refusal names its key', async (t) => {
  const { dir, write } = keysDir()
  const ec = pem('ec', { namedCurve: 'P-256' })
  const other = pem('ec', { namedCurve: 'P-256' })
  const p384 = pem('ec', { namedCurve: 'P-384' })
  const rsa = pem('rsa', { modulusLength: 1024 })
  write('ec.pem', ec.privateKey)
  write('other.pub', other.publicKey)
  write('p384.pem', p384.privateKey)
  write('rsa1024.pem', rsa.privateKey)
  write('garbage.pem', 'not a key')
  const cases: Array<{ what: string, tokens: Partial<Tokens>, want: [string, RegExp] }> = [
    { what: 'no keys', tokens: { algorithm: 'ES256', keys: [] }, want: ['tokens.keys', /at least one key/] },
    { what: 'a missing file', tokens: { algorithm: 'ES256', keys: [{ kid: 'a', privateKey: 'nope.pem' }] }, want: ['tokens.keys.0.privateKey', /file not found/] },
    { what: 'not PEM', tokens: { algorithm: 'ES256', keys: [{ kid: 'a', privateKey: 'garbage.pem' }] }, want: ['tokens.keys.0.privateKey', /not a PEM key/] },
    { what: 'the wrong curve', tokens: { algorithm: 'ES256', keys: [{ kid: 'a', privateKey: 'p384.pem' }] }, want: ['tokens.keys.0.privateKey', /EC P-256 key for ES256, got curve/] },
    { what: 'a short RSA key', tokens: { algorithm: 'RS256', keys: [{ kid: 'a', privateKey: 'rsa1024.pem' }] }, want: ['tokens.keys.0.privateKey', /1024 bits/] },
    { what: 'a first key that cannot sign', tokens: { algorithm: 'ES256', keys: [{ kid: 'a', publicKey: 'other.pub' }] }, want: ['tokens.keys.0.privateKey', /required on the first key/] },
    { what: 'a public key of another pair', tokens: { algorithm: 'ES256', keys: [{ kid: 'a', privateKey: 'ec.pem', publicKey: 'other.pub' }] }, want: ['tokens.keys.0.publicKey', /does not match privateKey/] },
    { what: 'a duplicate kid', tokens: { algorithm: 'ES256', keys: [{ kid: 'a', privateKey: 'ec.pem' }, { kid: 'a', publicKey: 'other.pub' }] }, want: ['tokens.keys.1.kid', /duplicates kid "a"/] },
    { what: 'a secret beside keys', tokens: { algorithm: 'ES256', secret: 'x'.repeat(40), keys: [{ kid: 'a', privateKey: 'ec.pem' }] }, want: ['tokens.secret', /HS256 only/] }
  ]
  for (const c of cases) {
    const { keys, problems } = load(c.tokens, dir)
    // A report alone refuses the config (the loader throws on any); most also return no keys.
    if (c.what !== 'a secret beside keys') t.equal(keys, null, `${c.what}: no keys`)
    t.ok(problems.some(([path, message]) => path === c.want[0] && c.want[1].test(message)), `${c.what}: ${c.want[0]} (${JSON.stringify(problems)})`)
  }
})
