// A redirect from an upstream names a place on the upstream; the client must
// be sent to the same place through the gateway. @fastify/http-proxy rewrites
// a path-only Location (the upstream's rewritePrefix back to the route's
// prefix); an absolute one is left alone as external, which for a URL on one
// of the route's own targets would send the client straight to the target
// and show it the target's address. Those are rewritten here, to the path
// under the route's prefix, whichever target answered.

/** Mirrors @fastify/http-proxy's generateRewritePrefix, so both rewrites agree. */
function effectiveRewritePrefix (prefix: string, rewritePrefix: string): string {
  return !prefix.endsWith('/') && rewritePrefix.endsWith('/') ? rewritePrefix.slice(0, -1) : rewritePrefix
}

/** Returns the Location to send for one the upstream sent (unchanged unless it is an absolute URL on one of `origins`). */
export function targetLocationRewriter (origins: readonly string[], prefix: string, rewritePrefix: string): (location: string) => string {
  const own = new Set(origins)
  const from = effectiveRewritePrefix(prefix, rewritePrefix)
  return (location) => {
    if (!/^https?:\/\//i.test(location)) return location
    let url: URL
    try {
      url = new URL(location)
    } catch {
      return location
    }
    if (!own.has(url.origin)) return location
    // The same rewrite @fastify/http-proxy gives a path-only Location.
    return `${url.pathname}${url.search}${url.hash}`.replace(from, prefix)
  }
}
