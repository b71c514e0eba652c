import { randomBytes, scryptSync } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer, connect, type Server, type Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import pg from 'pg'
import { parse, stringify } from 'yaml'
import { buildGateway, type BuildOptions } from '../../src/build-gateway.js'
import { loadConfig } from '../../src/config/load-config.js'
import { writeTestConfig, type ConfigOverrides } from './gateway.js'

// The shared PostgreSQL these machines run (127.0.0.1:5432, trust auth,
// database test), one schema per test, dropped in teardown; and a TCP hop
// between the gateway and it that a test can cut and mend.

export const PG_URL = process.env.TOKENGATE_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

export interface TestSchema {
  name: string
  client: pg.Client
}

/** A fresh schema with a `users` table of the contract's columns. */
export async function usersSchema (t: Test): Promise<TestSchema> {
  const name = `tg_test_${randomBytes(6).toString('hex')}`
  const client = new pg.Client({ connectionString: PG_URL })
  await client.connect()
  t.teardown(async () => {
    await client.query(`DROP SCHEMA IF EXISTS ${name} CASCADE`)
    await client.end()
  })
  await client.query(`CREATE SCHEMA ${name}`)
  await client.query(`CREATE TABLE ${name}.users (
    id text PRIMARY KEY, username text UNIQUE NOT NULL, password_hash text NOT NULL,
    roles text[] NOT NULL DEFAULT '{}', scopes text[] NOT NULL DEFAULT '{}',
    email text, name text, disabled boolean NOT NULL DEFAULT false)`)
  return { name, client }
}

export async function addUser (schema: TestSchema, user: { id: string, username: string, hash: string, roles?: string[], scopes?: string[], email?: string, disabled?: boolean }): Promise<void> {
  await schema.client.query(`INSERT INTO ${schema.name}.users (id, username, password_hash, roles, scopes, email, disabled) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [user.id, user.username, user.hash, user.roles ?? [], user.scopes ?? [], user.email ?? null, user.disabled ?? false])
}

export async function storedHash (schema: TestSchema, id: string): Promise<string> {
  const { rows } = await schema.client.query<{ password_hash: string }>(`SELECT password_hash FROM ${schema.name}.users WHERE id = $1`, [id])
  return rows[0].password_hash
}

/** scrypt in the PHC form the gateway documents: $scrypt$ln=…,r=…,p=…$salt$hash */
export function scryptPhc (password: string, ln = 14, r = 8, p = 1): string {
  const salt = randomBytes(16)
  const key = scryptSync(password, salt, 32, { N: 2 ** ln, r, p })
  const b64 = (b: Buffer): string => b.toString('base64').replace(/=+$/, '')
  return `$scrypt$ln=${ln},r=${r},p=${p}$${b64(salt)}$${b64(key)}`
}

/** `auth.users` for a schema made by usersSchema. */
export function postgresUsers (schema: TestSchema, url = PG_URL, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { postgres: postgresSettings(schema, url, extra) }
}

function postgresSettings (schema: TestSchema, url: string, extra: Record<string, unknown>): Record<string, unknown> {
  const settings: Record<string, unknown> = {
    url,
    query: `SELECT id, username, password_hash, roles, scopes, email, name, disabled FROM ${schema.name}.users WHERE lower(username) = lower($1)`,
    idQuery: `SELECT id, username, password_hash, roles, scopes, email, name, disabled FROM ${schema.name}.users WHERE id = $1`,
    rehashQuery: `UPDATE ${schema.name}.users SET password_hash = $2 WHERE id = $1`,
    passwordUpdateQuery: `UPDATE ${schema.name}.users SET password_hash = $2 WHERE id = $1`,
    connectTimeout: '1s',
    statementTimeout: '1s',
    ...extra
  }
  for (const [key, value] of Object.entries(settings)) if (value === undefined) delete settings[key]
  return settings
}

/** A gateway whose `auth.users` is exactly `users` (the test config's users file replaced, not merged). */
export async function startGatewayWithUsers (t: Test, users: Record<string, unknown>, overrides: ConfigOverrides = {}, options: BuildOptions = {}): Promise<FastifyInstance> {
  const { file } = await writeTestConfig(overrides)
  const doc = parse(readFileSync(file, 'utf8')) as { auth: Record<string, unknown> }
  doc.auth.users = users
  writeFileSync(file, stringify(doc))
  const app = await buildGateway(loadConfig(file, {}), options)
  t.teardown(() => app.close())
  await app.ready()
  return app
}

export interface CuttableHop {
  url: string
  /** Drops every connection and refuses new ones, as a dead network would. */
  cut (): void
  mend (): void
}

/** A TCP relay to the shared PostgreSQL that a test can cut. */
export async function cuttableHop (t: Test): Promise<CuttableHop> {
  const target = new URL(PG_URL)
  const sockets = new Set<Socket>()
  let cut = false
  const server: Server = createServer((client) => {
    if (cut) { client.destroy(); return }
    const upstream = connect(Number(target.port || 5432), target.hostname)
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
      s.on('error', () => { client.destroy(); upstream.destroy() })
    }
    client.pipe(upstream).pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()) }))
  const { port } = server.address() as { port: number }
  const url = new URL(PG_URL)
  url.host = `127.0.0.1:${port}`
  return {
    url: url.toString(),
    cut: () => { cut = true; for (const s of sockets) s.destroy() },
    mend: () => { cut = false }
  }
}
