'use strict'
// smart-crm-consumer/testing (SPEC §9): createTestConsumer is a real
// SmartCRMConsumer whose Wrapper and Redis are memory. Its events go through
// the core's event rules, its errors are the consumer's, and it opens nothing
// that keeps Node alive.

const test = require('ava')
const path = require('node:path')
const { spawn } = require('node:child_process')
const express = require('express')
const request = require('supertest')

const { createTestConsumer } = require('smart-crm-consumer/testing')
const { SmartCRMConsumer, signMessage } = require('smart-crm-consumer')
const { requirePermission, requireCredits, metricsHandler } = require('smart-crm-consumer/express')

const seed = () => ({
  tenantId: 'acme',
  credits: { 'crm.leads.create': 2.5, 'crm.leads.export': 0, 'crm.old': null },
  roles: { sales: ['crm.leads.*'], viewer: ['crm.leads.read'] },
  users: {
    u1: { status: 'active', roles: ['sales'] },
    u2: { status: 'suspended', roles: ['sales'] },
    poor: { status: 'active', roles: ['sales'] },
  },
  configs: { limits: { maxLeadsPerDay: 500 }, nothing: null },
  reference: { 'user:u1': { name: 'Ann' }, 'hierarchy:h1': { parent: null }, 'user:gone': null },
  balances: { u1: 100, poor: 1 },
})

async function ready(t, extra = {}) {
  const crm = createTestConsumer({ ...seed(), ...extra })
  t.teardown(() => crm.shutdown())
  await crm.initialize()
  return crm
}

function rejectsWith(t, fn, reason) {
  const err = t.throws(fn, { instanceOf: RangeError })
  t.is(err.code, 'ERR_OUT_OF_RANGE')
  t.is(err.reason, reason)
  t.regex(err.message, new RegExp(`^event rejected: ${reason} \\(`))
  return err
}

// ---- what it is ----------------------------------------------------------------

test('it is a SmartCRMConsumer: same class, the seed readable once initialized', async (t) => {
  const crm = createTestConsumer(seed())
  t.true(crm instanceof SmartCRMConsumer)
  t.is(Object.getPrototypeOf(crm), SmartCRMConsumer.prototype)
  t.is(crm.tenantId, 'acme')
  t.is(crm.getCreditCost('crm.leads.create'), null, 'nothing is loaded before initialize()')
  t.false(crm.health().ready)
  const events = []
  crm.on('connection', (e) => events.push(['connection', e]))
  crm.on('resync', (e) => events.push(['resync', e]))
  await crm.initialize()
  t.deepEqual(events, [
    ['resync', { reason: 'initial' }],
    ['connection', { connected: true }],
  ])
  t.is(crm.getCreditCost('crm.leads.create'), 2.5)
  t.is(crm.getCreditCost('crm.leads.export'), 0, 'a cost of 0 is a cost')
  t.is(crm.getCreditCost('crm.old'), null, 'null = inactive')
  t.deepEqual(crm.getRolePermissions('sales'), ['crm.leads.*'])
  t.deepEqual(crm.getUserRoles('u1'), ['sales'])
  t.is(crm.getUserStatus('u2'), 'suspended')
  t.deepEqual(crm.getActiveConfig('limits'), { maxLeadsPerDay: 500 })
  t.is(crm.getActiveConfig('nothing'), null)
  t.true(crm.checkPermission('u1', 'crm.leads.create'))
  t.false(crm.checkPermission('u2', 'crm.leads.create'), 'not active')
  t.false(crm.checkPermission('nobody', 'crm.leads.create'))
  t.true(crm.isConnected)
  const h = crm.health()
  t.like(h, { ready: true, connected: true, degraded: false, reason: null, source: 'wrapper' })
  t.is(typeof h.lastSyncAt, 'number')
  await crm.initialize() // again: resolves, loads nothing
  t.is(events.length, 2)
  await crm.shutdown()
  t.false(crm.isConnected)
  t.throws(() => crm.getCreditCost('crm.leads.create'), { code: 'SHUTDOWN' })
  await t.throwsAsync(crm.initialize(), { code: 'SHUTDOWN' })
})

