'use strict'
// Reconnects, heartbeats and start-up failures (SPEC §2 initialize/health, §3
// "Redis pub/sub forgets", "half-open link", "reconnect backoff").
//
// Every test runs its own redis-server (killed, restarted and frozen at will)
// and Wrapper simulator. Waits are on events or polls, never on sleeps; the
// reconnect backoff starts at 1 s, so a reconnect takes 0.5-1 s plus retries.

const test = require('ava')

const { setup, waitFor, nextEvent } = require('./helpers/fixture.js')
const { connectRedis } = require('./helpers/resp.js')
const { startRedis, freePort } = require('../tools/test-helpers/index.js')

const TOPICS = ['credit-configs', 'roles', 'users', 'hierarchy', 'configs', 'cache', 'control']

const disconnected = (consumer, timeout) =>
  nextEvent(consumer, 'connection', { filter: (e) => e.connected === false, timeout })
const reconnected = (consumer, timeout) =>
  nextEvent(consumer, 'connection', { filter: (e) => e.connected === true, timeout })

/** A fresh RESP client on the (restarted) server, closed when the test ends. */
async function freshClient(t, redis) {
  const client = await connectRedis(redis.url)
  t.teardown(() => client.destroy())
  return client
}

/** `PUBSUB NUMSUB` of the tenant's seven channels, as `{ topic: count }`. */
async function numsub(client, channel) {
  const reply = await client.command('PUBSUB', 'NUMSUB', ...TOPICS.map(channel))
  const out = {}
  for (let i = 0; i < TOPICS.length; i++) out[TOPICS[i]] = reply[2 * i + 1]
  return out
}

const ONE_EACH = Object.fromEntries(TOPICS.map((topic) => [topic, 1]))

test('a killed Redis during steady traffic: degraded while down, full resync within 40 s of its return', async (t) => {
  const { redis, sim, consumer, publish, event } = await setup(t)
  const connections = []
  const resyncs = []
  consumer.on('connection', (e) => connections.push(e))
  consumer.on('resync', (e) => resyncs.push(e))

  // warm the reference cache
  const profile = await consumer.getUserProfile('u-alice')
  t.is(profile.userId, 'u-alice')
  t.is(typeof consumer.getCacheExpiry('user:u-alice'), 'number')
  t.true(consumer.isConnected)
  t.like(consumer.health(), { ready: true, connected: true, degraded: false, reason: null })

  // steady traffic throughout: events published and critical reads served
  let reads = 0
  let readErrors = 0
  let n = 0
  const traffic = setInterval(() => {
    publish(
      'credit-configs',
      event('credit-config-changed', { operationCode: 'crm.traffic', newValue: ++n }),
    ).catch(() => {})
    for (let i = 0; i < 10; i++) {
      try {
        consumer.getCreditCost('crm.leads.delete')
        consumer.checkPermission('u-alice', 'crm.leads.create')
        reads += 2
      } catch {
        readErrors++
      }
    }
  }, 5)
  t.teardown(() => clearInterval(traffic))
  await waitFor(() => consumer.getCreditCost('crm.traffic') !== null, {
    message: 'traffic flowing',
  })

  const down = disconnected(consumer)
  await redis.kill()
  t.deepEqual(await down, { connected: false })
  const readsAtKill = reads
  t.false(consumer.isConnected)
  const h = consumer.health()
  t.like(h, { ready: true, connected: false, degraded: true, reason: 'redis-disconnected' })
  t.false(consumer.getMetrics().connected)

  // critical reads keep answering from memory
  t.is(consumer.getCreditCost('crm.leads.create'), 2.5)
  t.is(consumer.getCreditCost('crm.leads.delete'), 1)
  t.is(consumer.getUserStatus('u-carol'), 'active')
  t.is(consumer.getRolePermissions('auditor'), null)

  // the Wrapper changes while the consumer cannot hear about it
  sim.data.credits.set('crm.leads.create', {
    operationCode: 'crm.leads.create',
    creditCost: 3.5,
    isActive: true,
    version: 2,
  })
  sim.data.credits.delete('crm.leads.delete')
  sim.data.users.delete('u-carol')
  sim.data.roles.set('auditor', {
    roleId: 'auditor',
    roleName: 'Auditor',
    permissions: ['crm.audit.read'],
    version: 1,
  })
  // still the old values: nothing can be reloaded while Redis is down
  t.is(consumer.getCreditCost('crm.leads.create'), 2.5)
  t.is(consumer.getUserStatus('u-carol'), 'active')

  const up = reconnected(consumer, 40_000)
  await redis.restart()
  const back = Date.now()
  t.deepEqual(await up, { connected: true })
  t.true(Date.now() - back < 40_000, 'resynced within 40 s of Redis returning')
  clearInterval(traffic)
  t.true(reads > readsAtKill, 'reads went on during the outage')
  t.is(readErrors, 0)

  t.true(consumer.isConnected)
  t.like(consumer.health(), { ready: true, connected: true, degraded: false, reason: null })
  t.is(consumer.getCreditCost('crm.leads.create'), 3.5)
  t.is(consumer.getCreditCost('crm.leads.delete'), null)
  t.is(consumer.getUserStatus('u-carol'), null)
  t.is(consumer.getUserRoles('u-carol'), null)
  t.deepEqual(consumer.getRolePermissions('auditor'), ['crm.audit.read'])
  t.is(consumer.getCacheExpiry('user:u-alice'), null, 'reference data is dropped on reconnect')
  const m = consumer.getMetrics()
  t.true(m.reconnects >= 1, `reconnects = ${m.reconnects}`)
  t.true(m.resyncs >= 1, `resyncs = ${m.resyncs}`)
  t.true(m.connected)
  t.true(
    resyncs.some((e) => e.reason === 'reconnect'),
    JSON.stringify(resyncs),
  )
  // the resync is reported before (or with) the reconnection, never after it
  t.deepEqual(connections, [{ connected: false }, { connected: true }])
})

