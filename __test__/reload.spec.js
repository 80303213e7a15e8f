'use strict'
// Full reloads under pressure (SPEC §3, §7): a storm of resync-required,
// events that arrive while a reload downloads, failing reloads, the cause
// initialize() names, and a consumer in a worker thread that is terminated.

const path = require('node:path')
const { Worker } = require('node:worker_threads')
const test = require('ava')

const { setup, waitFor, nextEvent } = require('./helpers/fixture.js')

const OP = 'crm.leads.create'

/** Clients of the test's Redis that hold subscriptions (CLIENT LIST `sub=`). */
async function subscribers(client) {
  const list = String(await client.command('CLIENT', 'LIST'))
  return list.split('\n').filter((l) => / sub=[1-9]/.test(l)).length
}

test('1,000 resync-required in 10 s with the default jitter: at most 5 reloads, each completes, data equals the Wrapper', async (t) => {
  const f = await setup(t, { consumer: { resyncJitterMs: 5000, refreshIntervalMs: 0 } })
  const { consumer, sim } = f
  // A slow snapshot: under the old rules every request restarted it, and none completed.
  sim.fault('/api/roles', { delayMs: 300 })
  const rolesBefore = sim.count('/api/roles')
  const resyncs = []
  consumer.on('resync', (e) => resyncs.push(e.reason))
  for (let i = 0; i < 100; i++) {
    const sends = []
    for (let j = 0; j < 10; j++) sends.push(f.publish('control', f.event('resync-required', {})))
    await Promise.all(sends)
    // The Wrapper changes without an event halfway through: a reload must bring it.
    if (i === 50) sim.data.credits.set(OP, { operationCode: OP, creditCost: 9, isActive: true })
    await new Promise((r) => setTimeout(r, 100))
  }
  const completed = () => consumer.getMetrics().resyncs
  const started = () => sim.count('/api/roles') - rolesBefore
  await waitFor(() => consumer.getCreditCost(OP) === 9 && completed() === started(), {
    timeout: 20_000,
    message: 'the Wrapper data after the storm, every reload completed',
  })
  // Whatever was still asked for starts within one jitter interval (5 s).
  await new Promise((r) => setTimeout(r, 6000))
  await waitFor(() => completed() === started(), { message: 'the last reload completed' })
  t.is(completed(), started(), 'every reload that started completed')
  t.true(started() >= 1 && started() <= 5, `${started()} reloads for 1,000 requests`)
  t.is(consumer.getMetrics().eventsApplied >= 1000, true)
  t.is(consumer.getCreditCost(OP), 9)
  t.true(consumer.isConnected)
  t.true(resyncs.every((r) => r === 'resync-required'))
})

test('an event that looks stale against the old store is re-checked against the snapshot being loaded', async (t) => {
  const f = await setup(t, { init: false })
  const { consumer, sim } = f
  sim.data.credits.set(OP, { operationCode: OP, creditCost: 10, isActive: true, version: 10 })
  await consumer.initialize()
  t.is(consumer.getCreditCost(OP), 10)
  // The Wrapper is restored from a backup at version 1 and asks for a resync.
  sim.data.credits.set(OP, { operationCode: OP, creditCost: 1, isActive: true, version: 1 })
  const gate = sim.gate('/api/credits/configs')
  await f.publish('control', f.event('resync-required', {}))
  await waitFor(() => gate.waiting === 1, { message: 'the reload holding its snapshot request' })
  // A change made after the restore (version 2): stale against the old store's 10...
  await f.publish(
    'credit-configs',
    f.event('credit-config-changed', { operationCode: OP, newValue: 2 }, { version: 2 }),
  )
  await waitFor(() => consumer.getMetrics().eventsRejected.stale === 1, {
    message: 'the event rejected as stale against the old store',
  })
  sim.data.credits.set(OP, { operationCode: OP, creditCost: 1, isActive: true, version: 1 })
  const resynced = nextEvent(consumer, 'resync')
  gate.release()
  await resynced
  // ...but newer than the snapshot: it is applied on top of it.
  t.is(consumer.getCreditCost(OP), 2)
  await f.publish(
    'credit-configs',
    f.event('credit-config-changed', { operationCode: OP, newValue: 3 }, { version: 2 }),
  )
  await f.settle()
  t.is(consumer.getCreditCost(OP), 2, 'version 2 is now the one held')
})

test('initialize() names the snapshot, not Redis, when Redis is up and the Wrapper hangs', async (t) => {
  const { consumer, sim } = await setup(t, {
    consumer: { initTimeoutMs: 1500, requestTimeoutMs: 5000 },
    init: false,
  })
  const hang = sim.fault('/api/users/access', { hang: true })
  const err = await t.throwsAsync(consumer.initialize(), { code: 'WRAPPER_UNAVAILABLE' })
  t.regex(err.message, /snapshot/)
  t.true(hang.applied >= 1)
  t.false(consumer.health().ready)
})