test('options are validated as the constructor validates them', (t) => {
  t.throws(() => createTestConsumer(), { instanceOf: TypeError, code: 'ERR_INVALID_OPTION' })
  t.throws(() => createTestConsumer({}), { instanceOf: TypeError, message: /`tenantId`/ })
  t.throws(() => createTestConsumer({ tenantId: 'a:b' }), {
    instanceOf: RangeError,
    message: /`tenantId`/,
  })
  t.throws(() => createTestConsumer({ tenantId: 't', ttl: { userProfile: 1 } }), {
    message: /`ttl.userProfile`/,
  })
  t.throws(() => createTestConsumer({ tenantId: 't', bogus: 1 }), { message: /`bogus`/ })
  t.throws(() => createTestConsumer({ tenantId: 't', wrapperUrl: 'ftp://x' }), {
    instanceOf: RangeError,
    message: /`wrapperUrl`/,
  })
  t.throws(() => createTestConsumer({ tenantId: 't', logger: {} }), {
    instanceOf: TypeError,
    message: /`logger`/,
  })
  t.throws(() => createTestConsumer({ tenantId: 't', heartbeatMs: Infinity }), {
    instanceOf: RangeError,
    message: /`heartbeatMs`/,
  })
  t.is(createTestConsumer('acme').tenantId, 'acme', 'a string is the tenant id')
  t.is(
    createTestConsumer({ tenantId: 't', wrapperUrl: 'https://crm.example' }).tenantId,
    't',
    'a wrapperUrl is checked but never used',
  )
  // The seed options.
  const cases = [
    [{ credits: [] }, TypeError, /`credits`/],
    [{ credits: { a: -1 } }, RangeError, /`credits\["a"\]`/],
    [{ credits: { a: '3' } }, TypeError, /`credits\["a"\]`/],
    [{ credits: { '..': 1 } }, RangeError, /`credits`/],
    [{ roles: { r: 'x' } }, TypeError, /`roles\["r"\]`/],
    [{ users: { u: { roles: [] } } }, TypeError, /`users\["u"\].status`/],
    [{ users: { u: { status: 'active', role: ['x'] } } }, TypeError, /`users\["u"\].role`/],
    [{ reference: { 'credit:x': {} } }, RangeError, /`reference`/],
    [{ reference: { 'user:x': 'Ann' } }, TypeError, /`reference\["user:x"\]`/],
    [{ balances: { u: NaN } }, RangeError, /`balances.u`/],
    [{ balances: { u: '5' } }, TypeError, /`balances\["u"\]`/],
  ]
  for (const [extra, Cls, message] of cases) {
    const err = t.throws(() => createTestConsumer({ tenantId: 't', ...extra }), {
      instanceOf: Cls,
      message,
    })
    t.is(err.code, 'ERR_INVALID_OPTION', JSON.stringify(extra))
  }
})

test('the environment is not read', (t) => {
  const saved = process.env.REDIS_URL
  process.env.REDIS_URL = 'not a url'
  try {
    t.is(createTestConsumer('acme').tenantId, 'acme')
  } finally {
    if (saved === undefined) delete process.env.REDIS_URL
    else process.env.REDIS_URL = saved
  }
})

// ---- events: the core's rules ----------------------------------------------------

test("apply(): the change is read at once, and 'change' events fire", async (t) => {
  const crm = await ready(t)
  const seen = []
  crm.on('change', (e) => seen.push(['change', e]))
  crm.on('change:credit:crm.leads.create', (e) => seen.push(['key', e]))
  const change = crm.apply('credit-config-changed', {
    operationCode: 'crm.leads.create',
    newValue: 3,
  })
  const expected = { eventType: 'credit-config-changed', keys: ['credit:crm.leads.create'] }
  t.deepEqual(change, expected)
  t.is(crm.getCreditCost('crm.leads.create'), 3)
  t.deepEqual(seen, [
    ['change', expected],
    ['key', expected],
  ])
  crm.apply('credit-config-changed', {
    operationCode: 'crm.leads.create',
    newValue: 4,
    isActive: false,
  })
  t.is(crm.getCreditCost('crm.leads.create'), null, 'inactive')
  crm.apply('role-changed', { roleId: 'viewer', permissions: ['crm.*'] })
  crm.apply('user-status-changed', { userId: 'u3', status: 'active', roles: ['viewer'] })
  t.true(crm.checkPermission('u3', 'crm.anything'))
  crm.apply('user-status-changed', { userId: 'u1', status: 'suspended' })
  t.deepEqual(crm.getUserRoles('u1'), ['sales'], 'roles kept when the event has none')
  t.false(crm.checkPermission('u1', 'crm.leads.create'))
  crm.apply('user-deleted', { userId: 'u2' })
  t.is(crm.getUserStatus('u2'), null)
  crm.apply('config-changed', { configId: 'limits', config: { maxLeadsPerDay: 10 } })
  t.deepEqual(crm.getActiveConfig('limits'), { maxLeadsPerDay: 10 })
  crm.apply('config-deleted', { configId: 'limits' })
  t.is(crm.getActiveConfig('limits'), null)
  crm.apply('role-deleted', { roleId: 'viewer' })
  t.false(crm.checkPermission('u3', 'crm.anything'))
  t.deepEqual(
    seen.filter(([k]) => k === 'change').map(([, e]) => e.keys),
    [
      ['credit:crm.leads.create'],
      ['credit:crm.leads.create'],
      ['role:viewer'],
      ['access:u3'],
      ['access:u1'],
      ['access:u2', 'user:u2'],
      ['config:limits'],
      ['config:limits'],
      ['role:viewer'],
    ],
  )
  const m = crm.getMetrics()
  t.is(m.eventsReceived, 9)
  t.is(m.eventsApplied, 9)
})

