'use strict'
// Reference reads (SPEC §2 "Reference reads"): miss then hit with a TTL per type,
// getCacheExpiry/invalidate, fresh objects, single-flight, invalidations during a
// fetch, ids as one percent-encoded path segment, 404 memory, stale-if-error,
// error codes, the byte bound of the cache, hit/miss metrics and the
// `cache-invalidate` event.

const test = require('ava')

const { setup, waitFor } = require('./helpers/fixture.js')

const SPEC_CODES = ['NOT_FOUND', 'WRAPPER_UNAVAILABLE', 'WRAPPER_AUTH', 'INVALID_RESPONSE']

/** Distinct TTLs per type, so a TTL applied to the wrong type shows. */
const TTL = { userProfiles: 61_000, hierarchy: 62_000, auditLogs: 63_000, historicalData: 64_000 }

const KINDS = [
  {
    method: 'getUserProfile',
    prefix: 'user',
    path: (id) => `/api/users/${id}/profile`,
    collection: 'profiles',
    id: 'u-alice',
    ttl: TTL.userProfiles,
  },
  {
    method: 'getHierarchy',
    prefix: 'hierarchy',
    path: (id) => `/api/hierarchy/${id}`,
    collection: 'hierarchy',
    id: 'org-1',
    ttl: TTL.hierarchy,
  },
  {
    method: 'getAuditLog',
    prefix: 'audit',
    path: (id) => `/api/audit-logs/${id}`,
    collection: 'auditLogs',
    id: 'log-1',
    ttl: TTL.auditLogs,
  },
  {
    method: 'getHistoricalData',
    prefix: 'historical',
    path: (id) => `/api/historical/${id}`,
    collection: 'historical',
    id: 'revenue-2025-q4',
    ttl: TTL.historicalData,
  },
]

const ALICE = '/api/users/u-alice/profile'

/** True when the held entry for `key` is gone or past its expiry. */
const expired = (consumer, key) => {
  const at = consumer.getCacheExpiry(key)
  return at === null || at < Date.now()
}

// ---- miss, hit, expiry, invalidate -------------------------------------------

const missThenHit = test.macro({
  async exec(t, kind) {
    const { sim, consumer } = await setup(t, { consumer: { ttl: TTL } })
    const path = kind.path(kind.id)
    const key = `${kind.prefix}:${kind.id}`
    const expected = sim.data[kind.collection].get(kind.id)
    t.truthy(expected, 'the default seed holds the entity')
    t.is(consumer.getCacheExpiry(key), null, 'nothing held before the first read')

    const before = Date.now()
    t.deepEqual(await consumer[kind.method](kind.id), expected)
    const after = Date.now()
    t.is(sim.count(path), 1, 'a miss makes one Wrapper request')

    const expiry = consumer.getCacheExpiry(key)
    t.is(typeof expiry, 'number')
    t.true(expiry >= before + kind.ttl - 5, `expiry ${expiry} ≥ now + ttl`)
    t.true(expiry <= after + kind.ttl + 5, `expiry ${expiry} ≤ now + ttl`)

    t.deepEqual(await consumer[kind.method](kind.id), expected)
    t.is(sim.count(path), 1, 'a hit makes no request')

    consumer.invalidate(key)
    t.is(consumer.getCacheExpiry(key), null, 'invalidate drops the entry')
    t.deepEqual(await consumer[kind.method](kind.id), expected)
    t.is(sim.count(path), 2, 'the read after invalidate fetches again')
  },
  title: (_, kind) =>
    `${kind.method}: a miss fetches once, a hit fetches nothing, invalidate refetches`,
})

for (const kind of KINDS) test(missThenHit, kind)

test('getCacheExpiry is null for keys that are not held', async (t) => {
  const { consumer } = await setup(t)
  for (const key of ['user:nobody', 'hierarchy:none', 'audit:x', 'historical:y', 'nonsense']) {
    t.is(consumer.getCacheExpiry(key), null, key)
  }
})

// ---- fresh objects -------------------------------------------------------------

