'use strict'
// Batch reads (SPEC §10): getUserProfiles(ids) — order and nulls, one batch
// request for the misses (at most 100 ids each), hits not requested, the
// fallback to single reads (at most 8 at a time) for a Wrapper without the
// endpoint, single-flight and invalidation-wins per id, whole-batch failures,
// argument checks, metrics, and the test double.

const test = require('ava')

const { setup, waitFor } = require('./helpers/fixture.js')
const { createTestConsumer } = require('../lib/testing.js')

const BATCH = '/api/users/profiles'
const ALICE = '/api/users/u-alice/profile'
/** Single profile requests (not the batch endpoint). */
const single = (r) => /^\/api\/users\/[^/]+\/profile$/.test(r.path)
/** The ids a batch request asked for, decoded. */
const idsOf = (r) =>
  new URL(r.path, 'http://x').search.slice('?ids='.length).split(',').map(decodeURIComponent)
const batches = (sim) => sim.requests.filter((r) => r.path.startsWith(`${BATCH}?`))

test('order, nulls for unknown users, duplicates, fresh objects; one batch request', async (t) => {
  const { sim, consumer } = await setup(t)
  const alice = sim.data.profiles.get('u-alice')
  const bob = sim.data.profiles.get('u-bob')
  sim.resetCounts()
  const before = consumer.getMetrics()

  const ids = ['u-bob', 'nobody', 'u-alice', 'u-bob']
  const got = await consumer.getUserProfiles(ids)
  t.deepEqual(got, [bob, null, alice, bob])
  t.not(got[0], got[3], 'each position is its own object')
  t.is(batches(sim).length, 1, 'one batch request')
  t.deepEqual(idsOf(batches(sim)[0]).sort(), ['nobody', 'u-alice', 'u-bob'])
  t.is(sim.count(single), 0, 'no single request')
  let m = consumer.getMetrics()
  t.is(m.referenceMisses - before.referenceMisses, 3, 'a miss per distinct id')

  got[2].title = 'mutated'
  // Everything is now held, including the unknown user (as a remembered 404).
  const again = await consumer.getUserProfiles(ids)
  t.deepEqual(again, [bob, null, alice, bob], 'the cache was not mutated')
  t.is(sim.requests.length, 1, 'hits only: nothing more requested')
  m = consumer.getMetrics()
  t.is(m.referenceHits - before.referenceHits, 3, 'a hit per distinct id')
  t.is(typeof consumer.getCacheExpiry('user:u-alice'), 'number', 'batch answers are cached')
  await t.throwsAsync(consumer.getUserProfile('nobody'), { code: 'NOT_FOUND' })
  t.is(sim.count(single), 0, 'the unknown user is remembered as a 404')

  t.deepEqual(await consumer.getUserProfiles([]), [], 'an empty array needs nothing')
})

test('hits are not requested; ids are percent-encoded', async (t) => {
  const { sim, consumer } = await setup(t)
  const odd = 'a,b/c d?'
  sim.data.profiles.set(odd, { userId: odd, name: 'Odd' })
  await consumer.getUserProfile('u-alice')
  sim.resetCounts()

  const got = await consumer.getUserProfiles(['u-alice', odd, 'u-bob'])
  t.is(got[0].userId, 'u-alice')
  t.deepEqual(got[1], { userId: odd, name: 'Odd' })
  t.is(got[2].userId, 'u-bob')
  t.is(sim.requests.length, 1)
  const [req] = batches(sim)
  t.true(req.path.includes('a%2Cb%2Fc%20d%3F'), req.path)
  t.deepEqual(idsOf(req).sort(), [odd, 'u-bob'].sort(), 'the hit is not asked for')
})

test('at most 100 ids per batch request', async (t) => {
  const { sim, consumer } = await setup(t)
  const ids = Array.from({ length: 250 }, (_, i) => `bulk-${i}`)
  for (const id of ids.slice(0, 240)) sim.data.profiles.set(id, { userId: id })
  sim.resetCounts()

  const got = await consumer.getUserProfiles(ids)
  t.is(got.length, 250)
  for (let i = 0; i < 250; i++) t.deepEqual(got[i], i < 240 ? { userId: ids[i] } : null)
  const sizes = batches(sim)
    .map((r) => idsOf(r).length)
    .sort((a, b) => b - a)
  t.deepEqual(sizes, [100, 100, 50])
  t.deepEqual(batches(sim).flatMap(idsOf).sort(), [...ids].sort(), 'each id asked for once')
  t.is(sim.count(single), 0)
})

