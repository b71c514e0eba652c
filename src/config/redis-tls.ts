import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { GatewayConfig } from './schema.js'
import type { KeyPath } from './yaml-source.js'

// The files redis.tls names are read and checked once, with the config: a
// missing or wrong file refuses to start at its key (file:line:col), instead
// of failing every Redis connection later with a TLS error.

/**
 * TLS for every Redis connection, as Node's tls.connect takes it (PEM text).
 * An empty object is TLS checked against the public CAs.
 */
export interface RedisTls {
  /** replaces the public CAs: only these sign Redis's certificate */
  ca?: string
  cert?: string
  key?: string
  servername?: string
}

type Report = (path: KeyPath, message: string) => void

/** PKCS#8 encrypted, or the older OpenSSL form with its Proc-Type header */
const ENCRYPTED_KEY = /-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: 4,ENCRYPTED/
const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----/g

/**
 * The TLS the config asks for (a rediss:// url asks for it too); undefined
 * when there is none, or when a problem with it was reported.
 */
export function loadRedisTls (redis: GatewayConfig['redis'], baseDir: string, report: Report): RedisTls | undefined {
  const rediss = /^rediss:\/\//i.test(redis.url)
  if (redis.tls === false && rediss) {
    report(['redis', 'tls'], 'is false, but redis.url is rediss:// (TLS)')
    return undefined
  }
  if (redis.tls === undefined || redis.tls === false) return rediss ? {} : undefined
  if (redis.tls === true) return {}

  const { ca, cert, key, servername } = redis.tls
  let ok = true
  const fail = (field: string, message: string): undefined => {
    report(['redis', 'tls', field], message)
    ok = false
    return undefined
  }
  const read = (field: string, file: string): string | undefined => {
    const path = resolve(baseDir, file)
    try {
      return readFileSync(path, 'utf8')
    } catch (err) {
      return fail(field, `cannot be read: ${(err as NodeJS.ErrnoException).code ?? String(err)} (${path})`)
    }
  }
  const certificates = (field: string, file: string): { pem: string, first: X509Certificate } | undefined => {
    const pem = read(field, file)
    if (pem === undefined) return undefined
    const blocks = pem.match(PEM_CERTIFICATE) ?? []
    if (blocks.length === 0) return fail(field, `is not a PEM file of certificates (${resolve(baseDir, file)})`)
    try {
      const parsed = blocks.map((b) => new X509Certificate(b))
      return { pem: blocks.join('\n'), first: parsed[0]! }
    } catch {
      return fail(field, `holds a certificate that cannot be parsed (${resolve(baseDir, file)})`)
    }
  }

  const out: RedisTls = servername === undefined ? {} : { servername }
  if (ca !== undefined) out.ca = certificates('ca', ca)?.pem
  if ((cert === undefined) !== (key === undefined)) {
    if (cert !== undefined) fail('cert', 'needs redis.tls.key, the private key of the client certificate')
    else fail('key', 'needs redis.tls.cert, the client certificate it is the key of')
  } else if (cert !== undefined && key !== undefined) {
    const chain = certificates('cert', cert)
    const pem = read('key', key)
    let privateKey: KeyObject | undefined
    if (pem !== undefined) {
      if (ENCRYPTED_KEY.test(pem)) {
        fail('key', `is encrypted: give the gateway the key unencrypted, in a file only it can read (${resolve(baseDir, key)})`)
      } else {
        try {
          privateKey = createPrivateKey(pem)
        } catch {
          fail('key', `is not a PEM private key (${resolve(baseDir, key)})`)
        }
      }
    }
    if (chain !== undefined && privateKey !== undefined) {
      if (chain.first.checkPrivateKey(privateKey)) Object.assign(out, { cert: chain.pem, key: pem })
      else fail('key', 'is not the private key of redis.tls.cert')
    }
  }
  return ok ? out : undefined
}
