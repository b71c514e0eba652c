// Where the accounts that log in live: the users file or a PostgreSQL table.
// The login, refresh and password routes talk only to this interface.

/** What a token says about a user; the password hash never leaves the source. */
export interface SourceUser {
  id: string
  username: string
  email?: string
  name?: string
  roles: string[]
  scopes: string[]
}

export interface UserSource {
  readonly kind: 'file' | 'postgres'
  /** Whether `changePassword` can store a new hash (the file source cannot). */
  readonly canChangePassword: boolean
  /**
   * The user when `password` is theirs; null for an unknown or disabled user
   * or a wrong password, each after the same hashing work. Throws
   * ERR_USERS_UNAVAILABLE when the source cannot be asked.
   */
  authenticate (login: string, password: string): Promise<SourceUser | null>
  /** The current record of a user (for a refresh); null when gone or disabled. */
  findById (id: string): Promise<SourceUser | null>
  /** Whether `password` is the current password of user `id`. */
  checkPassword (id: string, password: string): Promise<boolean>
  /** Stores a new (argon2id) hash for user `id`. */
  changePassword (id: string, passwordHash: string): Promise<void>
  /** Resolves when the source answers; for /readyz. */
  ping (): Promise<void>
  close (): Promise<void>
}
