// Headers that describe one connection, not the message, and so never cross
// a proxy in either direction (RFC 9110 §7.6.1), plus whatever a message's own
// Connection header names.

export const HOP_BY_HOP_HEADERS = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade'] as const

/** The header names a Connection header lists, trimmed and lower-cased; a list header may come on several lines (RFC 9110 §5.3). */
export function connectionTokens (value: string | string[] | undefined): string[] {
  if (value === undefined) return []
  const list = Array.isArray(value) ? value.join(',') : value
  return list.split(',').map((token) => token.trim().toLowerCase()).filter((token) => token !== '')
}
