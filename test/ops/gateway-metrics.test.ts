import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { GatewayMetrics } from '../../src/ops/gateway-metrics.js'

// The README's metrics table is what operators build dashboards from: it
// lists exactly the metrics the gateway registers, with their labels.

const ROOT = join(__dirname, '..', '..')

t.test("the README's metrics table lists exactly the gateway's metrics and labels", async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')
  const section = readme.slice(readme.indexOf('**Metrics.**'), readme.indexOf('**Logs.**'))
  const rows = [...section.matchAll(/^\| `(tokengate_[a-z_]+)` \| ([^|]*) \|/gm)]
    .map((m) => [m[1], [...m[2].matchAll(/`([a-z_]+)`/g)].map((l) => l[1]).sort().join(',')] as const)
  t.ok(rows.length > 0, 'the table has rows')
  t.equal(new Set(rows.map(([name]) => name)).size, rows.length, 'no metric listed twice')
  // prom-client types these as MetricObject, which leaves out the labelNames every metric has.
  const registered = new GatewayMetrics().registry.getMetricsAsArray()
    .map((m) => [m.name, [...(m as unknown as { labelNames: string[] }).labelNames].sort().join(',')] as const)
  t.same(Object.fromEntries(rows), Object.fromEntries(registered))
})
