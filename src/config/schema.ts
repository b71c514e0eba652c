import { Type, type Static, type TString } from '@sinclair/typebox'
import { DURATION_PATTERN } from './duration.js'

// One schema gives the config's TypeScript type, its validation (Ajv, with the
// defaults written here) and the JSON Schema that editors read
// (`npm run schema` writes gateway.config.schema.json).

const Strict = { additionalProperties: false } as const

const Duration = (description: string, defaultValue?: string): TString =>
  Type.String({ pattern: DURATION_PATTERN, description: `${description} (e.g. 30s, 15m, 14d)`, ...(defaultValue === undefined ? {} : { default: defaultValue }) })

export const ALGORITHMS = ['HS256', 'RS256', 'ES256', 'EdDSA'] as const
export const AUTH_MODES = ['required', 'optional', 'none'] as const
export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

export const RateLimitSchema = Type.Object({
  max: Type.Integer({ minimum: 1, description: 'requests allowed per window and key' }),
  timeWindow: Duration('the window'),
  onStoreError: Type.Optional(Type.Union([Type.Literal('open'), Type.Literal('closed')], { description: 'when the shared counter store fails: open serves with a local counter, closed answers 503', default: 'open' }))
}, Strict)

const RateLimitOrOff = Type.Union([Type.Literal(false), RateLimitSchema], { description: 'false turns rate limiting off' })

export const ServerSchema = Type.Object({
  host: Type.String({ default: '127.0.0.1', description: 'address to listen on' }),
  port: Type.Integer({ minimum: 0, maximum: 65535, default: 8080 }),
  trustProxy: Type.Union([
    Type.Boolean(),
    Type.String({ minLength: 1 }),
    Type.Array(Type.String({ minLength: 1 })),
    Type.Integer({ minimum: 1 })
  ], { default: false, description: 'which hops may set X-Forwarded-*: false, true, an address/CIDR list, or a hop count' }),
  publicUrl: Type.Optional(Type.String({ pattern: '^https?://', description: 'the origin clients use to reach the gateway, for CSRF origin checks' })),
  bodyLimit: Type.Integer({ minimum: 1, default: 65536, description: 'bytes, for the gateway\'s own endpoints' }),
  maxHeaderSize: Type.Integer({ minimum: 1024, default: 16384, description: 'bytes, all request headers together' }),
  requestTimeout: Duration('whole request, from the client', '60s'),
  headersTimeout: Type.Optional(Duration('receiving the request headers; at most requestTimeout; default 30s or requestTimeout if shorter')),
  keepAliveTimeout: Duration('idle keep-alive connections', '72s'),
  shutdownGrace: Duration('how long in-flight requests may finish on SIGTERM', '10s'),
  workers: Type.Union([Type.Integer({ minimum: 1, maximum: 256 }), Type.Literal('auto')], {
    default: 1,
    description: 'gateway processes serving server.port under one supervisor; auto = the cores available. More than 1 needs a shared store: store.file on disk or redis, not ":memory:"'
  })
}, { ...Strict, default: {} })

// Files, not PEM text inline: a key in the config would be copied wherever the
// config goes. There is deliberately no way to turn verification off.
export const RedisTlsSchema = Type.Object({
  ca: Type.Optional(Type.String({ minLength: 1, description: 'PEM file of the CA certificate(s) Redis\'s certificate is checked against, instead of the public CAs; relative to the config file' })),
  cert: Type.Optional(Type.String({ minLength: 1, description: 'PEM file of the gateway\'s client certificate, for a Redis that asks for one (tls-auth-clients); needs key' })),
  key: Type.Optional(Type.String({ minLength: 1, description: 'PEM file of the client certificate\'s private key, unencrypted; needs cert' })),
  servername: Type.Optional(Type.String({ minLength: 1, description: 'the name Redis\'s certificate must carry (also sent as SNI), when it is not the host connected to' }))
}, Strict)

