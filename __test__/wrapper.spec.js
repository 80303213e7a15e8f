'use strict'
// The Wrapper client's defences (SPEC §4): paging that cycles or never ends,
// redirects, response bodies over `maxResponseBytes`, the byte bound of the
// reference cache, and the two circuit breakers (snapshot loads and reference
// reads) that recover on their first healthy attempt without starving each
// other. Everything runs against the real simulator over HTTP.

const http = require('node:http')
const zlib = require('node:zlib')
const test = require('ava')

const { setup, waitFor, nextEvent } = require('./helpers/fixture.js')
const { SmartCRMConsumer } = require('../lib/index.js')
const { defaultSeed } = require('../tools/wrapper-sim.js')

const LISTS = /^\/api\/(credits\/configs|roles|users\/access|configs\/active)(\?|$)/
const isList = (r) => LISTS.test(r.path)

/** A second HTTP server, the target of redirects: it must never be reached. */
async function startTarget(t) {
  const requests = []
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      requests.push({ method: req.method, path: req.url, headers: req.headers, body })
      res.writeHead(200, { 'Content-Type': 'application/json' })
      res.end(JSON.stringify({ userId: 'stolen', items: [], nextCursor: null, remaining: 1 }))
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  return { url: `http://127.0.0.1:${server.address().port}`, requests }
}

// ---------------------------------------------------------------------------
// Paging

test('a cursor cycle (a → b → a) fails the load with INVALID_RESPONSE after a few requests', async (t) => {
  const { consumer, sim } = await setup(t, {
    init: false,
    sim: { cursors: ['a', 'b', 'a'] },
    consumer: { initTimeoutMs: 3000 },
  })
  const failed = nextEvent(consumer, 'error', { timeout: 5000 })
  const init = consumer.initialize()
  init.catch(() => {})
  const first = await failed
  t.is(first.code, 'INVALID_RESPONSE')
  t.regex(first.message, /cursor/i)
  // Each list: the first page, then a, then b, whose nextCursor `a` was seen before.
  t.true(sim.count(isList) <= 12, `${sim.count(isList)} list requests`)
  const err = await t.throwsAsync(init)
  t.is(err.code, 'INVALID_RESPONSE')
})

test('a cursor sequence without repeats loads', async (t) => {
  const { consumer, sim } = await setup(t, { sim: { cursors: ['a', 'b', 'c'] } })
  t.is(consumer.getCreditCost('crm.leads.create'), 2.5)
  t.is(sim.count('/api/roles?cursor=c'), 1)
})

/** The default seed with `n` more users (about 70 bytes each on the wire). */
function manyUsers(n) {
  const data = defaultSeed()
  for (let i = 0; i < n; i++) {
    const userId = `u-${String(i).padStart(5, '0')}`
    data.users.set(userId, { userId, status: 'active', roles: ['sales'], version: 1 })
  }
  return data
}

test('a load is bounded to 16 × maxResponseBytes over all its pages', async (t) => {
  // Pages of ~1.4 KB, each under the 2 KiB limit; ~140 KB in all, over 32 KiB.
  const { consumer, sim } = await setup(t, {
    init: false,
    sim: { data: manyUsers(2000), pageSize: 20 },
    consumer: { maxResponseBytes: 2048, initTimeoutMs: 3000 },
  })
  const failed = nextEvent(consumer, 'error', { timeout: 5000 })
  consumer.initialize().catch(() => {})
  const err = await failed
  t.is(err.code, 'INVALID_RESPONSE')
  t.regex(err.message, /32768 bytes/)
  t.true(sim.count('/api/users/access') < 40, `${sim.count('/api/users/access')} pages`)

  // The same data loads when the budget is large enough.
  const ok = await setup(t, {
    sim: { data: manyUsers(2000), pageSize: 20 },
    consumer: { maxResponseBytes: 16 * 1024 },
  })
  t.is(ok.consumer.getUserStatus('u-01999'), 'active')
})

// ---------------------------------------------------------------------------
// Compressed answers

