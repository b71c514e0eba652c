import calculateSlot from 'cluster-key-slot'

// The Redis Cluster hash slot of a key, computed by the same library ioredis
// routes commands with, so that keys grouped by slot here are the keys
// ioredis sends to one node. Used to group keys before a call, so that each
// call stays in one slot.

export function keySlot (key: string): number {
  return calculateSlot(key)
}