/** A Wrapper without the batch endpoint: single reads, at most 8 at a time, remembered. */
const fallback = test.macro({
  async exec(t, makeMissing) {
    const { sim, consumer } = await setup(t)
    makeMissing(sim)
    const ids = Array.from({ length: 20 }, (_, i) => `fb-${i}`)
    for (const id of ids.slice(0, 18)) sim.data.profiles.set(id, { userId: id })
    sim.resetCounts()

    const gate = sim.gate(single)
    const call = consumer.getUserProfiles(ids)
    await waitFor(() => gate.waiting === 8, { message: '8 single requests held' })
    await new Promise((r) => setTimeout(r, 150))
    t.is(gate.waiting, 8, 'no more than 8 single requests at a time')
    gate.release()
    const got = await call
    for (let i = 0; i < 20; i++) t.deepEqual(got[i], i < 18 ? { userId: ids[i] } : null)
    t.is(sim.count(BATCH), 1, 'the batch endpoint was asked once')
    t.is(sim.count(single), 20, 'then each miss alone')

    // Remembered: the next batch read goes straight to single reads.
    sim.resetCounts()
    const more = await consumer.getUserProfiles(['u-alice', 'u-bob', 'fb-0'])
    t.is(more[0].userId, 'u-alice')
    t.is(more[1].userId, 'u-bob')
    t.deepEqual(more[2], { userId: 'fb-0' }, 'a hit')
    t.is(sim.count(BATCH), 0, 'the missing endpoint is remembered')
    t.is(sim.count(single), 2)
  },
})

test('a Wrapper without the batch endpoint (404): single reads, 8 at a time', fallback, (sim) => {
  sim.batchProfiles = false
})
test('a Wrapper answering the batch endpoint 405: single reads, 8 at a time', fallback, (sim) => {
  sim.fault(BATCH, { status: 405 })
})

test('a batch read joins a single read in flight, and a single read joins a batch', async (t) => {
  const { sim, consumer } = await setup(t)
  const alice = sim.data.profiles.get('u-alice')
  const bob = sim.data.profiles.get('u-bob')
  const carol = sim.data.profiles.get('u-carol')
  sim.resetCounts()

  // A single read of alice is held; the batch must not ask for her again.
  let gate = sim.gate(ALICE)
  let arrived = sim.waitForRequest(ALICE)
  const one = consumer.getUserProfile('u-alice')
  await arrived
  const coalesced = consumer.getMetrics().coalescedRequests
  const many = consumer.getUserProfiles(['u-alice', 'u-bob'])
  await waitFor(() => batches(sim).length === 1, { message: 'the batch request' })
  t.deepEqual(idsOf(batches(sim)[0]), ['u-bob'], 'alice is in flight already')
  gate.release()
  t.deepEqual(await one, alice)
  t.deepEqual(await many, [alice, bob])
  t.is(sim.count(ALICE), 1)
  t.true(consumer.getMetrics().coalescedRequests > coalesced)

  // A batch is held; a single read of one of its ids joins it.
  sim.resetCounts()
  gate = sim.gate(BATCH)
  arrived = sim.waitForRequest(BATCH)
  const batch = consumer.getUserProfiles(['u-carol'])
  await arrived
  const joined = consumer.getUserProfile('u-carol')
  await new Promise((r) => setTimeout(r, 50))
  gate.release()
  t.deepEqual(await batch, [carol])
  t.deepEqual(await joined, carol)
  t.is(sim.count(single), 0, 'the single read joined the batch')
  t.is(sim.requests.length, 1)
})