test('a failed reload is retried with backoff; meanwhile health says resync-failed and lastSyncAt stays', async (t) => {
  // (the circuit breaker has its own tests: here every retry reaches the Wrapper)
  const f = await setup(t, { consumer: { circuitBreaker: { failures: 1000 } } })
  const { consumer, sim } = f
  const before = consumer.health()
  t.is(before.degraded, false)
  const errors = []
  consumer.on('error', (e) => errors.push(e))
  const fault = sim.fault('/api/roles', { status: 500 })
  sim.data.credits.set(OP, { operationCode: OP, creditCost: 5, isActive: true })
  await f.publish('control', f.event('resync-required', {}))
  await waitFor(() => consumer.health().reason === 'resync-failed', {
    message: 'resync-failed in health()',
  })
  const h = consumer.health()
  t.is(h.degraded, true)
  t.is(h.lastSyncAt, before.lastSyncAt, 'the last successful load')
  // A Wrapper answer (even a 404) does not make stale data look fresh.
  await t.throwsAsync(consumer.getUserProfile('nobody-here'), { code: 'NOT_FOUND' })
  t.is(consumer.health().reason, 'resync-failed')
  t.true(errors.some((e) => e.code === 'WRAPPER_UNAVAILABLE'))
  t.is(consumer.getCreditCost(OP), 2.5, 'no half-loaded snapshot is installed')
  // Retried until it works.
  const failures = fault.applied
  await waitFor(() => fault.applied > failures, { message: 'a retry', timeout: 10_000 })
  fault.remove()
  await waitFor(() => consumer.getCreditCost(OP) === 5, {
    timeout: 20_000,
    message: 'the retried reload',
  })
  t.like(consumer.health(), { degraded: false, reason: null })
  t.true(consumer.health().lastSyncAt > before.lastSyncAt)
})

test('a consumer in a worker thread that is terminated closes its connection and stops', async (t) => {
  const f = await setup(t)
  const before = await subscribers(f.pub)
  const worker = new Worker(path.join(__dirname, 'fixtures', 'worker-consumer.js'), {
    workerData: { tenantId: f.tenantId, redisUrl: f.redis.url, wrapperUrl: f.sim.url },
  })
  t.teardown(() => worker.terminate())
  const ready = await new Promise((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
  })
  t.is(ready, 2.5)
  t.is(await subscribers(f.pub), before + 1)
  const rolesBefore = f.sim.count('/api/roles')
  await worker.terminate()
  await waitFor(async () => (await subscribers(f.pub)) === before, {
    message: 'the worker consumer connection closed',
  })
  // Nothing of it reconnects or reloads afterwards.
  await f.settle()
  t.is(f.sim.count('/api/roles'), rolesBefore)
  t.is(await subscribers(f.pub), before)
})

test('shutdown() during a paged reload stops its page downloads (no retry after it)', async (t) => {
  const f = await setup(t, { sim: { pageSize: 1 }, consumer: { refreshIntervalMs: 0 } })
  const { consumer, sim } = f
  // Every later page of the users list fails: the page download retries it.
  const failing = (r) => r.path.startsWith('/api/users/access?cursor=')
  const fault = sim.fault(failing, { status: 500 })
  await f.publish('control', f.event('resync-required', {}))
  await waitFor(() => fault.applied >= 1, { message: 'a failing page request' })
  await consumer.shutdown()
  const after = sim.count(failing)
  // The old page task kept retrying for ~300 ms after shutdown; give it twice that.
  await new Promise((r) => setTimeout(r, 600))
  t.is(sim.count(failing), after, 'no page request after shutdown()')
})

test('conditional loads (SPEC §4): a refresh sends If-None-Match, a 304 downloads nothing and keeps the tables; a changed list is loaded again', async (t) => {
  const { consumer, sim } = await setup(t, {
    sim: { etags: true },
    consumer: { refreshIntervalMs: 1000 },
  })
  t.is(consumer.getCreditCost(OP), 2.5)
  t.is(consumer.getUserStatus('u-alice'), 'active')
  const first = sim.requests.filter((r) => r.path === '/api/credits/configs')
  t.is(first.length, 1)
  t.is(first[0].headers['if-none-match'], undefined, 'the first load is unconditional')
  // the next refresh: every list answered 304
  await waitFor(() => consumer.getMetrics().resyncs >= 1, { timeout: 5000, message: 'a refresh' })
  const conditional = sim.requests.filter(
    (r) => r.path.startsWith('/api/') && r.headers['if-none-match'] !== undefined,
  )
  t.true(conditional.length >= 4, `every list asked conditionally (${conditional.length})`)
  t.is(consumer.getCreditCost(OP), 2.5, 'the tables kept')
  t.is(consumer.getUserStatus('u-alice'), 'active')
  t.deepEqual(consumer.getRolePermissions('sales'), ['crm.leads.*', 'crm.contacts.read'])
  // changed at the Wrapper without an event: that list (only) is downloaded again
  sim.data.credits.set(OP, { operationCode: OP, creditCost: 4, isActive: true, version: 7 })
  await waitFor(() => consumer.getCreditCost(OP) === 4, { timeout: 5000, message: 'the change' })
  t.is(consumer.getUserStatus('u-alice'), 'active', 'unchanged users still read')
  t.deepEqual(consumer.getActiveConfig('feature-flags'), { beta: true })
})

test('snapshotLoads counts the pub/sub transport loads from the Wrapper too', async (t) => {
  const f = await setup(t, { consumer: { resyncJitterMs: 0, refreshIntervalMs: 0 } })
  const { consumer } = f
  t.deepEqual(consumer.getMetrics().snapshotLoads, { wrapper: 1, redis: 0 }, 'the initial load')
  await f.publish('control', f.event('resync-required', {}))
  await waitFor(() => consumer.getMetrics().resyncs >= 1, { message: 'the resync' })
  t.deepEqual(consumer.getMetrics().snapshotLoads, { wrapper: 2, redis: 0 })
})
