import t from 'tap'
import type { Test } from 'tap'
import { MemoryStore } from '../../src/sessions/memory-store.js'
import { StoreUnavailableError } from '../../src/sessions/session-store.js'
import { ACCESS_TTL_MS, IDLE_MS, login, rotation, storeContract } from '../helpers/store-contract.js'

function makeStore (t: Test): Promise<MemoryStore> {
  const store = new MemoryStore()
  t.teardown(() => store.close())
  return Promise.resolve(store)
}

t.test('the store contract, in process', async (t) => {
  storeContract(t, makeStore)
})

t.test('the sweep forgets sessions, tokens, users and entries past their life', async (t) => {
  const store = await makeStore(t)
  const now = Date.now()
  const a = await login(store, { now })
  const r = rotation(a.token, now + 1)
  await store.rotate(r.input)
  await login(store, { now, sub: a.sub })
  const reused = await login(store, { now })
  await store.rotate(rotation(reused.token, now + 1).input)
  await store.rotate(rotation(reused.token, now + 2, { graceMs: 0 }).input)
  await store.revoke({ kind: 'jti', value: 'j', expiresAt: now + 10 })
  t.same(store.counts, { sessions: 2, tokens: 4, users: 1, deny: 2 })

  store.sweep(now + 5)
  t.same(store.counts, { sessions: 2, tokens: 3, users: 1, deny: 2 }, 'the reused family\'s tokens go with it')
  store.sweep(now + ACCESS_TTL_MS + 2)
  t.same(store.counts, { sessions: 2, tokens: 3, users: 1, deny: 0 })
  store.sweep(now + IDLE_MS + 1)
  t.same(store.counts, { sessions: 0, tokens: 0, users: 0, deny: 0 }, 'idle sessions and their tokens are gone')
})

t.test('a closed store refuses work with StoreUnavailableError', async (t) => {
  const store = new MemoryStore({ sweepIntervalMs: 10 })
  await store.close()
  await t.rejects(store.ping(), StoreUnavailableError)
  await t.rejects(store.rotate(rotation('x'.repeat(43), Date.now()).input), StoreUnavailableError)
})
