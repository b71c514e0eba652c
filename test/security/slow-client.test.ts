import { connect } from 'node:net'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { startGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'

// A client that trickles its request (slowloris) must not hold a connection
// open forever: past server.requestTimeout the gateway answers 408 and closes.

t.test('a request trickled slower than server.requestTimeout is cut with 408 and forwards nothing', async (t) => {
  const up = await startUpstream(t)
  const { app } = await startGateway(t, { server: { requestTimeout: '1s' }, routes: [{ prefix: '/public', upstream: up.url, auth: 'none' }] })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as AddressInfo).port
  const answer = await new Promise<string>((resolve) => {
    const socket = connect(port, '127.0.0.1')
    let data = ''
    const drip = setInterval(() => { if (!socket.destroyed) socket.write('X-Slow: 1\r\n') }, 300)
    socket.on('data', (c) => { data += String(c) })
    socket.on('close', () => { clearInterval(drip); resolve(data) })
    socket.on('error', () => { /* close follows */ })
    socket.write('GET /public/x HTTP/1.1\r\nHost: gw\r\n')
    setTimeout(() => socket.destroy(), 20_000).unref()
  })
  t.match(answer, /^HTTP\/1\.1 408/)
  t.equal(up.seen.length, 0)
})
