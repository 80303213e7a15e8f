'use strict'
// Faults and isolation: the Wrapper circuit breaker, panics surfacing as JS
// errors, two tenants on one Redis, and a subscriber cut off by Redis's
// output-buffer limit.

const test = require('ava')

const native = require('../index.js')
const { setup, waitFor, quietLogger } = require('./helpers/fixture.js')
const { SmartCRMConsumer } = require('../lib/index.js')
const { startWrapperSim, defaultSeed } = require('../tools/wrapper-sim.js')
const { publishMany } = require('./helpers/resp.js')

test('the circuit opens after repeated failures, fails fast, and closes once the Wrapper heals', async (t) => {
  const { consumer, sim } = await setup(t, {
    consumer: { circuitBreaker: { failures: 2, coolDownMs: 300 } },
  })
  const fault = sim.fault('/api/users/', { status: 503 })
  for (const id of ['u-alice', 'u-bob']) {
    const err = await t.throwsAsync(consumer.getUserProfile(id))
    t.is(err.code, 'WRAPPER_UNAVAILABLE')
  }
  t.is(consumer.health().circuit, 'open')
  t.true(consumer.health().degraded)
  const before = sim.count('/api/users/')
  const fast = await t.throwsAsync(consumer.getUserProfile('u-carol'))
  t.is(fast.code, 'WRAPPER_UNAVAILABLE')
  t.regex(fast.message, /circuit open/)
  t.is(sim.count('/api/users/'), before, 'an open circuit sends nothing')
  fault.remove()
  const profile = await waitFor(() => consumer.getUserProfile('u-carol').catch(() => null), {
    timeout: 5000,
    message: 'the probe after the cool-down',
  })
  t.is(profile.userId, 'u-carol')
  t.is(consumer.health().circuit, 'closed')
  t.false(consumer.health().degraded)
})

test('a Rust panic becomes a JS error, never an abort', async (t) => {
  const err = t.throws(() => native.__panicForTests('boom'))
  t.is(err.constructor, Error)
  t.regex(err.message, /internal error \(Rust panic\): boom/)
  const rejection = await t.throwsAsync(native.__panicForTestsAsync('boom async'))
  t.regex(rejection.message, /boom async/)
  const { consumer } = await setup(t)
  t.is(consumer.getCreditCost('crm.leads.create'), 2.5, 'the process and the consumer are fine')
})

test('two tenants on one Redis: no event, cache entry or metric crosses', async (t) => {
  const a = await setup(t)
  const simB = await startWrapperSim({ tenantId: 'tenant-b', data: defaultSeed() })
  t.teardown(() => simB.stop())
  const b = new SmartCRMConsumer({
    tenantId: 'tenant-b',
    wrapperUrl: simB.url,
    redisUrl: a.redis.url,
    logger: quietLogger(),
  })
  t.teardown(() => b.shutdown())
  await b.initialize()
  // An event for A, and one on A's channel claiming to be for B.
  await a.publish(
    'credit-configs',
    a.event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 9 }),
  )
  await a.publish('credit-configs', {
    ...a.event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 8 }),
    tenantId: 'tenant-b',
  })
  await a.settle()
  t.is(a.consumer.getCreditCost('crm.leads.create'), 9)
  t.is(a.consumer.getMetrics().eventsRejected.wrongTenant, 1)
  t.is(b.getCreditCost('crm.leads.create'), 2.5)
  t.is(b.getMetrics().eventsReceived, 0)
  await a.consumer.getUserProfile('u-alice')
  t.is(b.getCacheExpiry('user:u-alice'), null)
  t.is(simB.count('/api/users/u-alice/profile'), 0)
  t.true(simB.requests.every((r) => r.headers['x-tenant-id'] === 'tenant-b'))
  t.regex(b.metricsText(), /tenant="tenant-b"/)
  t.notRegex(b.metricsText(), new RegExp(a.tenantId))
})

test('a subscriber cut off by the output-buffer limit recovers with a resync', async (t) => {
  const f = await setup(t)
  const { consumer, pub, sim } = f
  // A hard limit below one message: Redis drops the subscriber whatever the
  // speed at which it reads (it reads eagerly into its own bounded queue).
  await pub.command('CONFIG', 'SET', 'client-output-buffer-limit', 'pubsub 4kb 4kb 0')
  const resynced = new Promise((resolve) =>
    consumer.on('resync', (e) => e.reason === 'reconnect' && resolve(e)),
  )
  sim.data.credits.set('crm.leads.create', { operationCode: 'crm.leads.create', creditCost: 11 })
  // Large messages: each one alone exceeds the limit.
  const big = 'x'.repeat(60_000)
  const burst = Array.from({ length: 20 }, () => ({
    eventType: 'hierarchy-changed',
    tenantId: f.tenantId,
    data: { entityId: 'h', pad: big },
  }))
  await publishMany(f.redis.url, f.channel('hierarchy'), burst)
  await resynced
  t.is(
    consumer.getCreditCost('crm.leads.create'),
    11,
    'the resync loaded what the lost messages would have said',
  )
  t.true(consumer.getMetrics().reconnects >= 1)
  await f.settle()
  t.true(consumer.isConnected)
})
