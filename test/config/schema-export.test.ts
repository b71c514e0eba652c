import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { editorJsonSchema } from '../../src/config/schema.js'

// Editors read gateway.config.schema.json; it must be the schema the gateway
// validates with, so a change to one without the other fails here.
const ROOT = join(__dirname, '..', '..')

t.test('the committed JSON Schema is the one the gateway validates with', async (t) => {
  const committed = JSON.parse(readFileSync(join(ROOT, 'gateway.config.schema.json'), 'utf8'))
  t.same(committed, editorJsonSchema(), 'run `npm run schema` after changing src/config/schema.ts')
  t.equal(committed.additionalProperties, false)
  t.equal(committed.properties.routes.items.additionalProperties, false)
})

t.test('`gateway schema` prints it', async (t) => {
  const run = spawnSync(process.execPath, [join(ROOT, 'bin', 'gateway.js'), 'schema'], { encoding: 'utf8' })
  t.equal(run.status, 0)
  t.same(JSON.parse(run.stdout), JSON.parse(readFileSync(join(ROOT, 'gateway.config.schema.json'), 'utf8')))
})

t.test('keys with defaults are not required of the person writing the file', async (t) => {
  const schema = editorJsonSchema() as { required: string[], properties: { routes: { items: { required: string[] } } } }
  t.same(schema.required.sort(), ['auth', 'tokens'])
  t.same(schema.properties.routes.items.required.sort(), ['prefix', 'upstream'])
})