test('each call resolves to a fresh object: mutating it never changes the cache', async (t) => {
  const { sim, consumer } = await setup(t)
  const expected = structuredClone(sim.data.profiles.get('u-alice'))

  const first = await consumer.getUserProfile('u-alice')
  first.name = 'Mallory'
  first.extra = { injected: true }
  delete first.email

  const second = await consumer.getUserProfile('u-alice')
  t.deepEqual(second, expected, 'mutating the miss result left the cache alone')
  t.not(second, first)
  second.title = 'changed'

  const third = await consumer.getUserProfile('u-alice')
  t.deepEqual(third, expected, 'mutating a hit result left the cache alone')
  t.not(third, second)
  t.is(sim.count(ALICE), 1)
})

test('refLookupCode answers as refLookup for each kind code; an unknown code is a RangeError', async (t) => {
  const { consumer } = await setup(t)
  await consumer.getUserProfile('u-alice')
  const native = consumer._native
  t.is(native.refLookupCode(0, 'u-alice'), native.refLookup('user', 'u-alice'))
  t.truthy(native.refLookupCode(0, 'u-alice'))
  t.is(native.refLookupCode(1, 'u-alice'), null, 'hierarchy: not held')
  t.is(native.refLookupCode(3, 'u-alice'), null, 'historical: not held')
  const err = t.throws(() => native.refLookupCode(4, 'u-alice'))
  t.true(err instanceof RangeError, String(err))
  t.regex(err.message, /unknown reference kind code 4/)
})

// ---- single flight -------------------------------------------------------------

test('200 concurrent misses for one key make one Wrapper request', async (t) => {
  const { sim, consumer } = await setup(t)
  const expected = sim.data.profiles.get('u-alice')
  const gate = sim.gate(ALICE)
  const arrived = sim.waitForRequest(ALICE)
  const before = consumer.getMetrics()

  const calls = Array.from({ length: 200 }, () => consumer.getUserProfile('u-alice'))
  await arrived
  // every caller has missed (and joined the flight) before the answer is let through
  await waitFor(() => consumer.getMetrics().referenceMisses - before.referenceMisses >= 200, {
    message: '200 reference misses',
  })
  gate.release()
  const results = await Promise.all(calls)

  t.is(sim.count(ALICE), 1, 'exactly one Wrapper request')
  for (const r of results) t.deepEqual(r, expected)
  t.is(new Set(results).size, 200, 'each caller has its own object')
  const m = consumer.getMetrics()
  t.true(m.coalescedRequests - before.coalescedRequests >= 199, `coalesced ${m.coalescedRequests}`)
})

// ---- invalidation during a fetch ---------------------------------------------------

/**
 * Holds the profile request of u-alice at the simulator, runs `invalidateNow`
 * while it is held (after changing the profile at the Wrapper), then lets the
 * old profile through. The next read must fetch again and see the new one.
 */
async function invalidationDuringFetch(t, invalidateNow) {
  const fixture = await setup(t)
  const { sim, consumer } = fixture
  const old = structuredClone(sim.data.profiles.get('u-alice'))
  const fresh = { ...old, title: 'VP Sales' }

  const gate = sim.gate(ALICE)
  const arrived = sim.waitForRequest(ALICE)
  const waiting = consumer.getUserProfile('u-alice')
  const held = await arrived
  // the held request answers with the profile as it was when it was asked
  sim.fault((r) => r === held, { json: old })

  sim.data.profiles.set('u-alice', fresh)
  await invalidateNow(fixture)
  gate.release()

  const first = await waiting
  t.true(
    first.title === old.title || first.title === fresh.title,
    'the waiting caller gets the old or the new value',
  )
  t.is(
    consumer.getCacheExpiry('user:u-alice'),
    null,
    'the value fetched before the invalidation is not cached',
  )

  const next = await consumer.getUserProfile('u-alice')
  t.deepEqual(next, fresh, 'the next read returns the new value')
  t.is(sim.count(ALICE), 2, 'the next read made a new request')
}

test('invalidate() during a slow fetch is not lost', async (t) => {
  await invalidationDuringFetch(t, ({ consumer }) => consumer.invalidate('user:u-alice'))
})