export const RedisSchema = Type.Object({
  url: Type.String({ default: '', description: 'one Redis node: redis:// or rediss:// URL; with none of url, sentinels, cluster the embedded store (store.file) is used' }),
  sentinels: Type.Optional(Type.Array(Type.String(), { description: 'Sentinel: the sentinels as "host:port" (instead of url); needs masterName' })),
  masterName: Type.Optional(Type.String({ minLength: 1, description: 'Sentinel: the name the sentinels monitor the primary under' })),
  sentinelPassword: Type.Optional(Type.String({ description: 'Sentinel: the sentinels\' own password, when they have one (use ${VAR})' })),
  cluster: Type.Optional(Type.Array(Type.String(), { description: 'Redis Cluster: seed nodes as "host:port" (instead of url); any reachable one tells the gateway the rest' })),
  username: Type.Optional(Type.String({ minLength: 1, description: 'ACL user, for url, sentinels or cluster' })),
  password: Type.Optional(Type.String({ description: 'password (use ${VAR}), for url, sentinels or cluster' })),
  tls: Type.Optional(Type.Union([Type.Boolean(), RedisTlsSchema], { description: 'TLS to Redis, the sentinels and every cluster node; implied by a rediss:// url. true: certificates checked against the public CAs; an object: TLS with the files it names. Certificates are always verified' })),
  waitReplicas: Type.Optional(Type.Integer({ minimum: 0, description: 'a revocation, rotation or login is answered only once this many replicas confirm it (WAIT), else 503; default 1 with sentinels or cluster, 0 otherwise' })),
  waitTimeout: Type.Optional(Duration('how long a revocation, rotation or login waits for its replicas; shorter than commandTimeout; default 250ms')),
  keyPrefix: Type.String({ default: 'tg:', minLength: 1 }),
  connectTimeout: Duration('connecting', '2s'),
  commandTimeout: Duration('one command', '500ms')
}, { ...Strict, default: {} })

export const StoreSchema = Type.Object({
  file: Type.String({ default: './data/tokengate.db', minLength: 1, description: 'the embedded SQLite store, used when none of redis.url, redis.sentinels, redis.cluster is set; relative to this config file; ":memory:" keeps nothing' })
}, { ...Strict, default: {} })

