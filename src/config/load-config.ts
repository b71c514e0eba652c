import { accessSync, constants } from 'node:fs'
import { isIP } from 'node:net'
import { dirname, resolve } from 'node:path'
import { parseDuration } from './duration.js'
import { checkRedisConfig } from './redis-config.js'
import { loadRedisTls } from './redis-tls.js'
import { redisTargetOf, type RedisTarget } from '../sessions/redis-client.js'
import { GatewayConfigSchema, type GatewayConfig } from './schema.js'
import { ConfigError, YamlSource, type ConfigIssue, type KeyPath } from './yaml-source.js'
import { checkCors } from '../cors/cors-policy.js'
import { loadTokenKeys, type TokenKeys } from '../tokens/token-keys.js'
import { readUsers, type UserDirectory, type UserRecord } from '../users/users-file.js'

/** Paths the gateway answers itself; a proxied route may not shadow them. */
export const RESERVED_PREFIXES = ['/auth', '/admin', '/oauth', '/.well-known', '/healthz', '/readyz', '/metrics'] as const

/** A config that passed every check, with what it points at already loaded. */
export interface LoadedConfig {
  file: string
  config: GatewayConfig
  keys: TokenKeys
  users: UserDirectory
  /** the Redis topology, credentials and TLS material (read from redis.tls' files); null for the embedded store */
  redisTarget: RedisTarget | null
}

/**
 * Reads, validates and resolves a config file and everything it references
 * (keys, users, Redis TLS files). Throws a ConfigError listing every problem found.
 */
export function loadConfig (file: string, env: NodeJS.ProcessEnv = process.env, text?: string): LoadedConfig {
  const { loaded, issues } = checkConfig(file, env, text)
  if (loaded === null) throw new ConfigError(issues)
  return loaded
}

/** `text`: the config file's content when the caller read it already (the supervisor's snapshot). */
export function checkConfig (file: string, env: NodeJS.ProcessEnv = process.env, text?: string): { loaded: LoadedConfig | null, issues: ConfigIssue[] } {
  const source = new YamlSource(file, env, text)
  const config = source.validate<GatewayConfig>(GatewayConfigSchema)
  if (config === null) return { loaded: null, issues: source.issues }

  const baseDir = dirname(resolve(file))
  const report = (path: KeyPath, message: string): void => source.report(path, message)
  checkRoutes(config, source)
  checkCors(config, report)
  checkRedisConfig(config.redis, report)
  const redisTarget = redisTargetOf(config.redis, loadRedisTls(config.redis, baseDir, report))
  checkServer(config, redisTarget, source)
  config.metrics.allow?.forEach((entry, i) => {
    if (parseCidr(entry) === null) source.report(['metrics', 'allow', i], 'must be an IPv4 or IPv6 address or CIDR such as 10.0.0.0/8')
  })
  const keys = loadTokenKeys(config.tokens, baseDir, report)

  checkClients(config, source)
  // With PostgreSQL the users are read per login (plugins/user-source.ts); the directory stays empty.
  const usersConfig = config.auth.users
  if ((usersConfig.file === undefined) === (usersConfig.postgres === undefined)) source.report(['auth', 'users'], 'must have exactly one of file or postgres')
  const usersFile = usersConfig.file === undefined ? null : resolve(baseDir, usersConfig.file)
  const read = usersFile === null
    ? { directory: { byUsername: new Map<string, UserRecord>(), byId: new Map<string, UserRecord>() }, issues: [] }
    : readUsersAt(usersFile, source)
  const users = read?.directory ?? null

  // A client's tokens carry its id as sub: shared with a user, one revocation would hit both.
  if (users !== null) {
    config.auth.clients.forEach((client, i) => {
      if (users.byId.has(client.id)) source.report(['auth', 'clients', i, 'id'], `is also the id of a user in ${config.auth.users.file ?? 'the users file'}`)
    })
  }
  const issues = [...source.issues, ...(read?.issues ?? [])]
  if (issues.length > 0 || keys === null || users === null) return { loaded: null, issues }
  if (usersFile !== null) usersConfig.file = usersFile
  if (config.store.file !== ':memory:') config.store.file = resolve(baseDir, config.store.file)
  return { loaded: { file, config, keys, users, redisTarget }, issues: [] }
}

