'use strict'
// The JS hot tier of reference reads (`referenceHotEntries`, lib/consumer.js):
// a hit kept as text beside the handler is still a fresh object per call, is
// counted, never outlives the native entry's freshness, and loses to every
// invalidation as soon as the native cache has it (the generation counter in
// shared memory), events and invalidate() alike.

const test = require('ava')

const { SmartCRMConsumer } = require('../lib/index.js')
const { setup, waitFor } = require('./helpers/fixture.js')

const ALICE = '/api/users/u-alice/profile'

/** Reads `id` `n` times; resolves to the last answer. */
async function readTimes(consumer, id, n) {
  let last
  for (let i = 0; i < n; i++) last = await consumer.getUserProfile(id)
  return last
}

test('hot hits are fresh objects, make no request and are counted as reference hits', async (t) => {
  const { sim, consumer } = await setup(t)
  t.not(consumer._hot, null, 'the hot tier is on by default')
  const expected = structuredClone(sim.data.profiles.get('u-alice'))
  const first = await consumer.getUserProfile('u-alice')
  const second = await consumer.getUserProfile('u-alice')
  t.is(consumer._hot[0].size, 1, 'the hit was admitted')
  second.name = 'Mallory'
  const third = await consumer.getUserProfile('u-alice')
  t.not(third, second)
  t.not(third, first)
  t.deepEqual(third, expected, 'mutating a hot hit left the tier alone')
  await readTimes(consumer, 'u-alice', 10)
  t.is(sim.count(ALICE), 1)
  const m = consumer.getMetrics()
  t.is(m.referenceMisses, 1)
  t.is(m.referenceHits, 12, 'hot hits count as hits')
  t.is(m.referenceHitRate, 12 / 13)
})

test('an invalidating event wins over the hot tier as soon as the native cache has it', async (t) => {
  const { sim, consumer, publish, event } = await setup(t)
  await readTimes(consumer, 'u-alice', 3)
  t.is(consumer._hot[0].size, 1)
  const fresh = { ...sim.data.profiles.get('u-alice'), title: 'VP Sales' }
  sim.data.profiles.set('u-alice', fresh)
  await publish('users', event('user-changed', { userId: 'u-alice', changedFields: ['title'] }))
  // The first moment the native entry is gone, a read must not see the old text.
  await waitFor(() => consumer.getCacheExpiry('user:u-alice') === null, {
    message: 'the event to drop the native entry',
  })
  t.deepEqual(await consumer.getUserProfile('u-alice'), fresh)
  t.is(sim.count(ALICE), 2)
})

test('invalidate() and a cache-invalidate event make hot entries unusable at once', async (t) => {
  const { sim, consumer, publish, event } = await setup(t)
  await readTimes(consumer, 'u-alice', 2)
  consumer.invalidate('user:u-alice')
  await readTimes(consumer, 'u-alice', 2)
  t.is(sim.count(ALICE), 2, 'invalidate() forced a fetch')

  await consumer.getHierarchy('org-1')
  await consumer.getHierarchy('org-1')
  await publish('cache', event('cache-invalidate', { keys: ['hierarchy:org-1'] }))
  await waitFor(() => consumer.getCacheExpiry('hierarchy:org-1') === null, {
    message: 'the cache-invalidate event to be applied',
  })
  await consumer.getHierarchy('org-1')
  t.is(sim.count('/api/hierarchy/org-1'), 2, 'the hierarchy is fetched again')
})

test('a hot entry is not used past the native entry’s TTL', async (t) => {
  const { sim, consumer } = await setup(t, { consumer: { ttl: { userProfiles: 300 } } })
  await readTimes(consumer, 'u-alice', 2)
  t.is(consumer._hot[0].size, 1)
  // Changed at the Wrapper without an event: only the TTL can bring it in.
  sim.data.profiles.set('u-alice', { ...sim.data.profiles.get('u-alice'), title: 'CTO' })
  await waitFor(async () => (await consumer.getUserProfile('u-alice')).title === 'CTO', {
    timeout: 5000,
    interval: 20,
    message: 'the expired entry to be fetched again',
  })
  t.is(sim.count(ALICE), 2)
})

test('with refreshAheadRatio a hot entry goes back to the native cache at its refresh point', async (t) => {
  const { sim, consumer } = await setup(t, {
    consumer: { ttl: { userProfiles: 1000 }, refreshAheadRatio: 0.3 },
  })
  await readTimes(consumer, 'u-alice', 2)
  await waitFor(
    async () => {
      await consumer.getUserProfile('u-alice')
      return sim.count(ALICE) === 2
    },
    { timeout: 5000, interval: 20, message: 'a background refresh, which only a native hit asks' },
  )
  t.is(consumer.getMetrics().referenceMisses, 1, 'no miss')
})

test('a full tier keeps answering correctly and stays within its size', async (t) => {
  const { sim, consumer } = await setup(t, { consumer: { referenceHotEntries: 2 } })
  const ids = [...sim.data.profiles.keys()]
  t.is(ids.length, 3, 'the seed has 3 profiles')
  for (let round = 0; round < 20; round++) {
    for (const id of ids) t.deepEqual(await consumer.getUserProfile(id), sim.data.profiles.get(id))
  }
  t.true(consumer._hot[0].size <= 2)
  for (const id of ids) t.is(sim.count(`/api/users/${id}/profile`), 1)
  t.is(consumer.getMetrics().referenceHits, 3 * 19)
})

test('referenceHotEntries: 0 turns the tier off; reads still hit the native cache', async (t) => {
  const { sim, consumer } = await setup(t, { consumer: { referenceHotEntries: 0 } })
  t.is(consumer._hot, null)
  await readTimes(consumer, 'u-alice', 3)
  t.is(sim.count(ALICE), 1)
  t.is(consumer.getMetrics().referenceHits, 2)
})

test('referenceHotEntries is validated, naming it', (t) => {
  const base = { tenantId: 't', wrapperUrl: 'http://127.0.0.1:9' }
  for (const bad of [-1, 1.5, 65_537]) {
    t.throws(() => new SmartCRMConsumer({ ...base, referenceHotEntries: bad }), {
      instanceOf: RangeError,
      message: /referenceHotEntries/,
    })
  }
  t.throws(() => new SmartCRMConsumer({ ...base, referenceHotEntries: '256' }), {
    instanceOf: TypeError,
    message: /referenceHotEntries/,
  })
})

for (const hot of [256, 0]) {
  test(`non-ASCII texts survive every hit path (referenceHotEntries: ${hot})`, async (t) => {
    // ASCII texts cross as Latin-1 strings, others as UTF-8 (src/lib.rs
    // RefText): a value with Latin-1, other BMP and astral characters must
    // come back the same from the native hit and from the hot tier.
    const { sim, consumer } = await setup(t, { consumer: { referenceHotEntries: hot } })
    const value = { userId: 'u-intl', name: 'Zoë Ångström', city: '東京', mood: '😀', quote: '"\\' }
    sim.data.profiles.set('u-intl', value)
    const answers = []
    for (let i = 0; i < 4; i++) answers.push(await consumer.getUserProfile('u-intl'))
    for (const a of answers) t.deepEqual(a, value)
    t.is(sim.count('/api/users/u-intl/profile'), 1)
    t.is(consumer.getMetrics().referenceHits, 3)
    if (hot) t.is(consumer._hot[0].size, 1, 'the hot tier holds it')
  })
}
