'use strict'
// Credits (SPEC §2 "Credits"): getUserCredits (never cached), checkCredits
// (unknown/inactive operations, balance against cost, a cost of 0), and
// deductCredits (request body, idempotency keys given or generated, 402 not
// retried, 5xx and connection resets retried with the same key so a deduction
// is applied once), plus argument validation.

const test = require('ava')

const { setup } = require('./helpers/fixture.js')

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const deductPath = (userId) => `/api/users/${userId}/credits/deduct`
const creditsPath = (userId) => `/api/users/${userId}/credits`

/** Deduct requests the simulator received (faulted ones included), oldest first. */
const deductRequests = (sim, userId) =>
  sim.requests.filter((r) => r.method === 'POST' && r.path === deductPath(userId))

// ---- getUserCredits ---------------------------------------------------------------

test('getUserCredits resolves to the balance and is never cached', async (t) => {
  const { sim, consumer } = await setup(t)
  t.is(await consumer.getUserCredits('u-alice'), 100)
  t.is(sim.count(creditsPath('u-alice')), 1)

  sim.data.balances.set('u-alice', 42.5)
  t.is(await consumer.getUserCredits('u-alice'), 42.5, 'the second call sees the new balance')
  t.is(sim.count(creditsPath('u-alice')), 2, 'two calls, two requests')
  const r = sim.requests.find((x) => x.path === creditsPath('u-alice'))
  t.is(r.method, 'GET')
})

const creditsError = test.macro({
  async exec(t, spec, code) {
    const { sim, consumer } = await setup(t)
    sim.fault(creditsPath('u-alice'), spec)
    await t.throwsAsync(() => consumer.getUserCredits('u-alice'), { code })
  },
  title: (_, spec, code) =>
    `getUserCredits: a Wrapper answer ${JSON.stringify(spec)} rejects ${code}`,
})

test(creditsError, { json: { available: 'lots' } }, 'INVALID_RESPONSE')
test(creditsError, { json: [100] }, 'INVALID_RESPONSE')
test(creditsError, { status: 200, body: 'not json' }, 'INVALID_RESPONSE')
test(creditsError, { status: 401 }, 'WRAPPER_AUTH')
test(creditsError, { status: 503 }, 'WRAPPER_UNAVAILABLE')

// ---- checkCredits -----------------------------------------------------------------

test('checkCredits is false for an unknown operation and asks for no balance', async (t) => {
  const { sim, consumer } = await setup(t)
  t.false(await consumer.checkCredits('crm.nope', 'u-alice'))
  t.is(sim.count(creditsPath('u-alice')), 0)
})

test('checkCredits is false for an inactive operation', async (t) => {
  const { sim, consumer } = await setup(t)
  // crm.legacy.import costs 5 and is inactive; the balance (100) would cover it
  t.is(sim.data.credits.get('crm.legacy.import').isActive, false)
  t.false(await consumer.checkCredits('crm.legacy.import', 'u-alice'))
})

test('checkCredits compares the balance with the cost', async (t) => {
  const { sim, consumer } = await setup(t)
  // crm.reports.generate costs 10
  t.true(await consumer.checkCredits('crm.reports.generate', 'u-alice'), '100 >= 10')
  t.false(await consumer.checkCredits('crm.reports.generate', 'u-carol'), '1 < 10')
  sim.data.balances.set('u-exact', 10)
  t.true(await consumer.checkCredits('crm.reports.generate', 'u-exact'), '10 >= 10')
  sim.data.balances.set('u-exact', 9.99)
  t.false(await consumer.checkCredits('crm.reports.generate', 'u-exact'), '9.99 < 10')
  t.is(sim.count(creditsPath('u-exact')), 2, 'each check asks for the current balance')
})

test('checkCredits: a cost of 0 is a real cost', async (t) => {
  const { sim, consumer } = await setup(t)
  // crm.contacts.export costs 0
  t.is(consumer.getCreditCost('crm.contacts.export'), 0)
  sim.data.balances.set('u-broke', 0)
  t.true(await consumer.checkCredits('crm.contacts.export', 'u-broke'), '0 >= 0')
})

// ---- deductCredits ----------------------------------------------------------------

test('deductCredits sends { amount, operationCode, idempotencyKey } and resolves { remaining, idempotencyKey }', async (t) => {
  const { sim, consumer } = await setup(t)
  const result = await consumer.deductCredits('u-alice', 2.5, {
    operationCode: 'crm.leads.create',
    idempotencyKey: 'lead:42',
  })
  t.deepEqual(result, { remaining: 97.5, idempotencyKey: 'lead:42' })
  t.is(sim.data.balances.get('u-alice'), 97.5)

  const requests = deductRequests(sim, 'u-alice')
  t.is(requests.length, 1)
  t.deepEqual(JSON.parse(requests[0].body), {
    amount: 2.5,
    operationCode: 'crm.leads.create',
    idempotencyKey: 'lead:42',
  })
  t.is(sim.deductions.length, 1)
  t.is(sim.deductions[0].status, 200)
})