/**
 * A users file that cannot be opened is a mistake in the config, so it is
 * reported there, at `auth.users.file`; problems inside it at their own lines.
 */
function readUsersAt (usersFile: string, source: YamlSource): { directory: UserDirectory | null, issues: ConfigIssue[] } | null {
  try {
    accessSync(usersFile, constants.R_OK)
  } catch (err) {
    source.report(['auth', 'users', 'file'], `cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)} (${usersFile})`)
    return null
  }
  const usersSource = new YamlSource(usersFile, null)
  return { directory: readUsers(usersSource), issues: usersSource.issues }
}

function checkClients (config: GatewayConfig, source: YamlSource): void {
  const ids = new Map<string, number>()
  config.auth.clients.forEach((client, i) => {
    const earlier = ids.get(client.id)
    if (earlier !== undefined) source.report(['auth', 'clients', i, 'id'], `duplicates auth.clients[${earlier}].id "${client.id}"`)
    ids.set(client.id, i)
    // The denylist keeps an entry for tokens.accessTtl; a longer-lived token would outlive its revocation.
    if (client.accessTtl !== undefined && parseDuration(client.accessTtl) > parseDuration(config.tokens.accessTtl)) {
      source.report(['auth', 'clients', i, 'accessTtl'], `must not be longer than tokens.accessTtl (${config.tokens.accessTtl})`)
    }
  })
}

function checkServer (config: GatewayConfig, redisTarget: RedisTarget | null, source: YamlSource): void {
  // Workers are separate processes: a ":memory:" store would give each its
  // own sessions and denylist, and a revocation through one would not reach
  // the others. Refused for "auto" too, so the config means the same on every machine.
  if (config.server.workers !== 1 && config.store.file === ':memory:' && redisTarget === null) {
    source.report(['server', 'workers'], 'more than 1 worker needs a store the workers share: store.file on disk or redis, not ":memory:"')
  }
  const { headersTimeout, requestTimeout } = config.server
  if (headersTimeout === undefined) return
  const request = parseDuration(requestTimeout)
  // Node refuses a server whose headers may take longer than the whole request.
  if (request > 0 && parseDuration(headersTimeout) > request) source.report(['server', 'headersTimeout'], `must not be longer than server.requestTimeout (${requestTimeout})`)
}

function checkTrustedIssuers (config: GatewayConfig, source: YamlSource): void {
  config.tokens.trustedIssuers.forEach((x, i) => {
    if ((x.jwksUri === undefined) === (x.discovery !== true)) source.report(['tokens', 'trustedIssuers', i], 'needs exactly one of jwksUri or discovery: true')
    if (x.issuer === config.tokens.issuer) source.report(['tokens', 'trustedIssuers', i, 'issuer'], 'is the gateway\'s own tokens.issuer')
    if (x.maxTokenLifetime !== undefined && parseDuration(x.maxTokenLifetime) < 1000) source.report(['tokens', 'trustedIssuers', i, 'maxTokenLifetime'], 'must be at least 1s')
  })
}

