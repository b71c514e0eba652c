import t from 'tap'
import { MemoryLoginThrottle } from '../../src/limits/login-throttle.js'

// The in-process login throttle as plain logic, on an explicit clock.

const budget = { accountMax: 2, addressMax: 3, windowMs: 1000 }
const from = (account: string, address = '10.0.0.1'): { account: string, address: string } => ({ account, address })

t.test('a spent account budget refuses until its window ends, and no longer', async (t) => {
  const throttle = new MemoryLoginThrottle(budget)
  t.same(await throttle.take(from('alice'), 0), { allowed: true })
  t.same(await throttle.take(from('alice'), 100), { allowed: true })
  t.same(await throttle.take(from('alice'), 400), { allowed: false, retryAfterMs: 600 })
  t.same(await throttle.take(from('alice'), 999), { allowed: false, retryAfterMs: 1 }, 'refusals do not extend the lock')
  t.same(await throttle.take(from('alice'), 1000), { allowed: true }, 'a new window')
})

t.test('a given-back attempt does not count; the address budget spans accounts', async (t) => {
  const throttle = new MemoryLoginThrottle(budget)
  for (let i = 0; i < 5; i++) {
    t.same(await throttle.take(from('bob'), i), { allowed: true })
    await throttle.giveBack(from('bob'), i)
  }
  await throttle.take(from('alice'), 10)
  await throttle.take(from('carol'), 10)
  await throttle.take(from('dave'), 10)
  t.same(await throttle.take(from('bob'), 20), { allowed: false, retryAfterMs: 990 }, 'the address is spent (its window began with the first failure, at 10; bob\'s successes started none)')
  t.same(await throttle.take(from('bob', '10.0.0.2'), 20), { allowed: true }, 'another address is not')
})

t.test('the window starts at the first failure, not at an earlier success', async (t) => {
  const throttle = new MemoryLoginThrottle(budget)
  t.same(await throttle.take(from('alice'), 0), { allowed: true })
  await throttle.giveBack(from('alice'), 0)
  t.same(await throttle.take(from('alice'), 900), { allowed: true }, 'first failure at 900')
  t.same(await throttle.take(from('alice'), 950), { allowed: true })
  t.same(await throttle.take(from('alice'), 1100), { allowed: false, retryAfterMs: 800 }, 'still locked past the success\'s window: the lock runs to 900 + 1000')
  t.same(await throttle.take(from('alice'), 1900), { allowed: true })
})

t.test('the counter map stays bounded under a spray of usernames', async (t) => {
  const throttle = new MemoryLoginThrottle({ accountMax: 1, addressMax: 1000, windowMs: 1000 }, 10)
  for (let i = 0; i < 50; i++) t.same(await throttle.take(from(`user-${i}`, `10.0.${i}.1`), 0), { allowed: true })
  // expired counters go first: after the window, everything is fresh again
  t.same(await throttle.take(from('user-49', '10.0.49.1'), 1000), { allowed: true })
})
