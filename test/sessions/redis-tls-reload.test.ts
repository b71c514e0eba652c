import { spawn } from 'node:child_process'
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { PASSWORDS, writeTestConfig } from '../helpers/gateway.js'
import { startPrivateRedis, tlsTransport, uniquePrefix } from '../helpers/redis-server.js'
import { createThrowawayCa } from '../helpers/throwaway-ca.js'
import { closedPort } from '../helpers/upstream.js'
import { waitFor } from '../helpers/wait-for.js'

// The TLS files are read with the config, so a certificate renewed in place
// (cert-manager, a rotation script) takes effect on the next SIGHUP: the
// store is reopened with it, though not a word of the config changed.

const BIN = join(__dirname, '..', '..', 'bin', 'gateway.js')

t.test('SIGHUP after a client certificate is replaced at the same path: the gateway reaches Redis with the new one', async (t) => {
  const ca = createThrowawayCa(t, 'reload')
  const foreign = createThrowawayCa(t, 'reload-foreign')
  const redis = await startPrivateRedis({ transport: tlsTransport(ca, { authClients: true }) })
  t.teardown(redis.stop)
  const port = await closedPort()
  const { dir } = await writeTestConfig()
  mkdirSync(join(dir, 'tls'))
  copyFileSync(ca.ca, join(dir, 'tls', 'ca.pem'))
  const installClientCert = (from: typeof ca): void => {
    copyFileSync(from.client.cert, join(dir, 'tls', 'client.pem'))
    copyFileSync(from.client.key, join(dir, 'tls', 'client.key'))
  }
  // a certificate Redis does not accept: another CA signed it
  installClientCert(foreign)
  const file = join(dir, 'reload.yaml')
  writeFileSync(file, stringify({
    server: { host: '127.0.0.1', port },
    tokens: { algorithm: 'ES256', keys: [{ kid: 'k', privateKey: './signing.pem' }] },
    auth: { users: { file: './users.yaml' } },
    redis: {
      url: redis.url,
      tls: { ca: './tls/ca.pem', cert: './tls/client.pem', key: './tls/client.key' },
      keyPrefix: uniquePrefix('tls-reload'),
      connectTimeout: '500ms',
      commandTimeout: '500ms'
    },
    routes: []
  }))

  const child = spawn(process.execPath, [BIN, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let logs = ''
  let errors = ''
  child.stdout.on('data', (c) => { logs += String(c) })
  // read, so a full pipe never stalls the gateway; shown when the test fails
  child.stderr.on('data', (c) => { errors += String(c) })
  t.teardown(() => { if (!t.passing()) t.comment(`gateway exit ${child.exitCode ?? child.signalCode ?? 'none'}\nstdout:\n${logs}\nstderr:\n${errors}`) })
  await waitFor('the gateway listens', () => logs.includes('Server listening'), 200, 50)
  const login = async (): Promise<number> => (await fetch(`http://127.0.0.1:${port}/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: PASSWORDS.alice, transport: 'body' })
  })).status
  t.equal(await login(), 503, 'Redis refuses the foreign client certificate')

  installClientCert(ca)
  child.kill('SIGHUP')
  await waitFor('the reload is logged', () => logs.includes('configuration reloaded'), 200, 50)
  await waitFor('a login succeeds with the renewed certificate', async () => (await login()) === 200, 100, 100)
  t.pass('login works after the reload')

  const exit = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  child.kill('SIGTERM')
  t.equal(await exit, 0)
})