export const KeySchema = Type.Object({
  kid: Type.String({ minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9._-]+$' }),
  privateKey: Type.Optional(Type.String({ minLength: 1, description: 'PEM file, relative to the config file' })),
  publicKey: Type.Optional(Type.String({ minLength: 1, description: 'PEM file, relative to the config file' }))
}, Strict)

export const TrustedIssuerSchema = Type.Object({
  issuer: Type.String({ minLength: 1, description: 'the exact iss of the identity provider\'s tokens' }),
  jwksUri: Type.Optional(Type.String({ pattern: '^https?://', description: 'where the IdP publishes its keys' })),
  discovery: Type.Optional(Type.Boolean({ description: 'true: read jwks_uri from <issuer>/.well-known/openid-configuration' })),
  audience: Type.String({ minLength: 1, description: 'the aud the IdP puts in tokens meant for us' }),
  algorithms: Type.Array(Type.Union([Type.Literal('RS256'), Type.Literal('ES256'), Type.Literal('EdDSA'), Type.Literal('PS256')]), { minItems: 1 }),
  typ: Type.Optional(Type.String({ minLength: 1, description: 'required JWT typ header, e.g. JWT or at+jwt; unchecked when absent' })),
  claims: Type.Optional(Type.Object({
    sub: Type.Optional(Type.String()), scope: Type.Optional(Type.String()), roles: Type.Optional(Type.String()),
    username: Type.Optional(Type.String()), email: Type.Optional(Type.String()), name: Type.Optional(Type.String())
  }, Strict)),
  jwksRefresh: Type.Optional(Duration('re-fetch the JWKS this often (default: the JWKS Cache-Control max-age, else 10m)')),
  jwksMinRefetch: Type.Optional(Duration('an unknown kid re-fetches at most once per this (default 30s)')),
  maxTokenLifetime: Type.Optional(Duration('longest exp - iat accepted (tokens without iat are refused); revocations by sub or jti are kept this long (default 24h)'))
}, Strict)

export const TokensSchema = Type.Object({
  issuer: Type.String({ minLength: 1, default: 'tokengate' }),
  audience: Type.String({ minLength: 1, default: 'api' }),
  algorithm: Type.Union(ALGORITHMS.map((a) => Type.Literal(a)), { description: 'access-token signing algorithm' }),
  secret: Type.Optional(Type.String({ description: 'HS256 only: at least 32 bytes' })),
  keys: Type.Optional(Type.Array(KeySchema, { description: 'asymmetric algorithms: the first key signs, every key verifies (selected by kid)' })),
  accessTtl: Duration('access token lifetime', '15m'),
  refreshTtl: Duration('refresh token / session absolute lifetime', '14d'),
  idleTimeout: Duration('a session unused this long ends', '7d'),
  reuseGrace: Duration('a just-rotated refresh token returns the current successor this long; 0s turns it off', '5s'),
  clockSkew: Duration('tolerance for exp/nbf/iat', '30s'),
  trustedIssuers: Type.Array(TrustedIssuerSchema, { default: [], description: 'outside identity providers whose tokens routes may accept (route.issuers)' })
}, Strict)

export const PostgresUsersSchema = Type.Object({
  url: Type.String({ pattern: '^postgres(ql)?://', description: 'postgres://user:pass@host:5432/db (use ${VAR} for the password)' }),
  query: Type.String({ minLength: 1, description: 'SELECT taking the login name as $1, returning id, username, password_hash [, roles, scopes, email, name, disabled]' }),
  idQuery: Type.Optional(Type.String({ minLength: 1, description: 'the same columns by user id ($1), so a refresh sees role changes and disabled users' })),
  rehashQuery: Type.Optional(Type.String({ minLength: 1, description: 'UPDATE taking the user id as $1 and an argon2id hash as $2, run after a login verified an older kind of hash' })),
  passwordUpdateQuery: Type.Optional(Type.String({ minLength: 1, description: 'UPDATE taking the user id as $1 and the new hash as $2; enables POST /auth/password' })),
  connectTimeout: Duration('connecting to PostgreSQL', '2s'),
  statementTimeout: Duration('one query', '2s')
}, Strict)

export const ClientSchema = Type.Object({
  id: Type.String({ minLength: 1, maxLength: 128, pattern: '^[A-Za-z0-9._:-]+$', description: 'the client_id; becomes the token sub' }),
  secretHash: Type.String({ pattern: '^\\$argon2id\\$', description: 'an argon2id hash of the client secret from `gateway hash-password`' }),
  scopes: Type.Array(Type.String({ pattern: '^[\\x21\\x23-\\x5b\\x5d-\\x7e]+$' }), { default: [], description: 'the most a token of this client may carry' }),
  roles: Type.Array(Type.String({ pattern: '^[A-Za-z0-9._:-]+$' }), { default: [] }),
  accessTtl: Type.Optional(Duration('access token lifetime for this client; default tokens.accessTtl')),
  introspect: Type.Boolean({ default: false, description: 'may call POST /oauth/introspect' })
}, Strict)

export const AuthSchema = Type.Object({
  // One object with two optional keys rather than a union: a typo inside
  // `postgres` is then reported at its own line, not as "must be one of".
  users: Type.Object({
    file: Type.Optional(Type.String({ minLength: 1, description: 'users YAML file, relative to the config file' })),
    postgres: Type.Optional(PostgresUsersSchema)
  }, { ...Strict, description: 'where users live: exactly one of file or postgres' }),
  clients: Type.Array(ClientSchema, { default: [], description: 'machine clients for POST /oauth/token (client_credentials), /oauth/introspect and /oauth/revoke' }),
  loginRateLimit: Type.Object({
    max: Type.Integer({ minimum: 1, default: 5, description: 'failed logins per account (username) per window; then 429 until the window ends' }),
    addressMax: Type.Optional(Type.Integer({ minimum: 1, description: 'failed logins per client address per window, over all accounts; default 5 × max' })),
    timeWindow: Duration('the window', '1m')
  }, { ...Strict, default: {}, description: 'login throttling: only failed attempts count' }),
  allowedOrigins: Type.Array(Type.String({ pattern: '^https?://[^/]+$' }), { default: [], description: 'origins besides the gateway\'s own allowed to use the refresh cookie' }),
  cookie: Type.Object({
    secure: Type.Boolean({ default: true, description: 'false only for local plain-http development' }),
    name: Type.String({ default: 'tg_refresh', pattern: '^[A-Za-z0-9_-]+$' })
  }, { ...Strict, default: {} }),
  adminRole: Type.String({ default: 'admin', minLength: 1 })
}, Strict)

export const DenylistSchema = Type.Object({
  maxStaleness: Duration('serve from the local mirror this long after losing Redis, then 503', '5s')
}, { ...Strict, default: {} })

export const IdentitySchema = Type.Object({
  headers: Type.Record(
    Type.String({ pattern: '^[A-Za-z0-9-]+$' }),
    Type.Union([
      Type.Literal('sub'), Type.Literal('username'), Type.Literal('email'), Type.Literal('name'),
      Type.Literal('roles'), Type.Literal('scope'), Type.Literal('sid'), Type.Literal('jti')
    ]),
    { default: { 'X-User-Id': 'sub', 'X-User-Name': 'username', 'X-User-Email': 'email', 'X-User-Roles': 'roles', 'X-User-Scopes': 'scope' } }
  ),
  assertion: Type.Optional(Type.Object({
    header: Type.String({ pattern: '^[A-Za-z0-9-]+$', default: 'X-Tokengate-Assertion', description: 'the request header that carries it (a client-sent one is always dropped)' }),
    ttl: Duration('its lifetime; never beyond the access token\'s exp; re-made when half of it is gone', '60s'),
    audience: Type.Optional(Type.String({ minLength: 1, description: 'its aud; default: the origin of the route\'s (first) upstream, e.g. http://10.0.1.5:3001' }))
  }, { ...Strict, description: 'a short JWT signed with the gateway\'s current key, for upstreams to verify with /.well-known/jwks.json; set here it is on for every route with auth (routes[].assertion overrides); asymmetric tokens.algorithm only' }))
}, { ...Strict, default: {} })

/** Per route: false turns the identity assertion off; true or an object turns it on (overriding identity.assertion's ttl/audience). */
export const RouteAssertionSchema = Type.Union([
  Type.Boolean(),
  Type.Object({
    ttl: Type.Optional(Duration('this route\'s assertion lifetime')),
    audience: Type.Optional(Type.String({ minLength: 1, description: 'this route\'s assertion aud' }))
  }, Strict)
], { description: 'the signed identity assertion on this route: false off, true on, an object on with overrides; default: on when identity.assertion is set' })

export const BALANCE_MODES = ['round-robin', 'least-request'] as const

// The URL's form is checked by load-config (UPSTREAM_URL), item by item: a
// pattern inside this union would only say "must be a string or an array".
// The title names the item in messages about the list ("must list at least one target").
const UpstreamUrl = Type.String({ minLength: 1, title: 'target', description: 'an http(s)://host[:port] URL with no path' })

export const HealthCheckSchema = Type.Object({
  path: Type.String({ pattern: '^/', description: 'probed with GET on each target; a 2xx or 3xx answer is healthy' }),
  interval: Duration('between probes of one target', '5s'),
  timeout: Duration('one probe', '2s'),
  healthyAfter: Type.Integer({ minimum: 1, default: 2, description: 'passing probes in a row that bring an ejected or unhealthy target back' }),
  unhealthyAfter: Type.Integer({ minimum: 1, default: 3, description: 'failing probes in a row (no answer within timeout counts) that take a target out until healthyAfter passing ones; passive trials do not bring it back' })
}, { ...Strict, description: 'active health checks from the gateway to every target of the route' })
const HeaderName = Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$' })

const CorsFields = {
  origins: Type.Array(Type.String({ minLength: 1 }), { description: 'browser origins allowed to read answers: exact (https://app.example.com) or whole leftmost labels (https://*.example.com); the exact ones also count as trusted for the cookie endpoints\' CSRF check' }),
  credentials: Type.Boolean({ default: false, description: 'send Access-Control-Allow-Credentials: true (cookies with credentials: include); refused with "*"' }),
  maxAge: Duration('how long a browser may cache a preflight answer', '10m'),
  allowHeaders: Type.Array(HeaderName, { default: ['Authorization', 'Content-Type'], description: 'request headers a page may send' }),
  exposeHeaders: Type.Array(HeaderName, { default: ['WWW-Authenticate', 'X-Request-Id', 'X-RateLimit-Limit', 'X-RateLimit-Remaining', 'X-RateLimit-Reset', 'Retry-After'], description: 'answer headers a page may read' })
}

export const CorsSchema = Type.Object(CorsFields, { ...Strict, description: 'CORS for browser apps on other origins (@fastify/cors); unset: no CORS headers at all' })

/** Per route: false turns CORS off there; an object overrides the top-level keys it names. */
export const RouteCorsSchema = Type.Union([
  Type.Literal(false),
  Type.Object({
    // Not the top-level description: only top-level origins are trusted for
    // the cookie endpoints (src/tokens/browser-origins.ts), which no route serves.
    origins: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'browser origins allowed to read this route\'s answers, in place of the top-level cors.origins (same forms); not trusted for the cookie endpoints\' CSRF check (that trusts the gateway\'s own origin, auth.allowedOrigins and the exact top-level cors.origins only)' })),
    credentials: Type.Optional(Type.Boolean()),
    maxAge: Type.Optional(Duration('preflight cache')),
    allowHeaders: Type.Optional(Type.Array(HeaderName)),
    exposeHeaders: Type.Optional(Type.Array(HeaderName))
  }, Strict)
], { description: 'false: no CORS on this route; an object: overrides of the top-level cors keys' })