test('a user-changed event during a slow fetch is not lost', async (t) => {
  await invalidationDuringFetch(t, async ({ consumer, publish, event, settle }) => {
    const applied = consumer.getMetrics().eventsApplied
    await publish('users', event('user-changed', { userId: 'u-alice', changedFields: ['title'] }))
    await waitFor(() => consumer.getMetrics().eventsApplied > applied, {
      message: 'the user-changed event to be applied',
    })
    // events are handled in order: once a later marker shows, the invalidation is done
    await settle()
  })
})

test('a read issued after an invalidation does not get the value fetched before it', async (t) => {
  const { sim, consumer } = await setup(t)
  const old = structuredClone(sim.data.profiles.get('u-alice'))
  const fresh = { ...old, title: 'VP Sales' }
  const gate = sim.gate(ALICE)
  const arrived = sim.waitForRequest(ALICE)
  const misses = consumer.getMetrics().referenceMisses
  const waiting = consumer.getUserProfile('u-alice')
  const held = await arrived
  sim.fault((r) => r === held, { json: old })

  sim.data.profiles.set('u-alice', fresh)
  consumer.invalidate('user:u-alice')
  // this caller was not waiting when the invalidation arrived
  const later = consumer.getUserProfile('u-alice')
  await waitFor(() => consumer.getMetrics().referenceMisses >= misses + 2, {
    message: 'the second read to miss',
  })
  gate.release()
  await waiting

  t.deepEqual(await later, fresh, 'a read started after invalidate() sees the new value')
  t.is(sim.count(ALICE), 2)
})

// ---- ids as one path segment ------------------------------------------------------

test("getUserProfile('../admin') requests /api/users/..%2Fadmin/profile only", async (t) => {
  const { sim, consumer } = await setup(t)
  sim.data.profiles.set('../admin', { userId: '../admin', name: 'dotdot' })
  sim.data.profiles.set('admin', { userId: 'admin', name: 'the real admin' })

  t.deepEqual(await consumer.getUserProfile('../admin'), { userId: '../admin', name: 'dotdot' })
  const paths = sim.requests.map((r) => r.path)
  t.true(paths.includes('/api/users/..%2Fadmin/profile'), paths.join(' '))
  t.false(paths.includes('/api/admin/profile'))
  t.false(paths.includes('/api/users/admin/profile'))
  t.is(sim.count(/\/profile$/), 1, 'one profile request in all')
})

test('ids travel as one percent-encoded path segment for every reference type', async (t) => {
  const { sim, consumer } = await setup(t)
  const ids = [
    'a/b',
    'a?b=c',
    'a#frag',
    '100%',
    '%2F',
    'a b',
    'ü',
    '日本語',
    'x/../../y',
    '../admin',
  ]
  for (const [i, id] of ids.entries()) {
    sim.data.profiles.set(id, { userId: id, i })
    sim.data.hierarchy.set(id, { entityId: id, i })
    sim.data.auditLogs.set(id, { logId: id, i })
    sim.data.historical.set(id, { key: id, i })
  }
  for (const kind of KINDS) {
    for (const [i, id] of ids.entries()) {
      const value = await consumer[kind.method](id)
      t.is(value.i, i, `${kind.method}(${JSON.stringify(id)}) got its own entity`)
      const record = sim.requests.at(-1)
      const want = kind.path('SEG').split('/')
      const got = record.path.split('/')
      t.is(got.length, want.length, `${record.path} has the route's segments`)
      const at = want.indexOf('SEG')
      t.deepEqual(
        got.filter((_, j) => j !== at),
        want.filter((_, j) => j !== at),
        record.path,
      )
      t.regex(got[at], /^[A-Za-z0-9\-._~%]+$/, `${record.path}: the segment is percent-encoded`)
      t.is(decodeURIComponent(got[at]), id, `${record.path} decodes to the id`)
    }
  }
  t.is(sim.count('/api/admin'), 0)
  t.is(sim.count('/api/y'), 0)
})

test("'', '.' and '..' reject with RangeError and request nothing", async (t) => {
  const { sim, consumer } = await setup(t)
  const before = sim.requests.length
  for (const kind of KINDS) {
    for (const id of ['', '.', '..']) {
      await t.throwsAsync(
        () => consumer[kind.method](id),
        { instanceOf: RangeError },
        `${kind.method}(${JSON.stringify(id)})`,
      )
    }
  }
  t.is(sim.requests.length, before, 'no Wrapper request')
})

