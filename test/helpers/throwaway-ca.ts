import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'

// A certificate authority made with the openssl CLI for one test file, in a
// temp dir removed when the test ends: a Redis server certificate for
// 127.0.0.1 and localhost, and a client certificate, as an ops team with a
// private CA would hand them out. EC P-256 keys: quick to make.

/** PEM files of one certificate and its private key. */
export interface CertFiles { cert: string, key: string }

export interface ThrowawayCa {
  /** the CA certificate (PEM file), what redis.tls.ca names */
  ca: string
  /** for redis-server: SAN IP:127.0.0.1 and DNS:localhost; Redis also presents it as a client (replication, cluster bus) */
  server: CertFiles
  /** a client certificate for the gateway (redis.tls.cert / redis.tls.key) */
  client: CertFiles
}

const OPENSSL = '/usr/bin/openssl'
const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

export interface ThrowawayCaOptions {
  /** the server certificate's subjectAltName; default IP:127.0.0.1 and DNS:localhost (keep DNS:localhost: the test helpers check it) */
  serverNames?: string[]
}

export function createThrowawayCa (t: Test, label: string, opts: ThrowawayCaOptions = {}): ThrowawayCa {
  const dir = mkdtempSync(join(tmpdir(), `tokengate-ca-${label}-`))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = (name: string): string => join(dir, name)
  const openssl = (args: string[]): void => { execFileSync(OPENSSL, args, { stdio: 'pipe' }) }

  openssl(['req', '-x509', ...EC_KEY, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2',
    '-subj', `/CN=tokengate test CA ${label}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
  const issue = (name: string, subject: string, extensions: string[]): CertFiles => {
    const ext = file(`${name}.ext`)
    writeFileSync(ext, [...extensions, 'basicConstraints=CA:FALSE', 'authorityKeyIdentifier=keyid', 'subjectKeyIdentifier=hash', ''].join('\n'))
    openssl(['req', '-new', ...EC_KEY, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', subject])
    openssl(['x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-set_serial', `0x${randomBytes(8).toString('hex')}`,
      '-days', '2', '-extfile', ext, '-out', file(`${name}.pem`)])
    return { cert: file(`${name}.pem`), key: file(`${name}.key`) }
  }
  return {
    ca: file('ca.pem'),
    // no extendedKeyUsage: a replica and a cluster node present this one as a client too
    server: issue('server', '/CN=localhost', [`subjectAltName=${(opts.serverNames ?? ['IP:127.0.0.1', 'DNS:localhost']).join(',')}`]),
    client: issue('client', '/CN=tokengate', ['extendedKeyUsage=clientAuth'])
  }
}
