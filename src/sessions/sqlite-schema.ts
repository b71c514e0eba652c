import type { DatabaseSync } from 'node:sqlite'
import { StoreOpenError } from './sqlite-errors.js'

// The embedded store's tables, versioned with PRAGMA user_version. Each
// migration takes the file from version i to i + 1 and runs in the same
// transaction as the version bump, so a crash leaves the old version whole.
// A file from a newer gateway is refused rather than read with the wrong
// meaning.

const MIGRATIONS: readonly string[] = [
  `CREATE TABLE sessions (
     sid TEXT PRIMARY KEY,
     sub TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     last_used_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     idle_ms INTEGER NOT NULL,
     user_agent TEXT NOT NULL,
     address TEXT NOT NULL,
     current_hash TEXT NOT NULL
   );
   CREATE INDEX sessions_by_sub ON sessions (sub);
   CREATE TABLE tokens (
     hash TEXT PRIMARY KEY,
     sid TEXT NOT NULL,
     expires_at INTEGER NOT NULL,
     successor TEXT,
     rotated_at INTEGER,
     sealed TEXT
   );
   CREATE INDEX tokens_by_expiry ON tokens (expires_at);
   -- id only grows (AUTOINCREMENT never reuses one), so other processes read
   -- new revocations as the rows past the last id they saw.
   CREATE TABLE deny (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     key TEXT NOT NULL UNIQUE,
     kind TEXT NOT NULL,
     value TEXT NOT NULL,
     before INTEGER,
     expires_at INTEGER NOT NULL
   );
   CREATE INDEX deny_by_expiry ON deny (expires_at);`
]

export const SCHEMA_VERSION = MIGRATIONS.length

export function migrate (db: DatabaseSync, file: string): void {
  db.exec('BEGIN IMMEDIATE')
  try {
    const version = Number((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version)
    if (version > SCHEMA_VERSION) {
      throw new StoreOpenError(`store.file ${file}: written by a newer tokengate (schema version ${version}, this one knows up to ${SCHEMA_VERSION}); upgrade the gateway or point store.file elsewhere`)
    }
    for (let v = version; v < SCHEMA_VERSION; v++) db.exec(MIGRATIONS[v])
    if (version !== SCHEMA_VERSION) db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`)
    db.exec('COMMIT')
  } catch (err) {
    try { db.exec('ROLLBACK') } catch { /* nothing was begun */ }
    throw err
  }
}
