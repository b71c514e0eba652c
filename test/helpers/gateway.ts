import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { stringify } from 'yaml'
import { buildGateway, type BuildOptions } from '../../src/build-gateway.js'
import { loadConfig, type LoadedConfig } from '../../src/config/load-config.js'
import { hashPassword } from '../../src/users/password.js'

// Builds a gateway for a test from a config written to a temp dir, the way
// ops would write one, so every test also goes through the real loader.

export const PASSWORDS = { alice: 'alice-test-password', bob: 'bob-test-password', carol: 'carol-test-password' } as const

export type ConfigOverrides = Record<string, unknown>

let usersYaml: Promise<string> | undefined
function testUsersYaml (): Promise<string> {
  usersYaml ??= (async () => stringify({
    users: [
      { id: 'u-1', username: 'alice', passwordHash: await hashPassword(PASSWORDS.alice), email: 'alice@example.com', name: 'Alice Liddell', roles: ['admin'], scopes: ['orders:read', 'orders:write'] },
      { id: 'u-2', username: 'bob', passwordHash: await hashPassword(PASSWORDS.bob), email: 'bob@example.com', name: 'Bob', roles: ['user'], scopes: ['orders:read'] },
      { id: 'u-3', username: 'carol', passwordHash: await hashPassword(PASSWORDS.carol), roles: [], scopes: [] }
    ]
  }))()
  return usersYaml
}

export function writeEs256Key (dir: string, name = 'es256.pem'): string {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256', privateKeyEncoding: { format: 'pem', type: 'pkcs8' }, publicKeyEncoding: { format: 'pem', type: 'spki' } })
  const file = join(dir, name)
  writeFileSync(file, privateKey)
  return file
}

/** Deep-merges config overrides: objects merge key by key, anything else (arrays included) replaces. */
export function mergeConfig (base: ConfigOverrides, over: ConfigOverrides): ConfigOverrides {
  const out: ConfigOverrides = { ...base }
  for (const [key, value] of Object.entries(over)) {
    const prev = out[key]
    out[key] = isObject(value) && isObject(prev) ? mergeConfig(prev, value) : value
  }
  return out
}

function isObject (v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

/**
 * TOKENGATE_TEST_STORE=redis runs a suite on the Redis store (the shared
 * 127.0.0.1:6379, or TOKENGATE_TEST_REDIS_URL, under a prefix of its own) instead
 * of the embedded one: `npm test` runs the security suite both ways. A test
 * that names its own store or Redis keeps it.
 */
function storeOverride (overrides: ConfigOverrides): ConfigOverrides {
  if (process.env.TOKENGATE_TEST_STORE !== 'redis' || 'redis' in overrides || 'store' in overrides) return {}
  return { redis: { url: process.env.TOKENGATE_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379', keyPrefix: `tgtest:${randomUUID()}:` } }
}

/** Writes config + users + key into a fresh temp dir and returns the config file path. */
export async function writeTestConfig (overrides: ConfigOverrides = {}): Promise<{ file: string, dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'tokengate-test-'))
  writeFileSync(join(dir, 'users.yaml'), await testUsersYaml())
  writeEs256Key(dir, 'signing.pem')
  const base = {
    server: { host: '127.0.0.1', port: 0 },
    tokens: { algorithm: 'ES256', keys: [{ kid: 'test-1', privateKey: './signing.pem' }], accessTtl: '15m', reuseGrace: '2s' },
    auth: { users: { file: './users.yaml' }, cookie: { secure: false } },
    routes: []
  }
  const file = join(dir, 'gateway.config.yaml')
  writeFileSync(file, stringify(mergeConfig(mergeConfig(base, storeOverride(overrides)), overrides)))
  return { file, dir }
}

export async function testConfig (overrides: ConfigOverrides = {}): Promise<LoadedConfig> {
  return loadConfig((await writeTestConfig(overrides)).file, {})
}

export async function startGateway (t: Test, overrides: ConfigOverrides = {}, options: BuildOptions = {}): Promise<{ app: FastifyInstance, loaded: LoadedConfig }> {
  const loaded = await testConfig(overrides)
  const app = await buildGateway(loaded, options)
  t.teardown(() => app.close())
  await app.ready()
  return { app, loaded }
}

/** `count` gateways on one loaded config (one key, one store prefix), as instances behind a load balancer. */
export async function startGateways (t: Test, loaded: LoadedConfig, count: number, options: BuildOptions = {}): Promise<FastifyInstance[]> {
  const apps: FastifyInstance[] = []
  for (let i = 0; i < count; i++) {
    const app = await buildGateway(loaded, options)
    t.teardown(() => app.close())
    await app.ready()
    apps.push(app)
  }
  return apps
}

export async function login (app: FastifyInstance, username: keyof typeof PASSWORDS, extra: Record<string, unknown> = { transport: 'body' }): Promise<{ access_token: string, refresh_token?: string, expires_in: number }> {
  const res = await app.inject({ method: 'POST', url: '/auth/login', payload: { username, password: PASSWORDS[username], ...extra } })
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`)
  return res.json()
}
