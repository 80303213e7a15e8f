'use strict'
// How errors cross the binding: each native error arrives as the JS error it
// stands for (TypeError/RangeError for bad arguments and options, Error
// otherwise), with its `code` set by the binding and a message without any
// prefix; no JS layer rebuilds it. Metrics and health cross as objects.

const test = require('ava')

const native = require('../index.js')
const { setup } = require('./helpers/fixture.js')

const NO_PREFIX = /^[^[]/

test('an invalid option from the native constructor is a RangeError with a code and a plain message', (t) => {
  const err = t.throws(
    () => new native.NativeConsumer({ tenantId: 'a:b', wrapperUrl: 'http://127.0.0.1:9' }, {}),
    { instanceOf: RangeError },
  )
  t.is(err.code, 'ERR_INVALID_OPTION')
  t.regex(err.message, /^option `tenantId` must be/)
})

test('a wrongly typed option from the native constructor is a TypeError', (t) => {
  const err = t.throws(
    () => new native.NativeConsumer({ tenantId: 42, wrapperUrl: 'http://127.0.0.1:9' }, {}),
    { instanceOf: TypeError },
  )
  t.is(err.code, 'ERR_INVALID_OPTION')
  t.regex(err.message, NO_PREFIX)
})

test('a Rust panic arrives with code INTERNAL, sync and async', async (t) => {
  const err = t.throws(() => native.__panicForTests('boom'))
  t.is(err.constructor, Error)
  t.is(err.code, 'INTERNAL')
  t.is(err.message, 'internal error (Rust panic): boom')
  const rejection = await t.throwsAsync(native.__panicForTestsAsync('boom async'))
  t.is(rejection.code, 'INTERNAL')
  t.is(rejection.message, 'internal error (Rust panic): boom async')
})

test('native reference reads: RangeError for an id, NOT_FOUND as an error, null on a miss', async (t) => {
  const { consumer, sim } = await setup(t)
  const n = consumer._native
  const err = t.throws(() => n.refLookup('user', '..'), { instanceOf: RangeError })
  t.is(err.code, 'ERR_OUT_OF_RANGE')
  t.regex(err.message, /^userId /)
  t.is(n.refLookup('user', 'u-ghost'), null, 'a miss')
  await t.throwsAsync(() => consumer.getUserProfile('u-ghost'), { code: 'NOT_FOUND' })
  const remembered = t.throws(() => n.refLookup('user', 'u-ghost'))
  t.is(remembered.code, 'NOT_FOUND', 'a remembered 404 is an error, not a sentinel')
  t.is(JSON.parse(n.refLookup('user', 'u-alice') ?? 'null'), null, 'not cached yet')
  await consumer.getUserProfile('u-alice')
  t.is(JSON.parse(n.refLookup('user', 'u-alice')).userId, 'u-alice')
  const unavailable = sim.fault('/api/users/u-bob/profile', { status: 503 })
  const e = await t.throwsAsync(n.refGet('user', 'u-bob'))
  t.is(e.constructor, Error)
  t.is(e.code, 'WRAPPER_UNAVAILABLE')
  t.regex(e.message, NO_PREFIX)
  unavailable.remove()
})

test('native userAccess: null for an unknown user, the access and a sequence number otherwise', async (t) => {
  const { consumer } = await setup(t)
  t.is(consumer._native.userAccess('u-ghost'), null)
  const a = consumer._native.userAccess('u-alice')
  t.is(a.status, 'active')
  t.deepEqual(a.roles, ['sales'])
  t.is(typeof a.seq, 'number')
})

test('native metrics and health are objects', async (t) => {
  const { consumer } = await setup(t)
  const m = consumer._native.metrics()
  t.is(typeof m, 'object')
  t.is(typeof m.eventsRejected, 'object')
  t.is(m.eventsRejected.malformed, 0)
  t.is(typeof m.referenceCacheBytes, 'number')
  const h = consumer._native.health()
  t.is(h.degraded, false)
  t.is(h.reason, null)
  t.is(h.circuit, 'closed')
  t.is(typeof h.lastSyncAt, 'number')
})

test('errors from the public API carry class, code and a plain message', async (t) => {
  const { consumer, sim } = await setup(t)
  const range = await t.throwsAsync(() => consumer.getUserProfile(''), { instanceOf: RangeError })
  t.is(range.code, 'ERR_OUT_OF_RANGE')
  t.regex(range.message, /^userId /)
  const type = await t.throwsAsync(() => consumer.getUserProfile(7), { instanceOf: TypeError })
  t.is(type.code, 'ERR_INVALID_ARG_TYPE')
  sim.fault('/api/users/u-carol/credits/deduct', { status: 402, json: { available: 1 } })
  const poor = await t.throwsAsync(() => consumer.deductCredits('u-carol', 5))
  t.is(poor.code, 'INSUFFICIENT_CREDITS')
  t.is(poor.available, 1, 'the balance the Wrapper reported')
  t.regex(poor.message, NO_PREFIX)
  const opt = t.throws(() => new consumer.constructor({ tenantId: 't', wrapperUrl: 'ftp://x' }), {
    instanceOf: RangeError,
  })
  t.is(opt.code, 'ERR_INVALID_OPTION')
})

test('eventsRejected lists every reason, in the same order every time', async (t) => {
  const { consumer } = await setup(t)
  const reasons = Object.keys(consumer.getMetrics().eventsRejected)
  t.deepEqual(reasons, [...reasons].sort())
  t.is(reasons.length, 9)
  for (let i = 0; i < 20; i++)
    t.deepEqual(Object.keys(consumer.getMetrics().eventsRejected), reasons)
})
