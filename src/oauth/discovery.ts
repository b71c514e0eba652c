import type { GatewayConfig } from '../config/schema.js'

// RFC 8414 authorization server metadata. The same document answers
// /.well-known/openid-configuration, where tools look first.

export function discoveryDocument (config: GatewayConfig, origin: string): Record<string, unknown> {
  const base = origin.replace(/\/+$/, '')
  const clientAuth = ['client_secret_basic', 'client_secret_post']
  return {
    issuer: config.tokens.issuer,
    jwks_uri: `${base}/.well-known/jwks.json`,
    token_endpoint: `${base}/oauth/token`,
    introspection_endpoint: `${base}/oauth/introspect`,
    revocation_endpoint: `${base}/oauth/revoke`,
    grant_types_supported: ['client_credentials'],
    response_types_supported: [],
    token_endpoint_auth_methods_supported: clientAuth,
    introspection_endpoint_auth_methods_supported: clientAuth,
    revocation_endpoint_auth_methods_supported: clientAuth,
    scopes_supported: [...new Set(config.auth.clients.flatMap((c) => c.scopes))],
    id_token_signing_alg_values_supported: [config.tokens.algorithm]
  }
}