test('after 5 restarts in a row: one subscription per channel, an event applied once', async (t) => {
  const { redis, consumer, channel, event } = await setup(t)
  const N = 5
  for (let i = 0; i < N; i++) {
    const down = disconnected(consumer)
    await redis.kill()
    await down
    // The backoff doubles with each quick restart (1, 2, 4, 8, 16 s before
    // jitter) and resets only after 60 s of health: allow for the fifth.
    const up = reconnected(consumer, 40_000)
    await redis.restart()
    await up
  }
  t.true(consumer.isConnected)
  const client = await freshClient(t, redis)
  t.deepEqual(await numsub(client, channel), ONE_EACH)
  const m0 = consumer.getMetrics()
  t.true(m0.reconnects >= N, `reconnects = ${m0.reconnects}`)
  t.true(m0.resyncs >= N, `resyncs = ${m0.resyncs}`)

  const changes = []
  consumer.on('change', (e) => {
    if (e.keys.includes('credit:crm.leads.create')) changes.push(e)
  })
  const receivers = await client.publish(
    channel('credit-configs'),
    event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 9 }),
  )
  t.is(receivers, 1, 'one subscriber on the channel')
  // a marker after it: once the marker's 'change' has been emitted, so has the
  // event's (batches reach JS in order; a read of the marker could show it a
  // batch earlier: lib/replica.js)
  const marker = `marker-${Date.now()}`
  const markerSeen = nextEvent(consumer, 'change', {
    filter: (e) => e.keys.includes(`config:${marker}`),
    timeout: 10_000,
  })
  await client.publish(channel('configs'), event('config-changed', { configId: marker, config: 1 }))
  await markerSeen
  t.is(consumer.getActiveConfig(marker), 1)

  t.is(consumer.getCreditCost('crm.leads.create'), 9)
  const m1 = consumer.getMetrics()
  t.is(m1.eventsReceived - m0.eventsReceived, 2, 'the event and the marker, each received once')
  t.is(m1.eventsApplied - m0.eventsApplied, 2, 'the event and the marker, each applied once')
  t.is(m1.eventsRejected.replay, m0.eventsRejected.replay)
  t.is(changes.length, 1, JSON.stringify(changes))
  t.deepEqual(await numsub(client, channel), ONE_EACH)
})

test('a frozen Redis (half-open link) is detected by the heartbeat', async (t) => {
  const { redis, consumer, pub, channel, sim } = await setup(t)
  t.true(consumer.isConnected)
  const resync = nextEvent(consumer, 'resync', {
    filter: (e) => e.reason === 'reconnect',
    timeout: 30_000,
  })
  const down = disconnected(consumer, 5_000)
  const frozenAt = Date.now()
  redis.pause()
  t.teardown(() => redis.resume())
  await down
  const noticed = Date.now() - frozenAt
  // heartbeatMs is 500: two silent intervals plus a check period and delivery
  t.true(noticed < 5_000, `noticed after ${noticed} ms`)
  t.false(consumer.isConnected)
  t.like(consumer.health(), { connected: false, degraded: true, reason: 'redis-disconnected' })

  sim.data.credits.set('crm.leads.create', {
    operationCode: 'crm.leads.create',
    creditCost: 4,
    isActive: true,
    version: 2,
  })
  const up = reconnected(consumer, 30_000)
  redis.resume()
  await up
  await resync
  t.true(consumer.isConnected)
  t.is(consumer.getCreditCost('crm.leads.create'), 4, 'resynced after the freeze')
  // the abandoned half-open connection must not stay subscribed
  await waitFor(async () => (await numsub(pub, channel))['credit-configs'] === 1, {
    timeout: 5_000,
    message: 'exactly one subscription after the half-open link',
  })
  t.deepEqual(await numsub(pub, channel), ONE_EACH)
})

