import { Type, type Static } from '@sinclair/typebox'
import type { YamlSource } from '../config/yaml-source.js'

// The users file (`auth.users.file`): the accounts the gateway logs in itself.
// Values end up in identity headers upstream, so the schema keeps them to
// characters that are safe in a header.

const SAFE_TEXT = '^[^\\x00-\\x1f\\x7f]*$'

export const UserSchema = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._:@-]+$' }),
  username: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._@+-]+$' }),
  passwordHash: Type.String({ pattern: '^\\$argon2id\\$', description: 'an argon2id hash from `gateway hash-password`' }),
  email: Type.Optional(Type.String({ maxLength: 254, pattern: '^[^\\s@]+@[^\\s@]+$' })),
  name: Type.Optional(Type.String({ maxLength: 256, pattern: SAFE_TEXT })),
  roles: Type.Array(Type.String({ pattern: '^[A-Za-z0-9._:-]+$' }), { default: [] }),
  scopes: Type.Array(Type.String({ pattern: '^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$' }), { default: [] })
}, { additionalProperties: false })

export const UsersFileSchema = Type.Object({
  users: Type.Array(UserSchema)
}, { additionalProperties: false })

export type UserRecord = Static<typeof UserSchema>

export interface UserDirectory {
  /** keyed by lower-cased username */
  byUsername: ReadonlyMap<string, UserRecord>
  byId: ReadonlyMap<string, UserRecord>
}

/** Reads the users from an already-opened source; null after reporting problems there. */
export function readUsers (source: YamlSource): UserDirectory | null {
  const value = source.validate<Static<typeof UsersFileSchema>>(UsersFileSchema)
  if (value === null) return null
  const byUsername = new Map<string, UserRecord>()
  const byId = new Map<string, UserRecord>()
  value.users.forEach((user, i) => {
    if (byUsername.has(user.username.toLowerCase())) source.report(['users', i, 'username'], `duplicates username "${user.username}"`)
    if (byId.has(user.id)) source.report(['users', i, 'id'], `duplicates id "${user.id}"`)
    byUsername.set(user.username.toLowerCase(), user)
    byId.set(user.id, user)
  })
  return source.issues.length > 0 ? null : { byUsername, byId }
}
