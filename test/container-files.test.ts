import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { parse } from 'yaml'
import { checkConfig } from '../src/config/load-config.js'

// No Docker engine runs here, so the container files are checked as text:
// compose parses, references what exists, and the image starts the gateway
// the way `npm start` does.

const ROOT = join(__dirname, '..')
interface Service { build?: string, image?: string, command?: string[], entrypoint?: string[], environment?: Record<string, string>, volumes?: string[], healthcheck?: { test?: string[], disable?: boolean }, depends_on?: Record<string, unknown> }
const compose = parse(readFileSync(join(ROOT, 'docker-compose.yml'), 'utf8')) as { services: Record<string, Service>, volumes: Record<string, unknown> }
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }

t.test('compose runs the gateway, Redis with AOF persistence, and the demo upstream, each with a healthcheck', async (t) => {
  // keys is a one-shot job (see below): it exits, so it has nothing to check
  t.same(Object.keys(compose.services).sort(), ['echo', 'gateway', 'keys', 'redis'])
  for (const [name, service] of Object.entries(compose.services)) {
    if (name === 'keys') t.equal(service.healthcheck?.disable, true, 'the one-shot keys job turns the image\'s healthcheck off')
    else t.ok(service.healthcheck?.test?.length, `${name} has a healthcheck`)
  }
  const redis = compose.services.redis
  t.match(redis.image, /^redis:7/)
  t.ok(redis.command?.includes('--appendonly') && redis.command[redis.command.indexOf('--appendonly') + 1] === 'yes', 'AOF on')
  t.ok(redis.volumes?.some((v) => v.endsWith(':/data')), 'Redis data on a volume')
  t.ok('redis-data' in compose.volumes)
  const gateway = compose.services.gateway
  t.equal(gateway.environment?.REDIS_URL, 'redis://redis:6379')
  t.same(Object.keys(gateway.depends_on ?? {}).sort(), ['echo', 'keys', 'redis'])
})

t.test('the signing key is made once in a volume the image\'s user owns, before the gateway starts', async (t) => {
  const { keys, gateway } = compose.services
  t.same(gateway.depends_on?.keys, { condition: 'service_completed_successfully' })
  t.ok('gateway-keys' in compose.volumes)
  t.ok(keys.volumes?.includes('gateway-keys:/app/keys'), 'keys writes into the volume')
  t.ok(gateway.volumes?.includes('gateway-keys:/app/keys:ro'), 'the gateway reads it, read-only')
  // the same command npm start's prestart runs, so the key is where the example config looks
  t.ok(pkg.scripts.prestart.includes((keys.entrypoint ?? []).join(' ')), 'keys runs the prestart\'s keygen')
  t.match(dockerfile, /^RUN mkdir keys && chown node:node keys$/m, 'the image\'s keys folder belongs to node, so a new volume does too')
  t.ok(dockerfile.indexOf('chown node:node keys') < dockerfile.indexOf('USER node'), 'made before the image drops root')
})

t.test('what compose mounts and runs exists in the repo', async (t) => {
  for (const service of Object.values(compose.services)) {
    if (service.build !== undefined) t.ok(existsSync(join(ROOT, service.build, 'Dockerfile')), 'build context has a Dockerfile')
    for (const volume of service.volumes ?? []) {
      const [source] = volume.split(':')
      if (source.startsWith('./')) t.ok(existsSync(join(ROOT, source)), `${source} exists`)
    }
  }
  const echoEntry = compose.services.echo.entrypoint ?? []
  const script = echoEntry[1]
  t.ok(existsSync(join(ROOT, script.replace(/^dist\//, '').replace(/\.js$/, '.ts'))), `${script} is built from a source file`)
})

t.test('the example config is valid with the environment compose gives it', async (t) => {
  const env = compose.services.gateway.environment ?? {}
  const { issues } = checkConfig(join(ROOT, 'gateway.config.yaml'), { ...env, REDIS_URL: env.REDIS_URL })
  // The signing key is generated at deploy time (README), so only its absence may be reported.
  t.same(issues.map((i) => i.path).filter((p) => p !== 'tokens.keys[0].privateKey'), [])
})

t.test('the image is multi-stage, runs as non-root with production dependencies, and starts like npm start', async (t) => {
  t.equal(dockerfile.match(/^FROM /gm)?.length, 2)
  // bin/gateway.js refuses Node before 22.13, so an older base image would build a container that never starts.
  const ciLines = /lines=\$\{TOKENGATE_CI_NODE_LINES:-([\d ]+)\}/.exec(readFileSync(join(ROOT, '.ci', 'run'), 'utf8'))?.[1].split(' ') ?? []
  const bases = [...dockerfile.matchAll(/^FROM node:(\d+)-/gm)].map((m) => m[1])
  t.same(bases, [ciLines[0], ciLines[0]], 'both stages run the newest line CI tests on')
  t.ok(Number(ciLines[0]) >= 22 && Number(ciLines.at(-1)) >= 22, 'CI tests supported lines only')
  t.match(dockerfile, /npm ci --omit=dev/)
  t.match(dockerfile, /^USER node$/m)
  const entrypoint = JSON.parse(/^ENTRYPOINT (.*)$/m.exec(dockerfile)?.[1] ?? '[]') as string[]
  const cmd = JSON.parse(/^CMD (.*)$/m.exec(dockerfile)?.[1] ?? '[]') as string[]
  t.equal([...entrypoint, ...cmd].join(' '), pkg.scripts.start)
})

t.test('the README names every compose service', async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  for (const name of Object.keys(compose.services)) t.match(readme, new RegExp(`\\b${name}\\b`), name)
  t.match(readme, 'docker compose up')
})
