import t, { type Test } from 'tap'
import { TargetSet, type UpstreamTarget } from '../../src/proxy/upstream-targets.js'

// The target set's clock is the `now` its callers pass (performance.now() in
// the gateway), so back-off is tested here by passing times, not by sleeping:
// how long each ejection lasts, when the trial request may go, and what a
// success or the health check's verdict does to it.

const EJECT_FOR = 1000

function oneTarget (t: Test): { set: TargetSet, target: UpstreamTarget, ejections: () => number } {
  const set = new TargetSet(['http://127.0.0.1:1'], { balance: 'round-robin', ejectAfter: 2, ejectFor: EJECT_FOR })
  t.teardown(() => set.close())
  const target = set.targets[0]
  let ejections = 0
  target.observer = { request () {}, failure () {}, ejection () { ejections++ } }
  return { set, target, ejections: () => ejections }
}

t.test('each failed trial doubles the ejection, up to 32 × ejectFor; an answer resets it', async (t) => {
  const { set, target, ejections } = oneTarget(t)
  let now = 10_000
  set.failed(target, now)
  t.equal(target.up, 1, 'one failure is below ejectAfter')
  set.failed(target, now)
  t.equal(target.up, 0, 'ejectAfter failures in a row eject it')

  const lengths: number[] = []
  for (let i = 0; i < 8; i++) {
    const length = target.ejectedUntil - now
    lengths.push(length / EJECT_FOR)
    t.equal(set.pick(now + length - 1), null, 'no request before the ejection is over (the circuit is open)')
    t.equal(set.retryAfter(now), Math.ceil(length / 1000), 'Retry-After says when the trial is due')
    now += length
    t.equal(set.pick(now), target, 'the trial request goes once it is over')
    t.equal(set.pick(now), null, 'one trial at a time')
    set.failed(target, now)
  }
  t.same(lengths, [1, 2, 4, 8, 16, 32, 32, 32], 'doubling, capped at 32 ×')
  t.equal(ejections(), 9)

  now += target.ejectedUntil - now
  t.equal(set.pick(now), target)
  set.succeeded(target)
  t.equal(target.up, 1, 'the trial answered: back in')
  set.failed(target, now)
  set.failed(target, now)
  t.equal((target.ejectedUntil - now) / EJECT_FOR, 1, 'the next ejection starts from ejectFor again')
})

t.test('a target the health check holds out gets no trial and is not readmitted by an answer; restore brings it back', async (t) => {
  const { set, target, ejections } = oneTarget(t)
  const now = 10_000
  set.markUnhealthy(target, now + 4000)
  t.equal(target.up, 0)
  t.equal(ejections(), 1)
  t.equal(set.retryAfter(now), 4, 'Retry-After is when the check could let it back')
  t.equal(set.pick(now + 60 * EJECT_FOR), null, 'no passive trial, however long it has been out')
  set.succeeded(target)
  t.equal(target.up, 0, 'an answer to a request sent before the verdict does not overturn it')
  set.failed(target, now)
  t.equal(ejections(), 1, 'a failure while held out is not another ejection')
  set.markUnhealthy(target, now + 2000)
  t.equal(ejections(), 1, 'the check confirming its verdict is not another ejection')
  set.restore(target)
  t.equal(target.up, 1)
  t.equal(set.pick(now), target)
})