test('initialize() without Redis rejects with REDIS_UNAVAILABLE, then keeps trying', async (t) => {
  const port = await freePort()
  const { consumer } = await setup(t, {
    consumer: { redisUrl: `redis://127.0.0.1:${port}`, initTimeoutMs: 1500 },
    init: false,
  })
  const started = Date.now()
  const err = await t.throwsAsync(consumer.initialize(), { code: 'REDIS_UNAVAILABLE' })
  const took = Date.now() - started
  t.true(took >= 1400, `rejected after ${took} ms, before initTimeoutMs`)
  t.false(err.message.includes('undefined'), err.message)
  t.like(consumer.health(), { ready: false, connected: false, degraded: true })
  t.false(consumer.isConnected)

  const redis = await startRedis({ port })
  t.teardown(() => redis.stop())
  await waitFor(() => consumer.health().ready, {
    timeout: 30_000,
    message: 'ready in the background',
  })
  await t.notThrowsAsync(consumer.initialize())
  t.true(consumer.isConnected)
  t.is(consumer.getCreditCost('crm.leads.create'), 2.5)
})

test('initialize() rejects with WRAPPER_UNAVAILABLE on 5xx, then becomes ready in the background', async (t) => {
  const { consumer, sim } = await setup(t, { consumer: { initTimeoutMs: 1500 }, init: false })
  const fault = sim.fault('/api/roles', { status: 500 })
  await t.throwsAsync(consumer.initialize(), { code: 'WRAPPER_UNAVAILABLE' })
  t.true(fault.applied >= 1)
  t.false(consumer.health().ready)
  t.is(consumer.getCreditCost('crm.leads.create'), null, 'nothing is served before the first load')

  fault.remove()
  await waitFor(() => consumer.health().ready, {
    timeout: 20_000,
    message: 'ready in the background',
  })
  await t.notThrowsAsync(consumer.initialize())
  t.is(consumer.getCreditCost('crm.leads.create'), 2.5)
  t.deepEqual(consumer.getRolePermissions('admin'), ['*'])
})

test('initialize() rejects with WRAPPER_AUTH when the Wrapper answers 401', async (t) => {
  const { consumer, sim } = await setup(t, {
    sim: { token: 'the-real-token' },
    consumer: { initTimeoutMs: 1500 },
    init: false,
  })
  const err = await t.throwsAsync(consumer.initialize(), { code: 'WRAPPER_AUTH' })
  t.false(err.message.includes('the-real-token'))
  t.true(sim.requests.some((r) => r.headers.authorization === undefined))
  t.false(consumer.health().ready)
})

test('initialize() rejects with INVALID_RESPONSE when /api/roles has the wrong shape', async (t) => {
  const { consumer, sim } = await setup(t, { consumer: { initTimeoutMs: 1500 }, init: false })
  const fault = sim.fault('/api/roles', { json: [{ nope: 1 }] })
  await t.throwsAsync(consumer.initialize(), { code: 'INVALID_RESPONSE' })
  t.true(fault.applied >= 1)
  t.false(consumer.health().ready)
})

test('an event published while the initial snapshot loads wins over the older snapshot', async (t) => {
  const { consumer, sim, publish, event } = await setup(t, { init: false })
  const gate = sim.gate('/api/credits/configs')
  const ready = consumer.initialize()
  await waitFor(() => gate.waiting === 1, { message: 'the gated snapshot request' })

  // subscribed before the snapshot read began, so the event reaches the consumer
  const receivers = await publish(
    'credit-configs',
    event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 7 }),
  )
  t.is(receivers, 1)
  await waitFor(() => consumer.getMetrics().eventsApplied >= 1, { message: 'the event applied' })
  // the snapshot the Wrapper now answers is older than the event
  sim.data.credits.set('crm.leads.create', {
    operationCode: 'crm.leads.create',
    creditCost: 4,
    isActive: true,
    version: 1,
  })
  gate.release()
  await ready

  t.is(consumer.getCreditCost('crm.leads.create'), 7)
  t.is(consumer.getCreditCost('crm.leads.delete'), 1, 'the rest of the snapshot is loaded')
  t.true(consumer.health().ready)
})

test('a user an event touched during the initial load shows the newer snapshot, not the stale event', async (t) => {
  const { consumer, sim, publish, event } = await setup(t, { init: false })
  sim.data.users.set('u-alice', {
    userId: 'u-alice',
    status: 'active',
    roles: ['sales'],
    version: 5,
  })
  const gate = sim.gate('/api/users/access')
  const ready = consumer.initialize()
  await waitFor(() => gate.waiting === 1, { message: 'the gated snapshot request' })
  // an older change, delivered while the snapshot is loading: applied at once...
  await publish(
    'users',
    event('user-status-changed', { userId: 'u-alice', status: 'suspended' }, { version: 3 }),
  )
  await waitFor(() => consumer.getUserStatus('u-alice') === 'suspended', {
    message: 'the event visible in JS',
  })
  // ...then the snapshot (version 5) replaces it: the event is stale against it
  gate.release()
  await ready
  t.is(consumer.getUserStatus('u-alice'), 'active')
  t.true(consumer.checkPermission('u-alice', 'crm.leads.create'))
})