test('non-string ids reject with TypeError and request nothing', async (t) => {
  const { sim, consumer } = await setup(t)
  const before = sim.requests.length
  for (const kind of KINDS) {
    for (const id of [42, null, undefined, {}, ['u-alice'], true, Symbol('x')]) {
      await t.throwsAsync(
        () => consumer[kind.method](id),
        { instanceOf: TypeError },
        `${kind.method}(${String(id)})`,
      )
    }
  }
  t.is(sim.requests.length, before, 'no Wrapper request')
})

// ---- 404 ----------------------------------------------------------------------------

test('a 404 rejects NOT_FOUND, is remembered for ttl.notFound, then asked again', async (t) => {
  const notFound = 500
  const { sim, consumer } = await setup(t, { consumer: { ttl: { notFound } } })
  const path = '/api/users/u-ghost/profile'

  const before = Date.now()
  await t.throwsAsync(() => consumer.getUserProfile('u-ghost'), { code: 'NOT_FOUND' })
  t.is(sim.count(path), 1)
  const expiry = consumer.getCacheExpiry('user:u-ghost')
  t.true(expiry !== null && expiry >= before + notFound - 5 && expiry <= Date.now() + notFound + 5)

  await t.throwsAsync(() => consumer.getUserProfile('u-ghost'), { code: 'NOT_FOUND' })
  t.is(sim.count(path), 1, 'the remembered 404 makes no request')

  sim.data.profiles.set('u-ghost', { userId: 'u-ghost', name: 'Ghost' })
  await waitFor(() => expired(consumer, 'user:u-ghost'), { message: 'the 404 to expire' })
  t.deepEqual(await consumer.getUserProfile('u-ghost'), { userId: 'u-ghost', name: 'Ghost' })
  t.is(sim.count(path), 2, 'after ttl.notFound the Wrapper is asked again')
})

// ---- stale-if-error -------------------------------------------------------------------

test('stale-if-error: an expired entry is served while the Wrapper fails', async (t) => {
  const { sim, consumer } = await setup(t, { consumer: { ttl: { userProfiles: 200 } } })
  const old = structuredClone(sim.data.profiles.get('u-alice'))
  t.deepEqual(await consumer.getUserProfile('u-alice'), old)
  await waitFor(() => consumer.getCacheExpiry('user:u-alice') < Date.now(), {
    message: 'the profile to expire',
  })
  t.not(consumer.getCacheExpiry('user:u-alice'), null, 'the expired entry is still held')

  sim.data.profiles.set('u-alice', { ...old, title: 'new' })
  const fault = sim.fault(ALICE, { status: 500 })
  const staleBefore = consumer.getMetrics().staleServed
  const requestsBefore = sim.count(ALICE)

  t.deepEqual(await consumer.getUserProfile('u-alice'), old, 'the stale value is served')
  t.true(sim.count(ALICE) > requestsBefore, 'the Wrapper was asked')
  t.is(consumer.getMetrics().staleServed, staleBefore + 1, 'staleServed counts it')
  const h = consumer.health()
  t.true(h.degraded)
  t.is(h.reason, 'wrapper-unavailable')

  fault.remove()
  t.deepEqual(await consumer.getUserProfile('u-alice'), { ...old, title: 'new' })
  t.false(consumer.health().degraded, 'a successful call ends the degradation')
  t.is(consumer.health().reason, null)
})

test('stale-if-error: with staleIfErrorMs 0 an expired entry is not served', async (t) => {
  const { sim, consumer } = await setup(t, {
    consumer: { ttl: { userProfiles: 200 }, staleIfErrorMs: 0 },
  })
  await consumer.getUserProfile('u-alice')
  await waitFor(() => expired(consumer, 'user:u-alice'), { message: 'the profile to expire' })
  sim.fault(ALICE, { status: 500 })
  const staleBefore = consumer.getMetrics().staleServed
  await t.throwsAsync(() => consumer.getUserProfile('u-alice'), { code: 'WRAPPER_UNAVAILABLE' })
  t.is(consumer.getMetrics().staleServed, staleBefore)
  t.true(consumer.health().degraded)
})

