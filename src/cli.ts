import { generateKeyPairSync } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import cluster from 'node:cluster'
import { checkConfig, loadConfig } from './config/load-config.js'
import { configReferenceTable, withConfigReference } from './config/config-reference.js'
import { editorJsonSchema } from './config/schema.js'
import { ConfigError, formatIssue } from './config/yaml-source.js'
import { hashPassword, MAX_PASSWORD_BYTES } from './users/password.js'
import { startGateway } from './server.js'
import { SqliteStore, StoreOpenError } from './sessions/sqlite-store.js'
import { superviseWorkers, workerCount } from './supervisor.js'

const USAGE = `usage:
  gateway --config FILE            start the gateway
  gateway validate FILE            check a config: every problem with file:line:col, exit 1 on any
  gateway hash-password            read a password on stdin, print its argon2id hash
  gateway keygen ALG FILE [--if-missing]
                                   write a new private key (RS256, ES256 or EdDSA) as PEM
  gateway schema                   print the config's JSON Schema
  gateway config-reference [FILE]  print the key-by-key config reference, or rewrite its block in FILE (README.md)`

async function readStdin (): Promise<string> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

const KEY_PAIRS = {
  RS256: () => generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: PKCS8, publicKeyEncoding: SPKI }).privateKey,
  ES256: () => generateKeyPairSync('ec', { namedCurve: 'P-256', privateKeyEncoding: PKCS8, publicKeyEncoding: SPKI }).privateKey,
  EdDSA: () => generateKeyPairSync('ed25519', { privateKeyEncoding: PKCS8, publicKeyEncoding: SPKI }).privateKey
}
const PKCS8 = { format: 'pem', type: 'pkcs8' } as const
const SPKI = { format: 'pem', type: 'spki' } as const

/** Writes a new private key to `file` (mode 0600); answers the message to print when it cannot. */
function keygen (algorithm: string, file: string): string | null {
  if (!Object.hasOwn(KEY_PAIRS, algorithm)) {
    const hint = algorithm.toUpperCase() === 'HS256' ? '; an HS256 secret is not a key file: generate one with `openssl rand -base64 32`' : ''
    return `keygen: ${algorithm} is not one of RS256, ES256, EdDSA${hint}`
  }
  const privateKey = KEY_PAIRS[algorithm as keyof typeof KEY_PAIRS]()
  try {
    mkdirSync(dirname(file), { recursive: true })
    writeFileSync(file, privateKey, { mode: 0o600 })
  } catch (err) {
    return `keygen: cannot write ${file}: ${(err as Error).message}`
  }
  return null
}

/** The config file's text, or undefined when it cannot be read (loadConfig then says so, naming the file). */
function readConfigText (file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}

/**
 * One of the supervisor's workers. One that cannot start exits at once (its
 * IPC channel would keep it alive), and the supervisor starts it again after
 * a back-off.
 */
async function startWorker (configFile: string): Promise<number> {
  try {
    await startGateway(configFile, { worker: true })
    return -1
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`worker ${process.pid} refusing to start: ${err.issues.length} problem(s) in the configuration`)
      for (const issue of err.issues) console.error(formatIssue(issue))
    } else {
      console.error(`worker ${process.pid} could not start:`, err)
    }
    process.exit(1)
  }
}

export async function main (argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'validate': {
      if (rest.length !== 1) break
      const { issues } = checkConfig(rest[0])
      if (issues.length === 0) {
        console.log('ok')
        return 0
      }
      for (const issue of issues) console.error(formatIssue(issue))
      return 1
    }
    case 'hash-password': {
      const password = (await readStdin()).replace(/\r?\n$/, '')
      if (password === '' || Buffer.byteLength(password) > MAX_PASSWORD_BYTES) {
        console.error(`hash-password: the password must be 1 to ${MAX_PASSWORD_BYTES} bytes`)
        return 1
      }
      console.log(await hashPassword(password))
      return 0
    }
    case 'keygen': {
      const [algorithm, file, flag] = rest
      if (algorithm === undefined || file === undefined) break
      if (flag === '--if-missing' && existsSync(file)) return 0
      const problem = keygen(algorithm, file)
      if (problem !== null) {
        console.error(problem)
        return 1
      }
      console.error(`wrote ${algorithm} private key to ${file}`)
      return 0
    }
    case 'schema':
      console.log(JSON.stringify(editorJsonSchema(), null, 2))
      return 0
    case 'config-reference': {
      if (rest.length === 0) {
        console.log(configReferenceTable())
        return 0
      }
      writeFileSync(rest[0], withConfigReference(readFileSync(rest[0], 'utf8')))
      return 0
    }
    case '--config': {
      if (rest.length !== 1) break
      try {
        if (cluster.isWorker) return await startWorker(rest[0])
        const text = readConfigText(rest[0])
        const loaded = loadConfig(rest[0], process.env, text)
        if (workerCount(loaded.config.server.workers) > 1 && text !== undefined) {
          // Each worker would fail on a store file that cannot be used and be
          // started again after a back-off, for ever: try the file once here.
          if (loaded.redisTarget === null) await new SqliteStore({ file: loaded.config.store.file }).close()
          superviseWorkers(rest[0], loaded, text)
          return -1
        }
        await startGateway(rest[0])
      } catch (err) {
        if (err instanceof ConfigError) {
          console.error(`refusing to start: ${err.issues.length} problem(s) in the configuration`)
          for (const issue of err.issues) console.error(formatIssue(issue))
          return 1
        }
        if (err instanceof StoreOpenError) {
          console.error(`refusing to start: ${err.message}`)
          return 1
        }
        throw err
      }
      return -1 // still running
    }
  }
  console.error(USAGE)
  return 2
}
