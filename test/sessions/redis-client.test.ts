import { once } from 'node:events'
import t from 'tap'
import { closeClient, createRedisClient } from '../../src/sessions/redis-client.js'
import { SHARED_REDIS_URL } from '../helpers/redis-server.js'

// ioredis takes its socket's 'error' once; a socket that errs a second time
// (a refused TLS client certificate: an alert, then a reset) used to throw
// that error out of the event loop and end the gateway.

t.test('a second error on a client\'s socket is not thrown out of the process; the client reconnects and answers', { timeout: 15_000 }, async (t) => {
  const client = createRedisClient({ url: SHARED_REDIS_URL }, { retryStrategy: () => 50, maxRetriesPerRequest: 1 })
  client.on('error', () => { /* the first error is reported here, as ioredis does */ })
  t.teardown(() => closeClient(client))
  await once(client, 'ready')
  const socket = client.stream
  t.doesNotThrow(() => {
    socket.emit('error', Object.assign(new Error('tlsv13 alert certificate required'), { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' }))
    socket.emit('error', Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }))
  }, 'both errors are taken')
  // the reset closes the socket, as a real one does
  const back = once(client, 'ready')
  socket.destroy()
  await back
  t.not(client.stream, socket, 'on a new connection')
  t.equal(await client.ping(), 'PONG')
})