const answerNotOutage = test.macro({
  async exec(t, spec, code) {
    const { sim, consumer } = await setup(t, { consumer: { ttl: { userProfiles: 200 } } })
    await consumer.getUserProfile('u-alice')
    await waitFor(() => expired(consumer, 'user:u-alice'), { message: 'the profile to expire' })
    sim.fault(ALICE, spec)
    const staleBefore = consumer.getMetrics().staleServed
    await t.throwsAsync(() => consumer.getUserProfile('u-alice'), { code })
    t.is(consumer.getMetrics().staleServed, staleBefore, 'nothing served stale')
    t.false(consumer.health().degraded, 'an answer is not an outage')
  },
  title: (_, spec, code) => `stale-if-error: ${JSON.stringify(spec)} is passed on as ${code}`,
})

test(answerNotOutage, { status: 404 }, 'NOT_FOUND')
test(answerNotOutage, { status: 401 }, 'WRAPPER_AUTH')
test(answerNotOutage, { status: 200, body: 'not json' }, 'INVALID_RESPONSE')

// ---- error codes -------------------------------------------------------------------------

const errorCode = test.macro({
  async exec(t, spec, code) {
    const { sim, consumer } = await setup(t)
    sim.fault(ALICE, spec)
    const err = await t.throwsAsync(() => consumer.getUserProfile('u-alice'), { code })
    t.true(err instanceof Error)
    t.is(consumer.getCacheExpiry('user:u-alice'), null, 'nothing is cached')
  },
  title: (_, spec, code) => `a Wrapper answer ${JSON.stringify(spec)} rejects ${code}`,
})

test(errorCode, { status: 401 }, 'WRAPPER_AUTH')
test(errorCode, { status: 403 }, 'WRAPPER_AUTH')
test(errorCode, { status: 200, body: 'not json' }, 'INVALID_RESPONSE')
test(errorCode, { status: 200, body: '{"userId": "u-alice", ' }, 'INVALID_RESPONSE')
test(errorCode, { json: [{ userId: 'u-alice' }] }, 'INVALID_RESPONSE')
test(errorCode, { json: 'u-alice' }, 'INVALID_RESPONSE')
test(errorCode, { json: null }, 'INVALID_RESPONSE')

test('a 5xx rejects WRAPPER_UNAVAILABLE after retries', async (t) => {
  const { sim, consumer } = await setup(t)
  sim.fault(ALICE, { status: 503 })
  await t.throwsAsync(() => consumer.getUserProfile('u-alice'), { code: 'WRAPPER_UNAVAILABLE' })
  t.true(sim.count(ALICE) > 1, `retried (${sim.count(ALICE)} requests)`)
  t.true(consumer.health().degraded)
  t.is(consumer.health().reason, 'wrapper-unavailable')
})

test('a truncated body settles with a SPEC error code', async (t) => {
  const { sim, consumer } = await setup(t)
  sim.fault(ALICE, { truncate: true })
  const started = Date.now()
  const err = await t.throwsAsync(() => consumer.getUserProfile('u-alice'))
  t.true(['INVALID_RESPONSE', 'WRAPPER_UNAVAILABLE'].includes(err.code), `code ${err.code}`)
  t.true(Date.now() - started < 4000, 'settles in bounded time')
  t.is(consumer.getCacheExpiry('user:u-alice'), null)
})

test('connection refused rejects WRAPPER_UNAVAILABLE in bounded time', async (t) => {
  const { sim, consumer } = await setup(t)
  await sim.stop()
  const started = Date.now()
  await t.throwsAsync(() => consumer.getUserProfile('u-alice'), { code: 'WRAPPER_UNAVAILABLE' })
  t.true(Date.now() - started < 4000, `settled after ${Date.now() - started} ms`)
  t.true(consumer.health().degraded)
})

