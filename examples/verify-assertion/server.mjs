// An upstream that trusts the gateway's signed assertion, not the network.
import { createServer } from 'node:http'
import { createRemoteJWKSet, jwtVerify } from 'jose'

const port = Number(process.env.PORT ?? 3100) // npm start's demo upstream has 3001
const jwks = createRemoteJWKSet(new URL(process.env.JWKS_URL ?? 'http://127.0.0.1:8080/.well-known/jwks.json'))
const audience = process.env.AUDIENCE ?? `http://127.0.0.1:${port}` // the route's upstream origin: this server

createServer(async (req, res) => {
  try {
    const { payload } = await jwtVerify(req.headers['x-tokengate-assertion'] ?? '', jwks, {
      issuer: 'tokengate', audience, typ: 'tokengate-assertion+jwt', algorithms: ['ES256', 'RS256', 'EdDSA']
    })
    res.end(JSON.stringify({ sub: payload.sub, roles: payload.roles, scope: payload.scope }))
  } catch {
    res.writeHead(401).end()
  }
}).listen(port, '127.0.0.1')
