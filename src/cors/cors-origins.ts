// Which browser origins may read the gateway's answers. An entry is an exact
// origin (`https://app.example.com`, `http://localhost:5173`) or a pattern
// whose leftmost host labels are `*` (`https://*.example.com`): the wildcard
// stands for one or more whole DNS labels, never for part of one, so
// `https://app.example.com.evil.test` or `https://evilexample.com` can never
// match. Scheme and port are always compared exactly. `null` (sandboxed
// frames, file: pages, redirects) is never trusted: anyone can send it.

/** Tells whether an Origin request header names a trusted origin. */
export type OriginMatcher = (origin: string) => boolean

const EXACT = /^(https?):\/\/([a-z0-9-]+(?:\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$/
const PATTERN = /^(https?):\/\/\*\.([a-z0-9-]+(?:\.[a-z0-9-]+)+)(?::(\d{1,5}))?$/
const LABELS = /^[a-z0-9-]+(?:\.[a-z0-9-]+)*$/

/** Why an origins entry is refused, or null when it is usable. */
export function originEntryProblem (entry: string): string | null {
  if (entry === '*') return null
  if (entry === 'null') return 'may not be "null": any sandboxed page or file: URL sends that origin'
  if (entry !== entry.toLowerCase()) return 'must be lower case, as browsers send origins'
  if (entry.endsWith('/')) return 'must be an origin without a trailing slash or path, e.g. https://app.example.com'
  const exact = EXACT.exec(entry)
  const pattern = exact === null ? PATTERN.exec(entry) : null
  const port = (exact ?? pattern)?.[3]
  if (exact === null && pattern === null) {
    return entry.includes('*')
      ? 'a wildcard may only stand for whole leftmost host labels, as in https://*.example.com'
      : 'must be an origin: http(s)://host[:port], no path, query or userinfo'
  }
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535 || port.startsWith('0'))) return 'has an invalid port'
  if (port !== undefined && ((exact ?? pattern)?.[1] === 'https' ? port === '443' : port === '80')) return 'names the default port: browsers leave it out of the Origin header, so this never matches'
  return null
}

/** Compiles checked entries (see originEntryProblem) into one matcher. */
export function compileOrigins (entries: readonly string[]): OriginMatcher {
  if (entries.includes('*')) return () => true
  const exact = new Set<string>()
  const suffixes: Array<{ scheme: string, suffix: string, port: string }> = []
  for (const entry of entries) {
    const pattern = PATTERN.exec(entry)
    if (pattern === null) exact.add(entry)
    else suffixes.push({ scheme: `${pattern[1]}://`, suffix: `.${pattern[2]}`, port: pattern[3] === undefined ? '' : `:${pattern[3]}` })
  }
  if (suffixes.length === 0) return (origin) => exact.has(origin)
  return (origin) => {
    if (exact.has(origin)) return true
    for (const { scheme, suffix, port } of suffixes) {
      if (!origin.startsWith(scheme)) continue
      const rest = origin.slice(scheme.length)
      const host = port === '' ? rest : rest.endsWith(port) ? rest.slice(0, -port.length) : null
      if (host === null || host.includes(':') || !host.endsWith(suffix)) continue
      const labels = host.slice(0, -suffix.length)
      if (LABELS.test(labels)) return true
    }
    return false
  }
}