for (const compression of ['gzip', 'br']) {
  test(`${compression} answers: asked for, decoded, the data intact`, async (t) => {
    const { consumer, sim } = await setup(t, {
      sim: { data: manyUsers(2000), pageSize: 500, compression },
    })
    t.is(consumer.getUserStatus('u-01999'), 'active')
    t.is(consumer.getCreditCost('crm.leads.create'), 2.5)
    const lists = sim.requests.filter(isList)
    t.true(lists.length > 0)
    for (const r of lists) {
      t.regex(String(r.headers['accept-encoding']), new RegExp(`\\b${compression}\\b`))
    }
    const profile = await consumer.getUserProfile('u-alice')
    t.is(profile.userId, 'u-alice')
  })
}

test('a compressed body is bounded by what it decodes to (maxResponseBytes), not by its size on the wire', async (t) => {
  const { consumer, sim } = await setup(t, { consumer: { maxResponseBytes: 64 * 1024 } })
  // ~4 KB on the wire, 4 MiB once decoded
  const bomb = zlib.gzipSync(
    JSON.stringify({ userId: 'u-alice', pad: 'a'.repeat(4 * 1024 * 1024) }),
  )
  t.true(bomb.length < 64 * 1024)
  sim.fault('/api/users/u-alice/profile', {
    status: 200,
    body: bomb,
    headers: { 'Content-Encoding': 'gzip' },
    times: 1,
  })
  const err = await t.throwsAsync(consumer.getUserProfile('u-alice'))
  t.is(err.code, 'INVALID_RESPONSE')
  t.regex(err.message, /maxResponseBytes/)
  // the next answer, uncompressed and small, is read as usual
  t.is((await consumer.getUserProfile('u-alice')).userId, 'u-alice')
})

// ---------------------------------------------------------------------------
// Redirects

for (const status of [302, 307]) {
  test(`a ${status} is INVALID_RESPONSE everywhere and the redirect target receives nothing`, async (t) => {
    const target = await startTarget(t)
    const { consumer, sim } = await setup(t, {
      consumer: { circuitBreaker: { failures: 1, coolDownMs: 60000 } },
    })
    const redirect = (path) =>
      sim.fault(path, { status, headers: { Location: `${target.url}${path}` } })

    redirect('/api/users/u-alice/profile')
    const ref = await t.throwsAsync(consumer.getUserProfile('u-alice'))
    t.is(ref.code, 'INVALID_RESPONSE')
    t.regex(ref.message, new RegExp(`${status}`))
    t.is(sim.count('/api/users/u-alice/profile'), 1, 'not retried')

    // The deduction first: a fault on the balance path would match it too (prefix).
    const deductPath = '/api/users/u-alice/credits/deduct'
    redirect(deductPath)
    redirect('/api/users/u-alice/credits')
    const ded = await t.throwsAsync(
      consumer.deductCredits('u-alice', 1, { operationCode: 'crm.leads.create' }),
    )
    t.is(ded.code, 'INVALID_RESPONSE')
    t.truthy(ded.idempotencyKey, 'the key to retry with')
    t.is(sim.count(deductPath), 1, 'not retried')
    const bal = await t.throwsAsync(consumer.getUserCredits('u-alice'))
    t.is(bal.code, 'INVALID_RESPONSE')
    t.is(sim.data.balances.get('u-alice'), 100)

    t.is(consumer.health().circuit, 'closed', 'a redirect is an answer, not an outage')
    t.false(consumer.health().degraded)

    // A list endpoint at start.
    const other = await setup(t, { init: false, consumer: { initTimeoutMs: 2000 } })
    other.sim.fault('/api/roles', {
      status,
      headers: { Location: `${target.url}/api/roles` },
    })
    const init = await t.throwsAsync(other.consumer.initialize())
    t.is(init.code, 'INVALID_RESPONSE')

    t.deepEqual(target.requests, [], 'no request, token, tenant header or body left for the target')
  })
}

// ---------------------------------------------------------------------------
// Response size

test('maxResponseBytes is validated and named in errors', (t) => {
  const make = (v) =>
    new SmartCRMConsumer({ tenantId: 't', wrapperUrl: 'http://127.0.0.1:9', maxResponseBytes: v })
  for (const bad of [0, -1, 1.5, 2 ** 41]) {
    const err = t.throws(() => make(bad), { instanceOf: RangeError })
    t.regex(err.message, /maxResponseBytes/)
  }
  const err = t.throws(() => make('1024'), { instanceOf: TypeError })
  t.regex(err.message, /maxResponseBytes/)
  t.notThrows(() => make(1))
  t.notThrows(() => make(1024 * 1024))
})

