import { readFileSync } from 'node:fs'

// Where a V8 CPU profile (node --cpu-prof, or BENCH_PROFILE=DIR npm run bench)
// spends its busy time: by package, and by function. Node's own and native
// frames are charged to the nearest package up their stack, so "node core <-
// undici" is socket work undici asked for. Idle samples are left out.
//
//   node dist/bench/profile-summary.js FILE.cpuprofile [how many functions]

interface CallFrame { functionName: string, url: string, lineNumber: number }
interface ProfileNode { id: number, callFrame: CallFrame, children?: number[] }
interface CpuProfile { nodes: ProfileNode[], samples: number[] }

function owner (url: string): string {
  if (url === '') return '(native)'
  const pkg = /node_modules\/((@[^/]+\/)?[^/]+)/.exec(url)
  if (pkg !== null) return pkg[1]
  if (url.startsWith('node:')) return 'node core'
  const ours = /\/dist\/(.+)$/.exec(url)
  return ours === null ? url : `tokengate ${ours[1]}`
}

const isRuntime = (name: string): boolean => name === 'node core' || name === '(native)'

export function summarise (profile: CpuProfile, top: number): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const selfSamples = new Map<number, number>()
  for (const id of profile.samples) selfSamples.set(id, (selfSamples.get(id) ?? 0) + 1)

  let busy = 0
  const byPackage = new Map<string, number>()
  const byFunction = new Map<string, number>()
  const add = (map: Map<string, number>, key: string, n: number): void => { map.set(key, (map.get(key) ?? 0) + n) }
  for (const [id, count] of selfSamples) {
    const node = byId.get(id)
    if (node === undefined || node.callFrame.functionName === '(idle)') continue
    busy += count
    const frame = node.callFrame
    let name = owner(frame.url)
    if (isRuntime(name)) {
      for (let up = parent.get(node.id); up !== undefined; up = parent.get(up)) {
        const above = owner(byId.get(up)?.callFrame.url ?? '')
        if (!isRuntime(above)) {
          name = `${name} <- ${above}`
          break
        }
      }
    }
    add(byPackage, name, count)
    add(byFunction, `${frame.functionName === '' ? '(anonymous)' : frame.functionName} (${owner(frame.url)}:${frame.lineNumber + 1})`, count)
  }
  const table = (map: Map<string, number>, limit: number): string[] => [...map]
    .sort((a, b) => b[1] - a[1]).slice(0, limit)
    .map(([key, n]) => `${(100 * n / busy).toFixed(1).padStart(5)} %  ${key}`)
  return [`${busy} busy samples`, '', 'by package:', ...table(byPackage, 30), '', 'by function:', ...table(byFunction, top)].join('\n')
}

if (require.main === module) {
  const [file, top] = process.argv.slice(2)
  if (file === undefined) {
    console.error('usage: node dist/bench/profile-summary.js FILE.cpuprofile [how many functions]')
    process.exitCode = 2
  } else {
    console.log(summarise(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, Number(top ?? 40)))
  }
}