test('deductCredits generates a UUID-like idempotency key per call when none is given', async (t) => {
  const { sim, consumer } = await setup(t)
  const a = await consumer.deductCredits('u-alice', 1, { operationCode: 'crm.leads.delete' })
  const b = await consumer.deductCredits('u-alice', 1)
  t.regex(a.idempotencyKey, UUID)
  t.regex(b.idempotencyKey, UUID)
  t.not(a.idempotencyKey, b.idempotencyKey, 'a fresh key per call')
  t.is(a.remaining, 99)
  t.is(b.remaining, 98)
  t.is(sim.data.balances.get('u-alice'), 98, 'two calls, two deductions')

  const bodies = deductRequests(sim, 'u-alice').map((r) => JSON.parse(r.body))
  t.is(bodies.length, 2)
  t.is(bodies[0].idempotencyKey, a.idempotencyKey, 'the key sent is the key returned')
  t.is(bodies[1].idempotencyKey, b.idempotencyKey)
  t.is(bodies[0].amount, 1)
  t.is(bodies[0].operationCode, 'crm.leads.delete')
})

test('a 402 rejects INSUFFICIENT_CREDITS after exactly one request', async (t) => {
  const { sim, consumer } = await setup(t)
  await t.throwsAsync(
    () => consumer.deductCredits('u-carol', 5, { operationCode: 'crm.legacy.import' }),
    { code: 'INSUFFICIENT_CREDITS' },
  )
  t.is(deductRequests(sim, 'u-carol').length, 1, 'not retried')
  t.is(sim.data.balances.get('u-carol'), 1, 'nothing deducted')
})

const deductShape = test.macro({
  async exec(t, spec) {
    const { sim, consumer } = await setup(t)
    sim.fault(deductPath('u-alice'), { ...spec, times: 1 })
    await t.throwsAsync(() => consumer.deductCredits('u-alice', 1), { code: 'INVALID_RESPONSE' })
  },
  title: (_, spec) =>
    `deductCredits: a Wrapper answer ${JSON.stringify(spec)} rejects INVALID_RESPONSE`,
})

test(deductShape, { json: { remaining: 'lots' } })
test(deductShape, { json: [99] })

const retriedOnce = test.macro({
  async exec(t, spec) {
    const { sim, consumer } = await setup(t)
    const fault = sim.fault(deductPath('u-alice'), { ...spec, times: 1 })
    const result = await consumer.deductCredits('u-alice', 3, {
      operationCode: 'crm.leads.create',
      idempotencyKey: 'retry-key-1',
    })
    t.is(fault.applied, 1, 'the fault hit the first attempt')
    t.deepEqual(result, { remaining: 97, idempotencyKey: 'retry-key-1' })
    t.is(sim.data.balances.get('u-alice'), 97, 'deducted exactly once')

    const requests = deductRequests(sim, 'u-alice')
    t.true(requests.length >= 2, 'retried')
    for (const r of requests) {
      t.is(JSON.parse(r.body).idempotencyKey, 'retry-key-1', 'every attempt carries the same key')
    }
    t.is(
      sim.deductions.filter((d) => !d.replay && d.status === 200).length,
      1,
      'one real deduction',
    )
  },
  title: (_, spec) => `deductCredits retries ${JSON.stringify(spec)} with the same idempotency key`,
})

test(retriedOnce, { status: 500 })
test(retriedOnce, { status: 503, apply: true })
test(retriedOnce, { reset: true })
test(retriedOnce, { reset: true, apply: true })

test('deductCredits gives up after bounded retries on a persistent 5xx', async (t) => {
  const { sim, consumer } = await setup(t)
  sim.fault(deductPath('u-alice'), { status: 502 })
  const started = Date.now()
  await t.throwsAsync(() => consumer.deductCredits('u-alice', 1), { code: 'WRAPPER_UNAVAILABLE' })
  const requests = deductRequests(sim, 'u-alice')
  t.true(requests.length >= 2 && requests.length <= 10, `${requests.length} attempts`)
  t.is(new Set(requests.map((r) => JSON.parse(r.body).idempotencyKey)).size, 1, 'one key')
  t.true(Date.now() - started < 4000)
  t.is(sim.data.balances.get('u-alice'), 100)
})

// ---- arguments ----------------------------------------------------------------------

test("'', '.' and '..' as userId reject with RangeError and request nothing", async (t) => {
  const { sim, consumer } = await setup(t)
  const before = sim.requests.length
  for (const id of ['', '.', '..']) {
    const label = JSON.stringify(id)
    await t.throwsAsync(() => consumer.getUserCredits(id), { instanceOf: RangeError }, label)
    await t.throwsAsync(
      () => consumer.checkCredits('crm.leads.create', id),
      { instanceOf: RangeError },
      label,
    )
    await t.throwsAsync(() => consumer.deductCredits(id, 1), { instanceOf: RangeError }, label)
  }
  t.is(sim.requests.length, before)
})