export const RouteSchema = Type.Object({
  prefix: Type.String({ pattern: '^/[A-Za-z0-9._~!$&\'()*+,;=:@/-]*$', description: 'a path prefix such as /api/orders' }),
  upstream: Type.Union([UpstreamUrl, Type.Array(UpstreamUrl, { minItems: 1 })], { description: 'one http(s)://host[:port] URL with no path, or a list of them (targets sharing one scheme)' }),
  balance: Type.Union(BALANCE_MODES.map((m) => Type.Literal(m)), { default: 'round-robin', description: 'how requests are spread over the targets' }),
  ejectAfter: Type.Integer({ minimum: 1, default: 3, description: 'connect failures, resets or timeouts in a row that eject a target' }),
  ejectFor: Duration('first ejection; doubled on each repeated ejection, at most 32 times this', '1s'),
  retries: Type.Integer({ minimum: 0, maximum: 5, default: 1, description: 'retries on another target, only when safe, within the route\'s 20 % retry budget' }),
  healthCheck: Type.Optional(HealthCheckSchema),
  rewritePrefix: Type.Optional(Type.String({ pattern: '^(/.*)?$' })),
  auth: Type.Union(AUTH_MODES.map((m) => Type.Literal(m)), { default: 'required' }),
  scopes: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'all are required' }),
  roles: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'any one suffices' }),
  methods: Type.Optional(Type.Array(Type.Union(HTTP_METHODS.map((m) => Type.Literal(m))), { minItems: 1 })),
  websocket: Type.Boolean({ default: false }),
  bodyLimit: Type.Integer({ minimum: 0, default: 10485760, description: 'bytes; larger proxied bodies get 413' }),
  timeout: Duration('upstream answer; then 504', '30s'),
  rateLimit: Type.Optional(RateLimitOrOff),
  cors: Type.Optional(RouteCorsSchema),
  issuers: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'issuers whose tokens this route accepts (tokens.issuer and/or tokens.trustedIssuers[].issuer); default: the gateway\'s own only' })),
  assertion: Type.Optional(RouteAssertionSchema),
  accessLog: Type.Boolean({ default: true, description: 'one access line per request on this route; false for a route polled so often its lines would drown the rest (its errors are still logged)' })
}, Strict)

