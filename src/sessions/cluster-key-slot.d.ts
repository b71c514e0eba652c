// cluster-key-slot ships no types; it is what ioredis itself routes by.
declare module 'cluster-key-slot' {
  /** The Redis Cluster hash slot of a key (its hash tag's, when it has one). */
  function generate (key: string): number
  export = generate
}