test('versions and tombstones: a stale version throws RangeError stale and changes nothing', async (t) => {
  const crm = await ready(t)
  let changes = 0
  crm.on('change', () => changes++)
  const set = (newValue, version) =>
    crm.apply('credit-config-changed', { operationCode: 'crm.leads.create', newValue }, { version })
  set(3, 5)
  rejectsWith(t, () => set(4, 5), 'stale')
  rejectsWith(t, () => set(4, 4), 'stale')
  t.is(crm.getCreditCost('crm.leads.create'), 3)
  set(6, 6)
  t.is(crm.getCreditCost('crm.leads.create'), 6)
  // A delete keeps its version as a tombstone: a late, older upsert stays ignored.
  crm.apply('credit-config-deleted', { operationCode: 'crm.leads.create' }, { version: 9 })
  t.is(crm.getCreditCost('crm.leads.create'), null)
  rejectsWith(t, () => set(7, 8), 'stale')
  t.is(crm.getCreditCost('crm.leads.create'), null)
  set(7, 10)
  t.is(crm.getCreditCost('crm.leads.create'), 7)
  // Versions are per entity; users by userId.
  crm.apply('user-status-changed', { userId: 'u1', status: 'suspended' }, { version: 2 })
  rejectsWith(
    t,
    () => crm.apply('user-status-changed', { userId: 'u1', status: 'active' }, { version: 1 }),
    'stale',
  )
  t.is(crm.getUserStatus('u1'), 'suspended')
  t.is(changes, 5)
  const m = crm.getMetrics()
  t.is(m.eventsRejected.stale, 4)
  t.is(m.eventsApplied, 5)
})

test('resync-required reloads (tombstones go), drops reference data and emits resync', async (t) => {
  const crm = await ready(t)
  const resyncs = []
  crm.on('resync', (e) => resyncs.push(e))
  crm.apply('role-deleted', { roleId: 'viewer' }, { version: 5 })
  await crm.getUserProfile('u1')
  t.is(typeof crm.getCacheExpiry('user:u1'), 'number')
  t.deepEqual(crm.apply('resync-required'), { eventType: 'resync-required', keys: [] })
  t.deepEqual(resyncs, [{ reason: 'resync-required' }])
  t.is(crm.getCacheExpiry('user:u1'), null)
  t.deepEqual(crm.getUserRoles('u1'), ['sales'], 'users read again after the reset')
  t.is(crm.getMetrics().resyncs, 1)
  crm.apply('role-changed', { roleId: 'viewer', permissions: ['x'] }, { version: 1 })
  t.deepEqual(crm.getRolePermissions('viewer'), ['x'], 'the tombstone went with the reload')
})