export const MetricsSchema = Type.Object({
  enabled: Type.Boolean({ default: true, description: 'serve GET /metrics (Prometheus text); false also skips the per-request bookkeeping' }),
  bearerToken: Type.Optional(Type.String({ minLength: 16, description: 'when set, a scrape must send Authorization: Bearer <this> (at least 16 characters; use ${VAR})' })),
  allow: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'when set, only these client addresses or CIDRs (e.g. 10.0.0.0/8, ::1) may scrape; the address honours server.trustProxy' }))
}, { ...Strict, default: {}, description: 'the Prometheus endpoint; unauthenticated and open to every address unless restricted here' })

export const TracingSchema = Type.Object({
  // No default: unset, tracing follows otlp.endpoint (see tracingEnabled), so
  // naming where spans go is enough to send them there.
  enabled: Type.Optional(Type.Boolean({ description: 'W3C trace context to upstreams and OpenTelemetry spans; false does no tracing work at all, even with otlp.endpoint set; default: true when otlp.endpoint is set, false otherwise' })),
  trustIncoming: Type.Boolean({ default: false, description: 'continue the trace of a client\'s traceparent/tracestate; false starts a new trace per request' }),
  userId: Type.Union([Type.Literal('hash'), Type.Literal('omit')], { default: 'hash', description: 'the server span\'s user id: a SHA-256 prefix of the token subject, or none' }),
  serviceName: Type.String({ minLength: 1, default: 'tokengate' }),
  otlp: Type.Optional(Type.Object({
    endpoint: Type.String({ pattern: '^https?://', description: 'OTLP/HTTP traces URL, e.g. http://127.0.0.1:4318/v1/traces (JSON encoding)' })
  }, Strict))
}, { ...Strict, default: {}, description: 'distributed tracing across the hop to upstreams' })

