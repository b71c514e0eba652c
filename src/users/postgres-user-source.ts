import pg from 'pg'
import type { FastifyBaseLogger } from 'fastify'
import { ERR_USERS_UNAVAILABLE } from '../errors.js'
import { dummyPasswordHash, hashPassword } from './password.js'
import { needsRehash, verifyAnyHash } from './password-hashes.js'
import type { SourceUser, UserSource } from './user-source.js'

// Users where an application already keeps them. The queries are the
// operator's; the login name or id only ever travels as a parameter ($1).
// Columns are the contract: id, username, password_hash, and optionally
// roles, scopes (text[]), email, name, disabled.

export interface PostgresUserSourceOptions {
  url: string
  /** Takes the login name as $1. */
  query: string
  /** Takes the user id as $1; without it a refresh reuses what the last login on this instance read. */
  idQuery?: string
  /** Takes the user id as $1 and a new argon2id hash as $2; run after a login verified an older kind of hash. */
  rehashQuery?: string
  /** Takes the user id as $1 and the new hash as $2. */
  passwordUpdateQuery?: string
  connectTimeoutMs: number
  statementTimeoutMs: number
  log: FastifyBaseLogger
}

interface Row {
  id: unknown
  username: unknown
  password_hash: unknown
  roles?: unknown
  scopes?: unknown
  email?: unknown
  name?: unknown
  disabled?: unknown
}

/** How many users a refresh without `idQuery` can find from earlier logins on this instance. */
const REMEMBERED_USERS = 10_000

const textArray = (value: unknown): string[] => Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : []
const optionalText = (value: unknown): string | undefined => typeof value === 'string' && value !== '' ? value : undefined

function toUser (row: Row): { user: SourceUser, hash: string, disabled: boolean } | null {
  if (row.id === null || row.id === undefined || typeof row.username !== 'string' || typeof row.password_hash !== 'string') return null
  return {
    user: { id: String(row.id), username: row.username, email: optionalText(row.email), name: optionalText(row.name), roles: textArray(row.roles), scopes: textArray(row.scopes) },
    hash: row.password_hash,
    disabled: row.disabled === true
  }
}

export class PostgresUserSource implements UserSource {
  readonly kind = 'postgres'
  readonly canChangePassword: boolean
  readonly #pool: pg.Pool
  readonly #options: PostgresUserSourceOptions
  readonly #remembered = new Map<string, SourceUser>()
  /** Logged once per outage, not once per login. */
  #down = false

  constructor (options: PostgresUserSourceOptions) {
    this.#options = options
    this.canChangePassword = options.passwordUpdateQuery !== undefined
    this.#pool = new pg.Pool({
      connectionString: options.url,
      connectionTimeoutMillis: options.connectTimeoutMs,
      statement_timeout: options.statementTimeoutMs,
      // A query that the server never answers (a cut network) ends on our side too.
      query_timeout: options.statementTimeoutMs + options.connectTimeoutMs,
      idleTimeoutMillis: 30_000,
      max: 10
    })
    // An idle client whose server went away emits here; unhandled, it would crash the process.
    this.#pool.on('error', (err) => this.#outage(err))
  }

  #outage (err: unknown): void {
    if (this.#down) return
    this.#down = true
    this.#options.log.error({ err: { message: err instanceof Error ? err.message : String(err) } }, 'user database unavailable: logins answer 503 until it is back')
  }

  async #query (text: string, values: unknown[]): Promise<Row[]> {
    let result: pg.QueryResult<Row>
    try {
      result = await this.#pool.query<Row>(text, values)
    } catch (err) {
      this.#outage(err)
      throw new ERR_USERS_UNAVAILABLE()
    }
    if (this.#down) {
      this.#down = false
      this.#options.log.info('user database reachable again')
    }
    return result.rows
  }

  async #byLogin (login: string): Promise<{ user: SourceUser, hash: string, disabled: boolean } | null> {
    const rows = await this.#query(this.#options.query, [login])
    return rows.length === 1 ? toUser(rows[0]) : null
  }

  #remember (user: SourceUser): void {
    this.#remembered.delete(user.id)
    if (this.#remembered.size >= REMEMBERED_USERS) this.#remembered.delete(this.#remembered.keys().next().value as string)
    this.#remembered.set(user.id, user)
  }

  async authenticate (login: string, password: string): Promise<SourceUser | null> {
    const found = await this.#byLogin(login)
    // Unknown and disabled users cost one verification too, so timing tells nothing.
    const ok = await verifyAnyHash(found?.hash ?? await dummyPasswordHash(), password)
    if (found === null || found.disabled || !ok) return null
    if (this.#options.rehashQuery !== undefined && needsRehash(found.hash)) {
      try {
        await this.#query(this.#options.rehashQuery, [found.user.id, await hashPassword(password)])
      } catch (err) {
        // The login itself succeeded; the upgrade is tried again next time.
        this.#options.log.warn({ err, sub: found.user.id }, 'password rehash failed')
      }
    }
    this.#remember(found.user)
    return found.user
  }

  async findById (id: string): Promise<SourceUser | null> {
    if (this.#options.idQuery === undefined) return this.#remembered.get(id) ?? null
    const rows = await this.#query(this.#options.idQuery, [id])
    const found = rows.length === 1 ? toUser(rows[0]) : null
    if (found === null || found.disabled) return null
    return found.user
  }

  async checkPassword (id: string, password: string): Promise<boolean> {
    const remembered = this.#options.idQuery === undefined ? this.#remembered.get(id) : undefined
    let found: { user: SourceUser, hash: string, disabled: boolean } | null = null
    if (this.#options.idQuery !== undefined) {
      const rows = await this.#query(this.#options.idQuery, [id])
      found = rows.length === 1 ? toUser(rows[0]) : null
    } else if (remembered !== undefined) {
      found = await this.#byLogin(remembered.username)
      if (found !== null && found.user.id !== id) found = null
    }
    const ok = await verifyAnyHash(found?.hash ?? await dummyPasswordHash(), password)
    return ok && found !== null && !found.disabled
  }

  async changePassword (id: string, passwordHash: string): Promise<void> {
    if (this.#options.passwordUpdateQuery === undefined) throw new Error('no passwordUpdateQuery configured')
    await this.#query(this.#options.passwordUpdateQuery, [id, passwordHash])
  }

  async ping (): Promise<void> {
    await this.#query('SELECT 1', [])
  }

  async close (): Promise<void> {
    await this.#pool.end()
  }
}