test('rejected events name their reason and change nothing', async (t) => {
  const crm = await ready(t)
  let changes = 0
  crm.on('change', () => changes++)
  const cases = [
    ['credit-config-changed', { operationCode: 'crm.leads.create', newValue: -1 }, 'malformed'],
    ['credit-config-changed', { operationCode: 'crm.leads.create', newValue: NaN }, 'malformed'],
    ['credit-config-changed', { operationCode: 'crm.leads.create' }, 'malformed'],
    ['credit-config-changed', { operationCode: '..', newValue: 1 }, 'malformed'],
    ['role-changed', { roleId: 'sales', permissions: 'crm.*' }, 'malformed'],
    ['user-status-changed', { userId: 'u1' }, 'malformed'],
    ['config-changed', { configId: 'limits' }, 'malformed'],
    ['cache-invalidate', { keys: ['credit:x'] }, 'malformed'],
    ['credit-config-exploded', {}, 'unknownType'],
    ['user-changed', { userId: 'u1', pad: 'x'.repeat(70 * 1024) }, 'tooLarge'],
  ]
  for (const [type, data, reason] of cases) rejectsWith(t, () => crm.apply(type, data), reason)
  rejectsWith(t, () => crm.apply('user-changed', null), 'malformed')
  rejectsWith(t, () => crm.apply('user-changed', [1]), 'malformed')
  rejectsWith(
    t,
    () =>
      crm.apply(
        'credit-config-changed',
        { operationCode: 'crm.leads.create', newValue: 1 },
        { version: 1.5 },
      ),
    'malformed',
  )
  rejectsWith(
    t,
    () =>
      crm.apply(
        'credit-config-changed',
        { operationCode: 'crm.leads.create', newValue: 1 },
        { version: -1 },
      ),
    'malformed',
  )
  // eventIds are remembered: a replay is refused.
  crm.apply('user-changed', { userId: 'u1' }, { eventId: 'e-1' })
  rejectsWith(
    t,
    () => crm.apply('user-status-changed', { userId: 'u1', status: 'gone' }, { eventId: 'e-1' }),
    'replay',
  )
  t.is(crm.getCreditCost('crm.leads.create'), 2.5)
  t.deepEqual(crm.getRolePermissions('sales'), ['crm.leads.*'])
  t.is(crm.getUserStatus('u1'), 'active')
  t.is(changes, 1, 'only the accepted user-changed')
  const m = crm.getMetrics()
  t.like(m.eventsRejected, { malformed: 12, unknownType: 1, tooLarge: 1, replay: 1 })
  t.is(m.eventsApplied, 1)
  // JS types are checked in JS, like the consumer's arguments.
  t.throws(() => crm.apply(42), { instanceOf: TypeError, code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => crm.apply('user-changed', { userId: 'u1' }, { versoin: 1 }), {
    instanceOf: TypeError,
    message: /versoin/,
  })
  t.throws(() => crm.apply('user-changed', { userId: 'u1' }, { version: '1' }), {
    instanceOf: TypeError,
  })
  t.throws(() => crm.apply('user-changed', { userId: 'u1', n: 1n }), { instanceOf: TypeError })
})

test('with a signingSecret events are signed, and timestamps are checked', async (t) => {
  const crm = await ready(t, { signingSecret: ['new', 'old'] })
  crm.apply('user-status-changed', { userId: 'u1', status: 'suspended' })
  t.is(crm.getUserStatus('u1'), 'suspended')
  rejectsWith(
    t,
    () =>
      crm.apply(
        'user-status-changed',
        { userId: 'u1', status: 'active' },
        { timestamp: new Date(Date.now() - 10 * 60_000) },
      ),
    'expired',
  )
  rejectsWith(
    t,
    () =>
      crm.apply('user-status-changed', { userId: 'u1', status: 'active' }, { timestamp: 'later' }),
    'malformed',
  )
  crm.apply(
    'user-status-changed',
    { userId: 'u1', status: 'active' },
    { timestamp: new Date(Date.now() - 60_000).toISOString() },
  )
  t.is(crm.getUserStatus('u1'), 'active')
  t.is(typeof signMessage, 'function')
})

test('events applied before initialize() are in what it loads', async (t) => {
  const crm = createTestConsumer(seed())
  t.teardown(() => crm.shutdown())
  crm.apply('credit-config-changed', { operationCode: 'crm.new', newValue: 1 }, { version: 3 })
  t.is(crm.getCreditCost('crm.new'), null)
  await crm.initialize()
  t.is(crm.getCreditCost('crm.new'), 1)
  rejectsWith(
    t,
    () =>
      crm.apply('credit-config-changed', { operationCode: 'crm.new', newValue: 2 }, { version: 3 }),
    'stale',
  )
})

test('a listener that applies an event keeps the replica in order', async (t) => {
  const crm = await ready(t)
  crm.on('change:credit:a', () => {
    crm.apply('credit-config-changed', { operationCode: 'b', newValue: crm.getCreditCost('a') * 2 })
  })
  crm.apply('credit-config-changed', { operationCode: 'a', newValue: 2 })
  t.is(crm.getCreditCost('b'), 4)
  const logged = []
  const quiet = createTestConsumer({
    tenantId: 'q',
    logger: { debug() {}, info() {}, warn() {}, error: (m) => logged.push(m) },
  })
  await quiet.initialize()
  quiet.on('change', () => {
    throw new Error('listener bug')
  })
  quiet.apply('user-changed', { userId: 'u' })
  t.is(logged.length, 1, 'a throwing listener is logged, as with any consumer')
  t.regex(logged[0], /listener bug/)
})

// ---- reference reads -------------------------------------------------------------

test('reference reads: cache keys, 404s, setReference and invalidation', async (t) => {
  const crm = await ready(t, { ttl: { notFound: 60_000 } })
  const ann = await crm.getUserProfile('u1')
  t.deepEqual(ann, { name: 'Ann' })
  ann.name = 'mutated'
  t.deepEqual(await crm.getUserProfile('u1'), { name: 'Ann' }, 'a fresh object each call')
  const expiry = crm.getCacheExpiry('user:u1')
  t.true(Math.abs(expiry - Date.now() - 300_000) < 5_000, 'the default userProfiles TTL')
  t.deepEqual(await crm.getHierarchy('h1'), { parent: null })
  await t.throwsAsync(crm.getUserProfile('gone'), { code: 'NOT_FOUND' })
  await t.throwsAsync(crm.getUserProfile('never-seeded'), { code: 'NOT_FOUND' })
  await t.throwsAsync(crm.getAuditLog('a1'), { code: 'NOT_FOUND' })
  await t.throwsAsync(crm.getUserProfile('..'), { instanceOf: RangeError })
  await t.throwsAsync(crm.getHistoricalData(''), { instanceOf: RangeError })
  // setReference: the Wrapper's answer changes, the held entry goes.
  crm.setReference('historical:2024', { total: 7 })
  t.deepEqual(await crm.getHistoricalData('2024'), { total: 7 })
  crm.setReference('user:u1', { name: 'Bob' })
  t.deepEqual(await crm.getUserProfile('u1'), { name: 'Bob' })
  crm.setReference('user:u1', null)
  await t.throwsAsync(crm.getUserProfile('u1'), { code: 'NOT_FOUND' })
  crm.setReference('user:u1', { name: 'Cy' })
  await crm.getUserProfile('u1')
  // Events and invalidate() drop entries.
  const changes = []
  crm.on('change', (e) => changes.push(e.keys))
  crm.apply('user-changed', { userId: 'u1' })
  t.is(crm.getCacheExpiry('user:u1'), null)
  await crm.getHierarchy('h1')
  crm.apply('cache-invalidate', { keys: ['hierarchy:h1', 'audit:zz'] })
  t.is(crm.getCacheExpiry('hierarchy:h1'), null)
  await crm.getUserProfile('u1')
  crm.invalidate('user:u1')
  t.is(crm.getCacheExpiry('user:u1'), null)
  t.deepEqual(changes, [['user:u1'], ['hierarchy:h1', 'audit:zz']])
  t.throws(() => crm.setReference('credit:x', {}), { instanceOf: RangeError })
  t.throws(() => crm.setReference('user:x', 'Ann'), { instanceOf: TypeError })
  t.throws(() => crm.setReference('user:x', [1]), { instanceOf: TypeError })
  t.throws(() => crm.setReference('user:x'), { instanceOf: TypeError })
  const m = crm.getMetrics()
  t.true(m.referenceHits >= 1)
  t.true(m.referenceMisses >= 8)
  t.is(m.wrapperRequests, m.referenceMisses)
  t.true(m.referenceCacheSize >= 1)
})

// ---- failNext --------------------------------------------------------------------

test('failNext: the next call of that method fails with that code, once', async (t) => {
  const crm = await ready(t)
  crm.failNext('getUserProfile', 'WRAPPER_UNAVAILABLE')
  t.deepEqual(await crm.getHierarchy('h1'), { parent: null }, 'another method is unaffected')
  const err = await t.throwsAsync(crm.getUserProfile('u1'), { code: 'WRAPPER_UNAVAILABLE' })
  t.true(err instanceof Error && !(err instanceof RangeError))
  t.regex(err.message, /simulated by failNext/)
  t.like(crm.health(), { degraded: true, reason: 'wrapper-unavailable' })
  t.deepEqual(await crm.getUserProfile('u1'), { name: 'Ann' }, 'once')
  t.like(crm.health(), { degraded: false, reason: null })
  // Queued: two calls, two failures, in order.
  crm.failNext('getUserCredits', 'WRAPPER_AUTH')
  crm.failNext('getUserCredits', 'INVALID_RESPONSE')
  await t.throwsAsync(crm.getUserCredits('u1'), { code: 'WRAPPER_AUTH' })
  await t.throwsAsync(crm.getUserCredits('u1'), { code: 'INVALID_RESPONSE' })
  t.is(await crm.getUserCredits('u1'), 100)
  // An invalid argument fails as always and leaves the failure armed.
  crm.failNext('getUserProfile', 'NOT_FOUND')
  await t.throwsAsync(crm.getUserProfile('..'), { instanceOf: RangeError })
  await t.throwsAsync(crm.getUserProfile('u1'), { code: 'NOT_FOUND' })
  // checkCredits reads the balance like getUserCredits.
  crm.failNext('checkCredits', 'WRAPPER_UNAVAILABLE')
  t.false(await crm.checkCredits('crm.ghost', 'u1'), 'no balance read for an unknown operation')
  await t.throwsAsync(crm.checkCredits('crm.leads.create', 'u1'), { code: 'WRAPPER_UNAVAILABLE' })
  t.true(await crm.checkCredits('crm.leads.create', 'u1'))
  crm.failNext('deductCredits', 'WRAPPER_UNAVAILABLE')
  const d = await t.throwsAsync(crm.deductCredits('u1', 1), { code: 'WRAPPER_UNAVAILABLE' })
  t.is(typeof d.idempotencyKey, 'string')
  crm.failNext('deductCredits', 'INSUFFICIENT_CREDITS')
  const poor = await t.throwsAsync(crm.deductCredits('u1', 1), { code: 'INSUFFICIENT_CREDITS' })
  t.is(poor.available, 100)
  t.deepEqual(crm.deductions, [], 'a failed call deducts nothing')
  // Unknown methods and codes.
  t.throws(() => crm.failNext('getUserProfiles', 'NOT_FOUND'), {
    instanceOf: RangeError,
    message: /method must be one of initialize, getUserProfile/,
  })
  t.throws(() => crm.failNext('getUserProfile', 'INSUFFICIENT_CREDITS'), {
    instanceOf: RangeError,
    message: /code must be one of NOT_FOUND, WRAPPER_UNAVAILABLE, WRAPPER_AUTH, INVALID_RESPONSE/,
  })
  t.throws(() => crm.failNext('getUserProfile', 'BOOM'), { instanceOf: RangeError })
  t.throws(() => crm.failNext('getUserProfile'), { instanceOf: TypeError })
  t.throws(() => crm.failNext(1, 'NOT_FOUND'), { instanceOf: TypeError })
  const m = crm.getMetrics()
  t.true(m.wrapperErrors >= 6)
})

test("failNext('initialize'): initialize() rejects with the code, the next one loads", async (t) => {
  const crm = createTestConsumer(seed())
  t.teardown(() => crm.shutdown())
  crm.failNext('initialize', 'REDIS_UNAVAILABLE')
  await t.throwsAsync(crm.initialize(), { code: 'REDIS_UNAVAILABLE' })
  t.like(crm.health(), { ready: false, degraded: true, reason: 'redis-disconnected' })
  t.is(crm.getCreditCost('crm.leads.create'), null)
  await crm.initialize()
  t.like(crm.health(), { ready: true, degraded: false })
  t.is(crm.getCreditCost('crm.leads.create'), 2.5)
  t.throws(() => crm.failNext('initialize', 'NOT_FOUND'), { instanceOf: RangeError })
})

// ---- credits ---------------------------------------------------------------------

test('deductCredits follows the balances: 402 with available, idempotency keys replayed', async (t) => {
  const crm = await ready(t)
  t.is(await crm.getUserCredits('u1'), 100)
  t.is(await crm.getUserCredits('nobody'), 0, 'a user without a balance has 0')
  const first = await crm.deductCredits('u1', 30, {
    operationCode: 'crm.leads.create',
    idempotencyKey: 'lead:1',
  })
  t.deepEqual(first, { remaining: 70, idempotencyKey: 'lead:1' })
  const again = await crm.deductCredits('u1', 30, {
    operationCode: 'crm.leads.create',
    idempotencyKey: 'lead:1',
  })
  t.deepEqual(again, first, 'a replayed key gets the first answer and is charged once')
  t.is(await crm.getUserCredits('u1'), 70)
  const generated = await crm.deductCredits('u1', 2.5)
  t.is(generated.remaining, 67.5)
  t.regex(generated.idempotencyKey, /^[0-9a-f-]{36}$/)
  const poor = await t.throwsAsync(
    crm.deductCredits('poor', 5, { operationCode: 'crm.leads.create', idempotencyKey: 'p1' }),
    { code: 'INSUFFICIENT_CREDITS' },
  )
  t.is(poor.available, 1)
  t.is(poor.idempotencyKey, 'p1')
  const replayed = await t.throwsAsync(crm.deductCredits('poor', 0.5, { idempotencyKey: 'p1' }), {
    code: 'INSUFFICIENT_CREDITS',
  })
  t.is(replayed.available, 1, 'the first answer, even for another amount')
  t.true(await crm.checkCredits('crm.leads.create', 'u1'))
  t.false(await crm.checkCredits('crm.leads.create', 'poor'))
  t.false(await crm.checkCredits('crm.old', 'u1'), 'inactive')
  t.deepEqual(crm.deductions, [
    {
      userId: 'u1',
      amount: 30,
      operationCode: 'crm.leads.create',
      idempotencyKey: 'lead:1',
      remaining: 70,
    },
    {
      userId: 'u1',
      amount: 2.5,
      operationCode: null,
      idempotencyKey: generated.idempotencyKey,
      remaining: 67.5,
    },
  ])
  crm.deductions.pop()
  t.is(crm.deductions.length, 2, 'a fresh copy each read')
  // The consumer's argument rules.
  await t.throwsAsync(crm.deductCredits('u1', -1), { instanceOf: RangeError })
  await t.throwsAsync(crm.deductCredits('u1', '1'), { instanceOf: TypeError })
  await t.throwsAsync(crm.deductCredits('..', 1), { instanceOf: RangeError })
  await t.throwsAsync(crm.deductCredits('u1', 1, { idempotencyKey: 'a b' }), {
    instanceOf: RangeError,
  })
  await t.throwsAsync(crm.getUserCredits('..'), { instanceOf: RangeError })
  await t.throwsAsync(crm.checkCredits('crm.ghost', '..'), { instanceOf: RangeError })
  t.is(crm.deductions.length, 2)
})

// ---- Express ---------------------------------------------------------------------

test('the Express middleware works with it (supertest)', async (t) => {
  const crm = await ready(t)
  const app = express()
  app.use((req, res, next) => {
    const id = req.get('x-test-user')
    if (id) req.user = { id }
    next()
  })
  app.get('/leads', requirePermission(crm, 'crm.leads.read'), (req, res) => res.json({ ok: true }))
  app.post('/leads', requireCredits(crm, 'crm.leads.create'), async (req, res, next) => {
    try {
      const { remaining } = await crm.deductCredits(req.user.id, req.creditCost, {
        operationCode: 'crm.leads.create',
        idempotencyKey: req.get('idempotency-key'),
      })
      res.status(201).json({ remaining })
    } catch (err) {
      next(err)
    }
  })
  app.post('/old', requireCredits(crm, 'crm.old'), (req, res) => res.json({ ok: true }))
  app.get('/metrics', metricsHandler(crm))
  app.use((err, req, res, next) => res.status(503).json({ error: err.code }))

  t.is((await request(app).get('/leads')).status, 401)
  t.is((await request(app).get('/leads').set('x-test-user', 'u1')).status, 200)
  const denied = await request(app).get('/leads').set('x-test-user', 'u2')
  t.is(denied.status, 403)
  t.deepEqual(denied.body, { error: 'Insufficient permissions' })
  crm.apply('user-status-changed', { userId: 'u2', status: 'active' })
  t.is((await request(app).get('/leads').set('x-test-user', 'u2')).status, 200, 'after an event')

  const created = await request(app)
    .post('/leads')
    .set('x-test-user', 'u1')
    .set('idempotency-key', 'req-1')
  t.is(created.status, 201)
  t.deepEqual(created.body, { remaining: 97.5 })
  t.is((await request(app).post('/old').set('x-test-user', 'u1')).status, 404)
  const poor = await request(app).post('/leads').set('x-test-user', 'poor')
  t.is(poor.status, 402)
  t.like(poor.body, { error: 'Insufficient credits', required: 2.5, available: 1 })
  crm.failNext('getUserCredits', 'WRAPPER_UNAVAILABLE')
  const down = await request(app).post('/leads').set('x-test-user', 'u1')
  t.is(down.status, 503)
  t.deepEqual(down.body, { error: 'WRAPPER_UNAVAILABLE' })
  t.deepEqual(
    crm.deductions.map((d) => d.idempotencyKey),
    ['req-1'],
  )
  const metrics = await request(app).get('/metrics')
  t.is(metrics.status, 200)
  t.regex(metrics.text, /smart_crm_consumer_events_applied_total\{tenant="acme"\} 1/)
})

// ---- metrics, shutdown, Node's event loop ----------------------------------------------

test('metrics count as a consumer counts', async (t) => {
  const crm = await ready(t)
  crm.getCreditCost('crm.leads.create')
  crm.getCreditCost('crm.ghost')
  await crm.getUserProfile('u1')
  await crm.getUserProfile('u1')
  crm.apply('user-changed', { userId: 'u1' })
  t.throws(() => crm.apply('nope', {}))
  const m = crm.getMetrics()
  t.like(m, {
    criticalHits: 1,
    criticalMisses: 1,
    referenceHits: 1,
    referenceMisses: 1,
    referenceCacheSize: 0,
    criticalCacheSize: 10,
    eventsReceived: 2,
    eventsApplied: 1,
    wrapperRequests: 1,
    connected: true,
    resyncs: 0,
  })
  t.is(m.eventsRejected.unknownType, 1)
  t.is(m.overallHitRate, 0.5)
  t.regex(
    crm.metricsText(),
    /smart_crm_consumer_events_rejected_total\{tenant="acme",reason="unknownType"\} 1/,
  )
})

test('after shutdown(): calls fail with SHUTDOWN, the deductions stay readable', async (t) => {
  const crm = await ready(t)
  await crm.deductCredits('u1', 1, { idempotencyKey: 'k' })
  await crm.shutdown()
  await crm.shutdown()
  t.throws(() => crm.apply('user-changed', { userId: 'u1' }), { code: 'SHUTDOWN' })
  t.throws(() => crm.setReference('user:u1', null), { code: 'SHUTDOWN' })
  t.throws(() => crm.failNext('getUserProfile', 'NOT_FOUND'), { code: 'SHUTDOWN' })
  await t.throwsAsync(crm.getUserProfile('u1'), { code: 'SHUTDOWN' })
  await t.throwsAsync(crm.deductCredits('u1', 1), { code: 'SHUTDOWN' })
  t.is(crm.deductions.length, 1)
})

test('nothing keeps Node alive: a process with a live test consumer exits by itself', async (t) => {
  const script = `
    const { createTestConsumer } = require('smart-crm-consumer/testing')
    const crm = createTestConsumer({ tenantId: 'acme', credits: { a: 1 }, balances: { u: 5 } })
    crm.on('change', () => {})
    crm.initialize().then(async () => {
      crm.apply('credit-config-changed', { operationCode: 'a', newValue: 2 })
      await crm.getUserProfile('x').catch(() => {})
      await crm.deductCredits('u', 1)
      console.log('initialized', crm.getCreditCost('a'))
    })`
  const child = spawn(process.execPath, ['-e', script], { cwd: path.join(__dirname, '..') })
  let out = ''
  let printedAt = null
  child.stdout.on('data', (d) => {
    out += d
    if (printedAt === null && out.includes('initialized')) printedAt = Date.now()
  })
  child.stderr.on('data', (d) => (out += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
  const code = await new Promise((resolve) => child.on('exit', resolve))
  const exitedAt = Date.now()
  clearTimeout(timer)
  t.is(code, 0, out)
  t.is(out.trim(), 'initialized 2')
  t.true(exitedAt - printedAt < 1_000, `exited ${exitedAt - printedAt} ms after initializing`)
})

test('ESM import of the subpath', async (t) => {
  const child = spawn(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { createTestConsumer } from 'smart-crm-consumer/testing'
       import def from 'smart-crm-consumer/testing'
       const crm = createTestConsumer('acme')
       await crm.initialize()
       console.log(typeof def.createTestConsumer, crm.isConnected)`,
    ],
    { cwd: path.join(__dirname, '..') },
  )
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  const code = await new Promise((resolve) => child.on('exit', resolve))
  t.is(code, 0, out)
  t.is(out.trim(), 'function true')
})

test('createTestPool: the Express tenant(pool) middleware and the guards on test doubles; unknown tenants refused', async (t) => {
  const express = require('express')
  const request = require('supertest')
  const crmExpress = require('../lib/express.js')
  const { createTestPool } = require('../lib/testing.js')
  const pool = createTestPool({
    tenants: {
      acme: {
        credits: { 'crm.leads.create': 2.5 },
        roles: { sales: ['crm.leads.*'] },
        users: { u1: { status: 'active', roles: ['sales'] } },
        balances: { u1: 1 },
      },
    },
  })
  t.teardown(() => pool.shutdown())
  const app = express()
  app.use((req, res, next) => {
    const tenantId = req.get('x-tenant')
    req.user = tenantId ? { id: 'u1', tenantId } : undefined
    next()
  })
  app.use(crmExpress.tenant(pool))
  app.post(
    '/leads',
    crmExpress.requirePermission((req) => req.crm, 'crm.leads.create'),
    crmExpress.requireCredits((req) => req.crm, 'crm.leads.create'),
    (req, res) => res.json({ cost: req.creditCost }),
  )
  t.is((await request(app).post('/leads')).status, 401)
  const refused = await request(app).post('/leads').set('x-tenant', 'globex')
  t.is(refused.status, 403)
  t.deepEqual(refused.body, { error: 'Unknown tenant' })
  t.is((await request(app).post('/leads').set('x-tenant', 'a:b')).status, 403)
  // 1 credit against a cost of 2.5
  t.is((await request(app).post('/leads').set('x-tenant', 'acme')).status, 402)
  const acme = pool.peek('acme')
  t.true(acme instanceof SmartCRMConsumer)
  acme.apply('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 0.5 })
  const ok = await request(app).post('/leads').set('x-tenant', 'acme')
  t.is(ok.status, 200)
  t.deepEqual(ok.body, { cost: 0.5 })
  t.deepEqual(pool.tenants(), ['acme'])
  t.regex(pool.metricsText(), /smart_crm_consumer_critical_hits_total\{tenant="acme"\}/)
  const released = []
  pool.on('tenantReleased', (e) => released.push(e))
  await pool.release('acme')
  t.deepEqual(released, [{ tenantId: 'acme', reason: 'release' }])
  t.is(pool.peek('acme'), null)
})