test('a body over maxResponseBytes is INVALID_RESPONSE, not retried, and not read to its end', async (t) => {
  const data = defaultSeed()
  data.profiles.set('u-big', { userId: 'u-big', blob: 'x'.repeat(10_000) })
  const { consumer, sim } = await setup(t, {
    sim: { data },
    consumer: { maxResponseBytes: 4096, requestTimeoutMs: 10_000 },
  })
  // Content-Length over the limit.
  const big = await t.throwsAsync(consumer.getUserProfile('u-big'))
  t.is(big.code, 'INVALID_RESPONSE')
  t.regex(big.message, /maxResponseBytes/)
  t.is(sim.count('/api/users/u-big/profile'), 1, 'not retried')

  // A Content-Length far over the limit whose body never comes: refused from the header.
  sim.fault('/api/users/u-alice/profile', {
    status: 200,
    json: { userId: 'u-alice' },
    headers: { 'Content-Length': String(2 ** 30) },
  })
  let started = Date.now()
  const declared = await t.throwsAsync(consumer.getUserProfile('u-alice'))
  t.is(declared.code, 'INVALID_RESPONSE')
  t.true(Date.now() - started < 5000, 'no wait for a body that is not read')

  // A chunked body that never ends: reading stops at the limit.
  const flood = { flood: true }
  sim.fault('/api/users/u-carol/profile', flood)
  started = Date.now()
  const endless = await t.throwsAsync(consumer.getUserProfile('u-carol'))
  t.is(endless.code, 'INVALID_RESPONSE')
  t.regex(endless.message, /maxResponseBytes/)
  t.true(Date.now() - started < 5000, 'stopped at the limit, not at the timeout')
  t.is(sim.count('/api/users/u-carol/profile'), 1, 'not retried')

  t.is(consumer.health().circuit, 'closed')
  // Small answers still pass.
  t.is((await consumer.getUserProfile('u-bob')).userId, 'u-bob')
})

// ---------------------------------------------------------------------------
// The reference cache's byte bound

test('the reference cache never holds more than maxReferenceBytes, and a larger entry is served but not kept', async (t) => {
  const data = defaultSeed()
  for (let i = 0; i < 60; i++) {
    const userId = `p-${i}`
    data.profiles.set(userId, { userId, bio: `${i} `.repeat(60) })
  }
  data.profiles.set('p-huge', { userId: 'p-huge', bio: 'y'.repeat(5000) })
  const max = 2000
  const { consumer, sim } = await setup(t, { sim: { data }, consumer: { maxReferenceBytes: max } })

  const huge = await consumer.getUserProfile('p-huge')
  t.is(huge.bio.length, 5000, 'served')
  t.is(consumer.getCacheExpiry('user:p-huge'), null, 'not kept')
  await consumer.getUserProfile('p-huge')
  t.is(sim.count('/api/users/p-huge/profile'), 2, 'the next read asks again')

  let held = 0
  for (let round = 0; round < 2; round++) {
    for (let i = 0; i < 60; i++) {
      const p = await consumer.getUserProfile(`p-${i}`)
      t.is(p.userId, `p-${i}`)
      const m = consumer.getMetrics()
      if (m.referenceCacheBytes > max) {
        t.fail(`${m.referenceCacheBytes} bytes held after reading p-${i}`)
        return
      }
      held = Math.max(held, m.referenceCacheSize)
    }
  }
  t.true(held >= 2, 'entries are kept up to the bound')
  // Counters agree with what is held: everything invalidated leaves nothing.
  for (let i = 0; i < 60; i++) consumer.invalidate(`user:p-${i}`)
  const m = consumer.getMetrics()
  t.is(m.referenceCacheSize, 0)
  t.is(m.referenceCacheBytes, 0)
})

// ---------------------------------------------------------------------------
// Circuit breakers