test('a hanging Wrapper rejects WRAPPER_UNAVAILABLE after requestTimeoutMs', async (t) => {
  const { sim, consumer } = await setup(t, { consumer: { requestTimeoutMs: 200 } })
  sim.fault(ALICE, { hang: true })
  const started = Date.now()
  await t.throwsAsync(() => consumer.getUserProfile('u-alice'), { code: 'WRAPPER_UNAVAILABLE' })
  const elapsed = Date.now() - started
  t.true(elapsed >= 190, `waited for the timeout (${elapsed} ms)`)
  t.true(elapsed < 4000, `settled after ${elapsed} ms`)
})

test('every reference error carries one of the SPEC codes', async (t) => {
  const { sim, consumer } = await setup(t)
  sim.fault('/api/hierarchy/', { status: 401 })
  sim.fault('/api/audit-logs/', { body: '<html>', status: 200 })
  const errors = await Promise.all([
    consumer.getUserProfile('nobody').catch((e) => e),
    consumer.getHierarchy('org-1').catch((e) => e),
    consumer.getAuditLog('log-1').catch((e) => e),
  ])
  for (const err of errors) t.true(SPEC_CODES.includes(err.code), String(err.code))
})

// ---- byte bound ------------------------------------------------------------------------------

test('the reference cache stays within maxReferenceBytes', async (t) => {
  const maxReferenceBytes = 20_000
  const { sim, consumer } = await setup(t, { consumer: { maxReferenceBytes } })
  for (let i = 0; i < 200; i++) {
    sim.data.profiles.set(`big-${i}`, { userId: `big-${i}`, pad: 'x'.repeat(1000) })
  }
  for (let i = 0; i < 200; i += 20) {
    const batch = []
    for (let j = i; j < i + 20; j++) batch.push(consumer.getUserProfile(`big-${j}`))
    for (const [k, v] of (await Promise.all(batch)).entries()) t.is(v.userId, `big-${i + k}`)
  }
  const m = await waitFor(
    () => {
      const m = consumer.getMetrics()
      return m.referenceCacheBytes <= maxReferenceBytes && m
    },
    { timeout: 3000, message: `referenceCacheBytes ≤ ${maxReferenceBytes}` },
  )
  t.true(m.referenceCacheBytes > 0)
  t.true(m.referenceCacheSize > 0)
  t.true(m.referenceCacheSize < 200, `referenceCacheSize ${m.referenceCacheSize}`)
})

// ---- metrics ------------------------------------------------------------------------------------

test('reference hits and misses are counted; the hit rate is right and never NaN', async (t) => {
  const { consumer } = await setup(t)
  const m0 = consumer.getMetrics()
  t.is(m0.referenceHits, 0)
  t.is(m0.referenceMisses, 0)
  t.is(m0.referenceHitRate, 0, 'no reads: 0, not NaN')
  t.false(Number.isNaN(m0.overallHitRate))

  await consumer.getUserProfile('u-alice')
  await consumer.getUserProfile('u-alice')
  await consumer.getUserProfile('u-alice')
  await consumer.getUserProfile('u-alice')
  await consumer.getHierarchy('org-1')

  const m = consumer.getMetrics()
  t.is(m.referenceMisses, 2)
  t.is(m.referenceHits, 3)
  t.is(m.referenceHitRate, 3 / 5)
  for (const name of ['referenceHitRate', 'criticalHitRate', 'overallHitRate']) {
    t.true(Number.isFinite(m[name]), `${name} is a number`)
  }
  t.is(m.referenceCacheSize, 2)
})

// ---- cache-invalidate event ----------------------------------------------------------------------

test('a cache-invalidate event drops the keys it names', async (t) => {
  const { sim, consumer, publish, event } = await setup(t)
  await consumer.getUserProfile('u-alice')
  await consumer.getHierarchy('org-1')
  await consumer.getAuditLog('log-1')
  for (const key of ['user:u-alice', 'hierarchy:org-1', 'audit:log-1']) {
    t.not(consumer.getCacheExpiry(key), null, `${key} is held`)
  }

  await publish('cache', event('cache-invalidate', { keys: ['user:u-alice', 'hierarchy:org-1'] }))
  await waitFor(
    () =>
      consumer.getCacheExpiry('user:u-alice') === null &&
      consumer.getCacheExpiry('hierarchy:org-1') === null,
    { message: 'both keys to be dropped' },
  )
  t.not(consumer.getCacheExpiry('audit:log-1'), null, 'a key not named stays')

  await consumer.getUserProfile('u-alice')
  await consumer.getHierarchy('org-1')
  t.is(sim.count(ALICE), 2, 'the profile is fetched again')
  t.is(sim.count('/api/hierarchy/org-1'), 2, 'the hierarchy is fetched again')
  t.is(sim.count('/api/audit-logs/log-1'), 1)
})

