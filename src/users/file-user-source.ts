import { dummyPasswordHash, verifyPassword } from './password.js'
import type { SourceUser, UserSource } from './user-source.js'
import type { UserDirectory, UserRecord } from './users-file.js'

// The users file as a user source: read once with the config, read-only.

function toSourceUser (user: UserRecord): SourceUser {
  return { id: user.id, username: user.username, email: user.email, name: user.name, roles: user.roles, scopes: user.scopes }
}

export class FileUserSource implements UserSource {
  readonly kind = 'file'
  readonly canChangePassword = false
  readonly #users: UserDirectory

  constructor (users: UserDirectory) {
    this.#users = users
  }

  async authenticate (login: string, password: string): Promise<SourceUser | null> {
    const user = this.#users.byUsername.get(login.toLowerCase())
    // An unknown user costs one hash verification too, so timing tells nothing.
    const ok = await verifyPassword(user?.passwordHash ?? await dummyPasswordHash(), password)
    return user !== undefined && ok ? toSourceUser(user) : null
  }

  async findById (id: string): Promise<SourceUser | null> {
    const user = this.#users.byId.get(id)
    return user === undefined ? null : toSourceUser(user)
  }

  async checkPassword (id: string, password: string): Promise<boolean> {
    const user = this.#users.byId.get(id)
    return await verifyPassword(user?.passwordHash ?? await dummyPasswordHash(), password) && user !== undefined
  }

  async changePassword (): Promise<void> {
    throw new Error('the users file is read-only')
  }

  async ping (): Promise<void> {}
  async close (): Promise<void> {}
}