test('a non-string userId rejects with TypeError', async (t) => {
  const { sim, consumer } = await setup(t)
  const before = sim.requests.length
  for (const id of [7, null, undefined, { id: 'u-alice' }]) {
    await t.throwsAsync(() => consumer.getUserCredits(id), { instanceOf: TypeError })
    await t.throwsAsync(() => consumer.deductCredits(id, 1), { instanceOf: TypeError })
  }
  t.is(sim.requests.length, before)
})

test('deductCredits: a non-number amount is a TypeError, NaN/negative/Infinity a RangeError', async (t) => {
  const { sim, consumer } = await setup(t)
  const before = sim.requests.length
  for (const amount of ['5', null, undefined, 5n, { amount: 5 }]) {
    await t.throwsAsync(
      () => consumer.deductCredits('u-alice', amount),
      { instanceOf: TypeError },
      String(amount),
    )
  }
  for (const amount of [Number.NaN, -1, -0.01, Infinity, -Infinity]) {
    await t.throwsAsync(
      () => consumer.deductCredits('u-alice', amount),
      { instanceOf: RangeError },
      String(amount),
    )
  }
  t.is(sim.requests.length, before, 'no request')
  t.is(sim.data.balances.get('u-alice'), 100)
})

// ---- the idempotency key on rejections ------------------------------------------------

const answerLost = test.macro({
  async exec(t, spec, given) {
    const { sim, consumer } = await setup(t)
    // The Wrapper applies the deduction every time, but the answer never arrives.
    const fault = sim.fault(deductPath('u-alice'), { ...spec, apply: true })
    const err = await t.throwsAsync(
      () => consumer.deductCredits('u-alice', 3, { idempotencyKey: given }),
      { code: 'WRAPPER_UNAVAILABLE' },
    )
    t.is(typeof err.idempotencyKey, 'string', 'the rejection carries the key it used')
    if (given) t.is(err.idempotencyKey, given)
    else t.regex(err.idempotencyKey, UUID)
    t.is(sim.data.balances.get('u-alice'), 97, 'the Wrapper did apply it')
    fault.remove()
    const retry = await consumer.deductCredits('u-alice', 3, { idempotencyKey: err.idempotencyKey })
    t.deepEqual(retry, { remaining: 97, idempotencyKey: err.idempotencyKey })
    t.is(sim.data.balances.get('u-alice'), 97, 'the retry is charged once in all')
    t.is(
      sim.deductions.filter((d) => !d.replay && d.status === 200).length,
      1,
      'one real deduction',
    )
    const keys = new Set(
      deductRequests(sim, 'u-alice').map((r) => JSON.parse(r.body).idempotencyKey),
    )
    t.deepEqual([...keys], [err.idempotencyKey], 'every attempt and the retry used one key')
  },
  title: (_, spec, given) =>
    `an applied deduction whose answer is lost (${JSON.stringify(spec)}, key ${given ? 'given' : 'generated'}) rejects with err.idempotencyKey; a retry with it is charged once`,
})

test(answerLost, { status: 503 }, undefined)
test(answerLost, { reset: true }, undefined)
test(answerLost, { status: 503 }, 'order-7')

test('every rejection of deductCredits carries the idempotency key', async (t) => {
  const { sim, consumer } = await setup(t)
  const rejections = [
    [() => consumer.deductCredits('u-carol', 5), 'INSUFFICIENT_CREDITS'],
    [() => consumer.deductCredits('u-alice', -1), 'ERR_OUT_OF_RANGE'],
    [() => consumer.deductCredits('u-alice', '5'), 'ERR_INVALID_ARG_TYPE'],
    [() => consumer.deductCredits('..', 1), 'ERR_OUT_OF_RANGE'],
    [() => consumer.deductCredits('u-alice', 1, { operationCode: 7 }), 'ERR_INVALID_ARG_TYPE'],
  ]
  for (const [call, code] of rejections) {
    const err = await t.throwsAsync(call, { code }, call.toString())
    t.regex(err.idempotencyKey, UUID, call.toString())
  }
  sim.fault(deductPath('u-alice'), { status: 500 })
  const given = await t.throwsAsync(
    () => consumer.deductCredits('u-alice', 1, { idempotencyKey: 'k-1' }),
    { code: 'WRAPPER_UNAVAILABLE' },
  )
  t.is(given.idempotencyKey, 'k-1')
  const badKey = await t.throwsAsync(
    () => consumer.deductCredits('u-alice', 1, { idempotencyKey: 42 }),
    { instanceOf: TypeError },
  )
  t.false('idempotencyKey' in badKey, 'a key that is not a string is not a key')
})