export const DemoSchema = Type.Object({
  echoUpstream: Type.Optional(Type.Object({
    enabled: Type.Boolean({ default: true }),
    host: Type.String({ default: '127.0.0.1' }),
    port: Type.Integer({ minimum: 1, maximum: 65535 })
  }, Strict)),
  browserApp: Type.Optional(Type.Object({
    enabled: Type.Boolean({ default: true }),
    host: Type.String({ default: '127.0.0.1' }),
    port: Type.Integer({ minimum: 1, maximum: 65535 }),
    gateway: Type.String({ pattern: '^https?://[a-z0-9.-]+(:[0-9]{1,5})?$', description: 'the gateway\'s origin as the browser reaches it; list the app\'s origin in cors.origins' })
  }, { ...Strict, description: 'serve examples/browser-app from an origin of its own, calling the gateway across origins' }))
}, { ...Strict, description: 'for the README walk-through only: start the echo upstream (and the example app on another origin) beside the gateway' })

export const GatewayConfigSchema = Type.Object({
  server: ServerSchema,
  redis: RedisSchema,
  store: StoreSchema,
  tokens: TokensSchema,
  auth: AuthSchema,
  denylist: DenylistSchema,
  rateLimit: Type.Union([Type.Literal(false), RateLimitSchema], { default: false, description: 'default for routes' }),
  identity: IdentitySchema,
  routes: Type.Array(RouteSchema, { default: [] }),
  metrics: MetricsSchema,
  tracing: TracingSchema,
  cors: Type.Optional(CorsSchema),
  websocket: Type.Object({
    closeOnExpiry: Type.Boolean({ default: true, description: 'close a proxied WebSocket (1008) when the access token it was opened with expires' })
  }, { ...Strict, default: {}, description: 'proxied WebSockets (routes[].websocket); they are always closed when their token is revoked' }),
  demo: Type.Optional(DemoSchema)
}, { ...Strict, $id: 'https://tokengate.dev/gateway.config.schema.json', title: 'tokengate gateway.config.yaml' })

export type GatewayConfig = Static<typeof GatewayConfigSchema>
export type RouteConfig = Static<typeof RouteSchema>
export type HealthCheckConfig = Static<typeof HealthCheckSchema>
export type BalanceMode = typeof BALANCE_MODES[number]
export type MetricsConfig = Static<typeof MetricsSchema>
export type TracingConfig = Static<typeof TracingSchema>
export type RateLimitConfig = Static<typeof RateLimitSchema>
export type CorsConfig = Static<typeof CorsSchema>
export type KeyConfig = Static<typeof KeySchema>
export type TrustedIssuerConfig = Static<typeof TrustedIssuerSchema>
export type Algorithm = typeof ALGORITHMS[number]
export type AuthMode = typeof AUTH_MODES[number]
export type IdentityClaim = GatewayConfig['identity']['headers'][string]

/**
 * The schema as editors should see it: a key with a default is filled in by
 * the loader, so it is not required of the person writing the file.
 */
export function editorJsonSchema (): Record<string, unknown> {
  const relax = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(relax)
    if (node === null || typeof node !== 'object') return node
    const out: Record<string, unknown> = {}
    for (const [key, value] of Object.entries(node)) out[key] = relax(value)
    const props = out.properties as Record<string, { default?: unknown }> | undefined
    if (Array.isArray(out.required) && props !== undefined) {
      out.required = (out.required as string[]).filter((name) => props[name]?.default === undefined)
      if ((out.required as string[]).length === 0) delete out.required
    }
    return out
  }
  return relax(JSON.parse(JSON.stringify(GatewayConfigSchema))) as Record<string, unknown>
}