/** The assertion is verified with public keys: HS256 would hand every upstream the secret that signs access tokens. */
function checkAssertion (config: GatewayConfig, source: YamlSource): void {
  const global = config.identity.assertion
  const hs256 = config.tokens.algorithm === 'HS256'
  const needsKeys = 'needs an asymmetric tokens.algorithm (RS256, ES256 or EdDSA): upstreams verify it with /.well-known/jwks.json, and HS256 would give them the secret that signs access tokens'
  if (global !== undefined) {
    if (hs256) source.report(['identity', 'assertion'], needsKeys)
    if (parseDuration(global.ttl) < 1000) source.report(['identity', 'assertion', 'ttl'], 'must be at least 1s')
    const taken = Object.keys(config.identity.headers).find((h) => h.toLowerCase() === global.header.toLowerCase())
    if (taken !== undefined) source.report(['identity', 'assertion', 'header'], `is also an identity.headers name ("${taken}")`)
  }
  config.routes.forEach((route, i) => {
    const own = route.assertion
    if (own === undefined || own === false) return
    if (hs256 && global === undefined) source.report(['routes', i, 'assertion'], needsKeys)
    if (route.auth === 'none') source.report(['routes', i, 'assertion'], 'is on, but the route has auth: none (there is no identity to assert)')
    if (typeof own === 'object' && own.ttl !== undefined && parseDuration(own.ttl) < 1000) source.report(['routes', i, 'assertion', 'ttl'], 'must be at least 1s')
  })
}

function checkRoutes (config: GatewayConfig, source: YamlSource): void {
  checkTrustedIssuers(config, source)
  checkAssertion(config, source)
  const prefixes = new Map<string, number>()
  config.routes.forEach((route, i) => {
    const prefix = normalisePrefix(route.prefix)
    const earlier = prefixes.get(prefix)
    if (earlier !== undefined) source.report(['routes', i, 'prefix'], `duplicates routes[${earlier}].prefix "${config.routes[earlier].prefix}"`)
    prefixes.set(prefix, i)
    const reserved = RESERVED_PREFIXES.find((r) => prefix === '/' || prefix === r || prefix.startsWith(`${r}/`))
    if (reserved !== undefined) source.report(['routes', i, 'prefix'], `may not be ${prefix === '/' ? '"/"' : `under ${reserved}`}: the gateway answers there itself`)
    if (/(^|\/)\.\.?(\/|$)|\/\//.test(route.prefix)) source.report(['routes', i, 'prefix'], 'may not contain "." or ".." segments or "//"')
    checkUpstreams(route.upstream, i, source)
    const known = new Set([config.tokens.issuer, ...config.tokens.trustedIssuers.map((x) => x.issuer)])
    route.issuers?.forEach((iss, j) => {
      if (!known.has(iss)) source.report(['routes', i, 'issuers', j], `"${iss}" is neither tokens.issuer nor a tokens.trustedIssuers[].issuer`)
    })
    if (route.auth === 'none' && (route.scopes.length > 0 || route.roles.length > 0)) {
      source.report(['routes', i, 'auth'], 'is none, but the route lists scopes or roles: use required')
    }
  })
}

const UPSTREAM_URL = /^https?:\/\/[^/?#]+\/?$/

/** Every target of a route parses as a URL, and all share the first one's scheme (the hop and Location rewriting assume one). */
function checkUpstreams (upstream: string | string[], i: number, source: YamlSource): void {
  const list = Array.isArray(upstream) ? upstream : [upstream]
  const scheme = list[0].slice(0, list[0].indexOf(':'))
  list.forEach((url, j) => {
    const path = Array.isArray(upstream) ? ['routes', i, 'upstream', j] : ['routes', i, 'upstream']
    if (!UPSTREAM_URL.test(url) || !URL.canParse(url)) source.report(path, 'must be an http(s)://host[:port] URL with no path')
    else if (!url.startsWith(`${scheme}:`)) source.report(path, `must use ${scheme}:// like the route's first target`)
  })
}

export function normalisePrefix (prefix: string): string {
  return prefix.length > 1 && prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
}

/** An address or CIDR as `net.BlockList` takes it; null when it is neither. */
export function parseCidr (text: string): { address: string, prefix: number, family: 'ipv4' | 'ipv6' } | null {
  const [address, bits, extra] = text.split('/')
  const version = isIP(address)
  if (version === 0 || extra !== undefined) return null
  const max = version === 4 ? 32 : 128
  if (bits !== undefined && !/^\d{1,3}$/.test(bits)) return null
  const prefix = bits === undefined ? max : Number(bits)
  if (prefix > max) return null
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' }
}
