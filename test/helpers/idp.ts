import { createServer, type Server } from 'node:http'
import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import type { Test } from 'tap'
import { createSigner } from 'fast-jwt'

// A real HTTP server playing an OpenID provider: a discovery document, a JWKS
// of keys it can rotate, and a switch that makes it answer 503 (down). It
// counts JWKS requests so a test can see how often the gateway fetched.
// It signs ES256 with an EC key; with `rsa: true` its JWKS also holds an RSA
// key (kid `<kid>-rsa`) that RS256 tokens are signed with.

export interface TestIdp {
  issuer: string
  jwksUri: string
  jwksRequests: number
  down: boolean
  /** sent as the JWKS answer's Cache-Control when set */
  cacheControl: string | undefined
  /** answers the JWKS with a redirect to this URL when set */
  redirectJwksTo: string | undefined
  kid: string
  /** Replaces the signing key with a fresh one under a new kid (the old one leaves the JWKS). */
  rotate (): void
  /** Signs with the current key; a claim given as undefined is left out (`iat: undefined` too, which fast-jwt would otherwise fill in). */
  mint (claims: Record<string, unknown>, header?: { alg?: 'ES256' | 'RS256', kid?: string, typ?: string }): string
  close (): Promise<void>
}

interface Key { kid: string, privateKey: KeyObject, publicKey: KeyObject }

function newKey (kid: string): Key {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  return { kid, privateKey, publicKey }
}

export interface IdpOptions {
  /** publish an RSA key beside the EC one, for RS256 tokens */
  rsa?: boolean
}

export async function startIdp (t: Test, audience = 'api', options: IdpOptions = {}): Promise<TestIdp> {
  let generation = 1
  let key = newKey('idp-1')
  const rsa = options.rsa === true ? { kid: 'idp-1-rsa', ...generateKeyPairSync('rsa', { modulusLength: 2048 }) } : undefined
  const idp: TestIdp = {
    issuer: '',
    jwksUri: '',
    jwksRequests: 0,
    down: false,
    cacheControl: undefined,
    redirectJwksTo: undefined,
    get kid () { return key.kid },
    rotate () { key = newKey(`idp-${++generation}`) },
    mint (claims, header = {}) {
      const now = Math.floor(Date.now() / 1000)
      const alg = header.alg ?? 'ES256'
      const signing = alg === 'RS256' && rsa !== undefined ? rsa : key
      const sign = createSigner({
        key: signing.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
        algorithm: alg,
        kid: header.kid ?? signing.kid,
        header: { alg, typ: header.typ ?? 'JWT' },
        noTimestamp: 'iat' in claims && claims.iat === undefined
      })
      return sign({ iss: idp.issuer, aud: audience, sub: 'ext-user-1', iat: now, exp: now + 300, jti: `j-${Math.random()}`, ...claims })
    },
    close: async () => { await new Promise<void>((resolve) => server.close(() => resolve())) }
  }
  const server: Server = createServer((req, res) => {
    if (idp.down) { res.writeHead(503).end(); return }
    if (req.url === '/.well-known/openid-configuration') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ issuer: idp.issuer, jwks_uri: idp.jwksUri }))
      return
    }
    if (req.url === '/jwks') {
      idp.jwksRequests++
      if (idp.redirectJwksTo !== undefined) { res.writeHead(302, { location: idp.redirectJwksTo }).end(); return }
      const keys = [{ ...key.publicKey.export({ format: 'jwk' }), kid: key.kid, alg: 'ES256', use: 'sig' }]
      if (rsa !== undefined) keys.push({ ...rsa.publicKey.export({ format: 'jwk' }), kid: rsa.kid, alg: 'RS256', use: 'sig' })
      res.writeHead(200, { 'content-type': 'application/json', ...(idp.cacheControl === undefined ? {} : { 'cache-control': idp.cacheControl }) })
      res.end(JSON.stringify({ keys }))
      return
    }
    res.writeHead(404).end()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  idp.issuer = `http://127.0.0.1:${port}`
  idp.jwksUri = `${idp.issuer}/jwks`
  t.teardown(() => idp.close())
  return idp
}
