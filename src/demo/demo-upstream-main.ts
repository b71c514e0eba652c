import { listenEchoUpstream } from './demo-upstream.js'

// Runs the demo echo upstream on its own, for docker-compose.yml.
const host = process.env.HOST ?? '127.0.0.1'
const port = Number(process.env.PORT ?? 3001)
listenEchoUpstream(host, port).then(() => {
  console.log(`demo echo upstream listening on http://${host}:${port}`)
}, (err: unknown) => {
  console.error(err)
  process.exitCode = 1
})
process.on('SIGTERM', () => process.exit(0))