test('the first reload after the cool-down succeeds: the probe admits a whole snapshot', async (t) => {
  const { consumer, sim } = await setup(t, {
    init: false,
    // The reload retry waits at least 250 ms, longer than the cool-down: every
    // retry comes after it, so none may fail fast.
    consumer: { circuitBreaker: { failures: 1, coolDownMs: 100 }, initTimeoutMs: 30_000 },
  })
  const fault = sim.fault(isList, { status: 503 })
  const failures = []
  let healedAt = null
  consumer.on('error', (e) => {
    failures.push({ message: e.message, afterHeal: healedAt !== null })
    // Two failed loads: the circuit opened, and a probe after the cool-down failed too.
    if (failures.length === 2) {
      fault.remove()
      healedAt = sim.requests.length
    }
  })
  await consumer.initialize()
  t.is(failures.length, 2)
  t.deepEqual(
    failures.filter((f) => /circuit open/.test(f.message)),
    [],
    'no load after the cool-down was refused by the circuit',
  )
  t.deepEqual(
    failures.filter((f) => f.afterHeal),
    [],
    'the first reload after the Wrapper healed succeeded',
  )
  t.is(sim.requests.slice(healedAt).filter(isList).length, 4, 'one request per list')
  t.is(consumer.health().circuit, 'closed')
})

test('failing reloads never fail reference reads fast; the reference circuit heals on its first healthy read', async (t) => {
  const { consumer, sim } = await setup(t, {
    init: false,
    consumer: { circuitBreaker: { failures: 1, coolDownMs: 400 }, initTimeoutMs: 30_000 },
  })
  const lists = sim.fault(isList, { status: 503 })
  const failed = nextEvent(consumer, 'error')
  const init = consumer.initialize()
  init.catch(() => {})
  await failed
  t.is(consumer.health().circuit, 'open', 'health shows the open snapshot circuit')
  const alice = await consumer.getUserProfile('u-alice')
  t.is(alice.userId, 'u-alice', 'a reference read right after a failed reload goes out')

  // Now the reference path fails and opens its own circuit, while reloads keep failing.
  const bob = sim.fault('/api/users/u-bob/profile', { status: 503 })
  const down = await t.throwsAsync(consumer.getUserProfile('u-bob'))
  t.is(down.code, 'WRAPPER_UNAVAILABLE')
  const fast = await t.throwsAsync(consumer.getUserProfile('u-carol'))
  t.regex(fast.message, /circuit open/)
  t.is(sim.count('/api/users/u-carol/profile'), 0)
  bob.remove()
  const before = sim.count('/api/users/u-bob/profile')
  const healed = await waitFor(() => consumer.getUserProfile('u-bob').catch(() => null), {
    timeout: 5000,
    message: 'the reference probe after the cool-down',
  })
  t.is(healed.userId, 'u-bob')
  t.is(sim.count('/api/users/u-bob/profile') - before, 1, 'the first healthy attempt closed it')

  lists.remove()
  await init
  await waitFor(() => consumer.health().circuit === 'closed', { message: 'both circuits closed' })
})

test('an open reference circuit never fails a reload fast, and a reload does not close it', async (t) => {
  const { consumer, sim } = await setup(t, {
    consumer: { circuitBreaker: { failures: 1, coolDownMs: 60_000 }, refreshIntervalMs: 1000 },
  })
  sim.fault(/^\/api\/users\/[^/]+\/profile/, { status: 503 })
  const down = await t.throwsAsync(consumer.getUserProfile('u-alice'))
  t.is(down.code, 'WRAPPER_UNAVAILABLE')
  t.is(consumer.health().circuit, 'open')

  const record = sim.data.credits.get('crm.leads.create')
  sim.data.credits.set('crm.leads.create', { ...record, creditCost: 7, version: 2 })
  await waitFor(() => consumer.getCreditCost('crm.leads.create') === 7, {
    timeout: 5000,
    message: 'the periodic reload despite the open reference circuit',
  })
  const fast = await t.throwsAsync(consumer.getUserProfile('u-bob'))
  t.regex(fast.message, /circuit open/, 'the reference circuit is still open')
  t.is(sim.count('/api/users/u-bob/profile'), 0)
})