// ---- refresh ahead (SPEC §10) -------------------------------------------------------

test('refreshAheadRatio: a hot entry is refreshed once in the background before it expires, and never expires into a miss', async (t) => {
  const { sim, consumer } = await setup(t, {
    consumer: { ttl: { userProfiles: 1500 }, refreshAheadRatio: 0.5 },
  })
  await consumer.getUserProfile('u-alice')
  t.is(sim.count(ALICE), 1)
  const firstExpiry = consumer.getCacheExpiry('user:u-alice')
  sim.data.profiles.set('u-alice', { ...sim.data.profiles.get('u-alice'), title: 'CFO' })
  // hits before half the TTL refresh nothing
  await consumer.getUserProfile('u-alice')
  t.is(sim.count(ALICE), 1)
  // a hot reader: past half the TTL its hits trigger one background refresh
  await waitFor(
    async () => {
      await consumer.getUserProfile('u-alice')
      return sim.count(ALICE) === 2
    },
    { timeout: 5000, interval: 20, message: 'one refresh' },
  )
  await waitFor(() => consumer.getCacheExpiry('user:u-alice') > firstExpiry, {
    message: 'the refreshed entry replaced the old one',
  })
  t.is((await consumer.getUserProfile('u-alice')).title, 'CFO')
  t.is(sim.count(ALICE), 2, 'refreshed once')
  // reading on for longer than the TTL never misses
  const missesBefore = consumer.getMetrics().referenceMisses
  const until = Date.now() + 2000
  while (Date.now() < until) {
    await consumer.getUserProfile('u-alice')
    await new Promise((r) => setTimeout(r, 25))
  }
  t.is(consumer.getMetrics().referenceMisses, missesBefore, 'no miss while hot')
  t.true(sim.count(ALICE) >= 3, 'refreshed again in the next period')
})

test('refreshAheadRatio: an invalidation during the background refresh still wins', async (t) => {
  const { sim, consumer } = await setup(t, {
    consumer: { ttl: { userProfiles: 1000 }, refreshAheadRatio: 0.3 },
  })
  await consumer.getUserProfile('u-alice')
  sim.data.profiles.set('u-alice', { ...sim.data.profiles.get('u-alice'), title: 'old at refresh' })
  const gate = sim.gate(ALICE)
  const refreshing = sim.waitForRequest(ALICE)
  await waitFor(
    async () => {
      await consumer.getUserProfile('u-alice')
      return sim.count(ALICE) === 2
    },
    { timeout: 5000, interval: 20, message: 'the refresh started' },
  )
  await refreshing
  consumer.invalidate('user:u-alice')
  sim.data.profiles.set('u-alice', { ...sim.data.profiles.get('u-alice'), title: 'new' })
  gate.release()
  // A negative over a window: the old refresh's landing is not observable
  // otherwise (it must store nothing).
  await new Promise((r) => setTimeout(r, 300))
  t.is(consumer.getCacheExpiry('user:u-alice'), null, 'the refreshed (older) value is not kept')
  t.is((await consumer.getUserProfile('u-alice')).title, 'new')
})

test('refreshAheadRatio is validated, naming it', (t) => {
  const { SmartCRMConsumer } = require('../lib/index.js')
  const base = { tenantId: 't', wrapperUrl: 'http://127.0.0.1:9' }
  for (const bad of [1, -0.1, 2]) {
    t.throws(() => new SmartCRMConsumer({ ...base, refreshAheadRatio: bad }), {
      instanceOf: RangeError,
      message: /refreshAheadRatio/,
    })
  }
  t.throws(() => new SmartCRMConsumer({ ...base, refreshAheadRatio: '0.8' }), {
    instanceOf: TypeError,
    message: /refreshAheadRatio/,
  })
})
