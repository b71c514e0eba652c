// Durations in the config are strings like `15m` or `14d`; everything inside
// the gateway works in milliseconds.

export const DURATION_PATTERN = '^[0-9]+(ms|s|m|h|d)$'

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const DURATION_RE = new RegExp(DURATION_PATTERN)

export function parseDuration (value: string): number {
  const match = DURATION_RE.exec(value)
  if (match === null) throw new TypeError(`not a duration: ${JSON.stringify(value)}`)
  return Number(value.slice(0, -match[1].length)) * UNIT_MS[match[1]]
}

export function durationSeconds (value: string): number {
  return Math.ceil(parseDuration(value) / 1000)
}