test('an invalidation during a batch wins: answered, not kept', async (t) => {
  const { sim, consumer } = await setup(t)
  const old = structuredClone(sim.data.profiles.get('u-alice'))
  const fresh = { ...old, title: 'VP Sales' }
  const bob = sim.data.profiles.get('u-bob')
  sim.resetCounts()

  const gate = sim.gate(BATCH)
  const arrived = sim.waitForRequest(BATCH)
  const waiting = consumer.getUserProfiles(['u-alice', 'u-bob'])
  const held = await arrived
  // The held request answers as the Wrapper was when it was asked.
  sim.fault((r) => r === held, { json: { profiles: { 'u-alice': old, 'u-bob': bob } } })
  sim.data.profiles.set('u-alice', fresh)
  consumer.invalidate('user:u-alice')
  gate.release()

  const got = await waiting
  t.deepEqual(got, [old, bob], 'the callers waiting get the batch answer')
  t.is(consumer.getCacheExpiry('user:u-alice'), null, 'the invalidated answer is not kept')
  t.is(typeof consumer.getCacheExpiry('user:u-bob'), 'number', 'the others are')
  t.deepEqual(await consumer.getUserProfile('u-alice'), fresh, 'the next read fetches again')
  t.is(sim.count(ALICE), 1)
})

test('a failing batch rejects as a whole', async (t) => {
  const { sim, consumer } = await setup(t, { consumer: { requestTimeoutMs: 500 } })
  await consumer.getUserProfile('u-alice') // a hit does not save the call
  sim.resetCounts()
  const down = sim.fault(BATCH, { status: 503 })
  await t.throwsAsync(consumer.getUserProfiles(['u-alice', 'u-bob']), {
    code: 'WRAPPER_UNAVAILABLE',
  })
  down.remove()
  const auth = sim.fault(BATCH, { status: 401 })
  await t.throwsAsync(consumer.getUserProfiles(['u-bob']), { code: 'WRAPPER_AUTH' })
  auth.remove()
  sim.fault(BATCH, { json: { profiles: { 'u-bob': 'not an object' } } })
  await t.throwsAsync(consumer.getUserProfiles(['u-bob']), { code: 'INVALID_RESPONSE' })
  t.is(sim.count(single), 0, 'a failure is not a missing endpoint')
  t.is(consumer.getCacheExpiry('user:u-bob'), null, 'nothing kept')
})

test('arguments: TypeError for a non-array or a non-string, RangeError for an id', async (t) => {
  const { sim, consumer } = await setup(t)
  sim.resetCounts()
  const before = consumer.getMetrics()
  for (const bad of [undefined, null, 'u-alice', { length: 1, 0: 'u-alice' }]) {
    await t.throwsAsync(consumer.getUserProfiles(bad), { instanceOf: TypeError })
  }
  await t.throwsAsync(consumer.getUserProfiles(['u-alice', 42]), {
    instanceOf: TypeError,
    message: /ids\[1\]/,
  })
  for (const bad of ['', '.', '..', 'a\nb']) {
    await t.throwsAsync(consumer.getUserProfiles(['u-alice', bad]), {
      instanceOf: RangeError,
      message: /ids\[1\]/,
    })
  }
  t.is(sim.requests.length, 0, 'nothing requested')
  const m = consumer.getMetrics()
  t.is(m.referenceHits + m.referenceMisses, before.referenceHits + before.referenceMisses)
  t.is(typeof consumer.getUserProfiles(['x']).catch(() => {}).then, 'function')
})

test('the test double answers getUserProfiles from its memory', async (t) => {
  const crm = createTestConsumer({
    tenantId: 't1',
    reference: { 'user:u1': { name: 'Ann' }, 'user:gone': null },
  })
  await crm.initialize()
  t.teardown(() => crm.shutdown())
  const got = await crm.getUserProfiles(['u1', 'gone', 'nobody', 'u1'])
  t.deepEqual(got, [{ name: 'Ann' }, null, null, { name: 'Ann' }])
  t.not(got[0], got[3])
  t.deepEqual(await crm.getUserProfiles(['u1']), [{ name: 'Ann' }], 'a hit')
  await t.throwsAsync(crm.getUserProfiles(['..']), { instanceOf: RangeError })
})
