'use strict'
// The tenant pool (SPEC §8): many tenants over one Redis connection, with a
// real redis-server per test and the multi-tenant Wrapper simulator over HTTP.

const test = require('ava')
const express = require('express')
const request = require('supertest')

const { startRedis, waitFor } = require('../tools/test-helpers/index.js')
const { connectRedis } = require('./helpers/resp.js')
const { startMultiTenantSim, normaliseData } = require('../tools/wrapper-sim.js')
const { createTenantPool, SmartCRMConsumer } = require('../lib/index.js')
const crmExpress = require('../lib/express.js')
const { captureLogger, nextEvent } = require('./helpers/fixture.js')

const TOPICS = ['credit-configs', 'roles', 'users', 'hierarchy', 'configs', 'cache', 'control']
let seq = 0

/** A small store whose values name the tenant, so a crossed value shows. */
function tenantData(id, n = 1) {
  return normaliseData({
    credits: [{ operationCode: 'op', creditCost: n, isActive: true, version: 1 }],
    roles: [{ roleId: 'r', permissions: [`${id}.read`], version: 1 }],
    users: [{ userId: 'u1', status: 'active', roles: ['r'], version: 1 }],
    configs: [{ configId: 'c', config: { tenant: id }, version: 1 }],
    profiles: [{ userId: 'u1', name: `user of ${id}` }],
    balances: { u1: n * 10 },
  })
}

/** redis + multi-tenant sim + pool; everything is stopped when the test ends. */
async function setup(t, { tenants = [], pool: poolOpts = {}, sim: simOpts = {} } = {}) {
  const redis = await startRedis()
  const data = {}
  tenants.forEach((id, i) => (data[id] = tenantData(id, i + 1)))
  const sim = await startMultiTenantSim({ tenants: data, ...simOpts })
  const { logger, lines } = captureLogger()
  const pool = createTenantPool({
    wrapperUrl: sim.url,
    redisUrl: redis.url,
    heartbeatMs: 500,
    resyncJitterMs: 0,
    logger,
    ...poolOpts,
  })
  const ctx = { pub: await connectRedis(redis.url) }
  /** A new client after a restart of the server. */
  const reconnect = async () => {
    ctx.pub.destroy()
    ctx.pub = await connectRedis(redis.url)
  }
  t.teardown(async () => {
    await pool.shutdown()
    ctx.pub.destroy()
    await sim.stop()
    await redis.stop()
  })
  const event = (tenantId, eventType, payload) => ({
    eventId: `e-${++seq}`,
    eventType,
    tenantId,
    timestamp: new Date().toISOString(),
    data: payload,
  })
  const setCost = (tenantId, cost) =>
    ctx.pub.publish(
      `crm:${tenantId}:credit-configs`,
      JSON.stringify(
        event(tenantId, 'credit-config-changed', {
          operationCode: 'op',
          newValue: cost,
          isActive: true,
        }),
      ),
    )
  const numsub = async (tenantId) => {
    const reply = await ctx.pub.command(
      'PUBSUB',
      'NUMSUB',
      ...TOPICS.map((x) => `crm:${tenantId}:${x}`),
    )
    const counts = []
    for (let i = 1; i < reply.length; i += 2) counts.push(Number(reply[i]))
    return counts
  }
  /** Connections of the pool: subscribers (the test's own client publishes only). */
  const subscribers = async () => {
    const list = String(await ctx.pub.command('CLIENT', 'LIST'))
    return list.split('\n').filter((l) => / flags=P /.test(l)).length
  }
  const lists = (tenantId) =>
    sim.requests.filter((r) => r.tenantId === tenantId && r.path.startsWith('/api/credits/configs'))
      .length
  const publish = (channel, message) => ctx.pub.publish(channel, message)
  const command = (...args) => ctx.pub.command(...args)
  return {
    redis,
    sim,
    pool,
    publish,
    command,
    reconnect,
    lines,
    event,
    setCost,
    numsub,
    subscribers,
    lists,
  }
}

// ---- options ------------------------------------------------------------------

test('options: tenantId is refused, pool options are checked, naming the option', (t) => {
  const base = { wrapperUrl: 'http://127.0.0.1:9', redisUrl: 'redis://127.0.0.1:9' }
  const e1 = t.throws(() => createTenantPool({ ...base, tenantId: 'a' }), { instanceOf: TypeError })
  t.regex(e1.message, /tenantId/)
  for (const [name, value, cls] of [
    ['maxTenants', 0, RangeError],
    ['maxTenants', 'many', TypeError],
    ['idleTenantMs', -1, RangeError],
    ['maxConcurrentLoads', 2000, RangeError],
  ]) {
    const e = t.throws(() => createTenantPool({ ...base, [name]: value }), { instanceOf: cls })
    t.regex(e.message, new RegExp(name))
    t.is(e.code, 'ERR_INVALID_OPTION')
  }
  // a consumer option is validated too
  const e2 = t.throws(() => createTenantPool({ ...base, heartbeatMs: 0 }), {
    instanceOf: RangeError,
  })
  t.regex(e2.message, /heartbeatMs/)
})

// ---- loading ------------------------------------------------------------------

test('tenant(id) is a SmartCRMConsumer with its own data; concurrent first uses share one load', async (t) => {
  const { pool, lists } = await setup(t, { tenants: ['a', 'b'] })
  const loaded = []
  pool.on('tenantLoaded', (e) => loaded.push(e.tenantId))
  const [a1, a2, a3] = await Promise.all([pool.tenant('a'), pool.tenant('a'), pool.tenant('a')])
  t.true(a1 instanceof SmartCRMConsumer)
  t.is(a1, a2)
  t.is(a1, a3)
  t.is(lists('a'), 1, 'one snapshot load for three concurrent first uses')
  t.is(a1.tenantId, 'a')
  t.is(a1.getCreditCost('op'), 1)
  t.true(a1.checkPermission('u1', 'a.read'))
  const b = await pool.tenant('b')
  t.is(b.getCreditCost('op'), 2)
  t.false(b.checkPermission('u1', 'a.read'))
  t.deepEqual(b.getActiveConfig('c'), { tenant: 'b' })
  t.is(await pool.tenant('a'), a1, 'a loaded tenant is answered from the pool')
  t.is(lists('a'), 1)
  t.is(pool.peek('a'), a1)
  t.is(pool.peek('zzz'), null)
  t.deepEqual(pool.tenants().sort(), ['a', 'b'])
  t.deepEqual(loaded, ['a', 'b'])
  t.like(a1.health(), { ready: true, connected: true, degraded: false })
})

test('a refused tenant rejects with WRAPPER_AUTH at once, is not kept, and a later call tries again', async (t) => {
  const { pool, sim, numsub } = await setup(t, { tenants: ['a'], pool: { initTimeoutMs: 20_000 } })
  const began = Date.now()
  const err = await t.throwsAsync(pool.tenant('newco'))
  t.is(err.code, 'WRAPPER_AUTH')
  t.true(Date.now() - began < 5_000, 'not after initTimeoutMs')
  t.deepEqual(pool.tenants(), [])
  await waitFor(async () => (await numsub('newco')).every((n) => n === 0), {
    message: 'the refused tenant unsubscribed',
  })
  sim.addTenant('newco', tenantData('newco', 7))
  const c = await pool.tenant('newco')
  t.is(c.getCreditCost('op'), 7)
  t.deepEqual(pool.tenants(), ['newco'])
})

test('a hostile tenant id is refused before anything is subscribed or requested', async (t) => {
  const { pool, sim, command } = await setup(t, { tenants: ['a'] })
  await pool.tenant('a')
  const before = sim.requests.length
  for (const bad of ['', 'a:b', 'a*', '../x', 'x'.repeat(129), '-a', 'a b', 'a\n']) {
    await t.throwsAsync(pool.tenant(bad), { instanceOf: RangeError }, JSON.stringify(bad))
  }
  for (const bad of [undefined, null, 42, {}]) {
    await t.throwsAsync(pool.tenant(bad), { instanceOf: TypeError })
  }
  const channels = (await command('PUBSUB', 'CHANNELS', '*')).map(String).sort()
  t.deepEqual(
    channels,
    TOPICS.map((x) => `crm:a:${x}`).sort(),
    'only the loaded tenant is subscribed',
  )
  t.is(sim.requests.length, before, 'no Wrapper request')
  t.deepEqual(pool.tenants(), ['a'])
})

// ---- isolation ----------------------------------------------------------------

test('isolation: events, cache entries, Wrapper requests and metrics never cross tenants', async (t) => {
  const { pool, sim, setCost, publish, event } = await setup(t, { tenants: ['a', 'b'] })
  const a = await pool.tenant('a')
  const b = await pool.tenant('b')
  // an event for a changes a only
  await setCost('a', 42)
  await waitFor(() => a.getCreditCost('op') === 42, { message: 'a applied its event' })
  // an event on b's channel naming tenant a is rejected by b (wrongTenant), a never sees it
  await publish(
    'crm:b:credit-configs',
    JSON.stringify(event('a', 'credit-config-changed', { operationCode: 'op', newValue: 99 })),
  )
  await setCost('b', 5)
  await waitFor(() => b.getCreditCost('op') === 5, { message: 'b applied its own event' })
  t.is(a.getCreditCost('op'), 42)
  t.is(b.getMetrics().eventsRejected.wrongTenant, 1)
  t.is(a.getMetrics().eventsRejected.wrongTenant, 0)
  t.is(a.getMetrics().eventsApplied, 1)
  t.is(b.getMetrics().eventsApplied, 1)
  // reference entries are per tenant, and every request carries its tenant
  t.is((await a.getUserProfile('u1')).name, 'user of a')
  t.is((await b.getUserProfile('u1')).name, 'user of b')
  t.is(await a.getUserCredits('u1'), 10)
  t.is(await b.getUserCredits('u1'), 20)
  const profileRequests = sim.requests.filter((r) => r.path === '/api/users/u1/profile')
  t.deepEqual(profileRequests.map((r) => r.tenantId).sort(), ['a', 'b'])
  // an invalidation of a's key leaves b's entry
  await publish(
    'crm:a:cache',
    JSON.stringify(event('a', 'cache-invalidate', { keys: ['user:u1'] })),
  )
  await waitFor(() => a.getCacheExpiry('user:u1') === null, { message: "a's entry dropped" })
  t.not(b.getCacheExpiry('user:u1'), null)
  // metrics: per tenant, and totals that sum them
  const m = pool.getMetrics()
  t.is(m.tenants, 2)
  t.is(m.perTenant.a.eventsApplied, 2, 'the cost and the invalidation')
  t.is(m.perTenant.b.eventsApplied, 1)
  t.is(m.totals.eventsApplied, 3)
  t.is(m.totals.eventsRejected.wrongTenant, 1)
  t.true(m.pool.connected)
  const text = pool.metricsText()
  t.is(text.match(/^# TYPE smart_crm_consumer_events_applied_total /gm).length, 1, 'TYPE once')
  t.regex(text, /^smart_crm_consumer_events_applied_total\{tenant="a"\} 2$/m)
  t.regex(text, /^smart_crm_consumer_events_applied_total\{tenant="b"\} 1$/m)
  t.regex(text, /^smart_crm_consumer_pool_tenants 2$/m)
  const sums = pool.metricsText({ perTenant: false })
  t.notRegex(sums, /tenant="/)
  t.regex(sums, /^smart_crm_consumer_events_applied_total 3$/m)
  t.deepEqual(pool.health(), { connected: true, tenants: 2, degradedTenants: [] })
})

// ---- connections --------------------------------------------------------------

test('200 loaded tenants share one Redis connection (CLIENT LIST)', async (t) => {
  const ids = Array.from({ length: 200 }, (_, i) => `t${i}`)
  const { pool, subscribers, numsub, setCost } = await setup(t, { tenants: ids })
  const consumers = await Promise.all(ids.map((id) => pool.tenant(id)))
  t.is(pool.tenants().length, 200)
  t.is(await subscribers(), 1, 'one subscriber connection for 200 tenants')
  t.deepEqual(await numsub('t0'), [1, 1, 1, 1, 1, 1, 1])
  t.deepEqual(await numsub('t199'), [1, 1, 1, 1, 1, 1, 1])
  // each receives its own events over the shared link
  await Promise.all(ids.map((id, i) => setCost(id, 1000 + i)))
  await waitFor(() => consumers.every((c, i) => c.getCreditCost('op') === 1000 + i), {
    message: 'every tenant applied its event',
  })
})

// ---- release ------------------------------------------------------------------

test('release(id) and shutdown() of a tenant: unsubscribed, SHUTDOWN afterwards, events no longer applied; loading it again works', async (t) => {
  const { pool, numsub, setCost, lists } = await setup(t, { tenants: ['a', 'b'] })
  const a = await pool.tenant('a')
  const b = await pool.tenant('b')
  const released = []
  pool.on('tenantReleased', (e) => released.push(e))
  await pool.release('a')
  t.deepEqual(released, [{ tenantId: 'a', reason: 'release' }])
  t.deepEqual(pool.tenants(), ['b'])
  t.is(pool.peek('a'), null)
  t.throws(() => a.getCreditCost('op'), { code: 'SHUTDOWN' })
  await t.throwsAsync(a.getUserProfile('u1'), { code: 'SHUTDOWN' })
  await waitFor(async () => (await numsub('a')).every((n) => n === 0), {
    message: "a's channels unsubscribed",
  })
  t.deepEqual(await numsub('b'), [1, 1, 1, 1, 1, 1, 1])
  const receivedBefore = a.getMetrics().eventsReceived
  t.is(await setCost('a', 77), 0, 'no subscriber receives a released tenant event')
  await setCost('b', 8)
  await waitFor(() => b.getCreditCost('op') === 8, { message: 'b still applies' })
  t.is(a.getMetrics().eventsReceived, receivedBefore)
  // a tenant's own shutdown() is release
  await b.shutdown()
  t.deepEqual(pool.tenants(), [])
  t.deepEqual(released[1], { tenantId: 'b', reason: 'release' })
  // loaded again: a new consumer, a new load, subscribed once
  const a2 = await pool.tenant('a')
  t.not(a2, a)
  t.is(lists('a'), 2)
  t.is(a2.getCreditCost('op'), 1)
  t.deepEqual(await numsub('a'), [1, 1, 1, 1, 1, 1, 1])
  await setCost('a', 3)
  await waitFor(() => a2.getCreditCost('op') === 3, { message: 'the new load applies events' })
})

test('idleTenantMs releases a tenant without reads; reads keep it', async (t) => {
  const { pool, numsub } = await setup(t, {
    tenants: ['idle', 'busy'],
    pool: { idleTenantMs: 1500 },
  })
  const busy = await pool.tenant('busy')
  await pool.tenant('idle')
  const released = nextEvent(pool, 'tenantReleased', { filter: (e) => e.tenantId === 'idle' })
  const reader = setInterval(() => {
    try {
      busy.getCreditCost('op')
    } catch {
      // released after all: the assertion below says so
    }
  }, 10)
  t.teardown(() => clearInterval(reader))
  t.deepEqual(await released, { tenantId: 'idle', reason: 'idle' })
  await waitFor(async () => (await numsub('idle')).every((n) => n === 0), {
    message: 'the idle tenant unsubscribed',
  })
  // the busy one outlived the idle period
  await new Promise((r) => setTimeout(r, 700))
  t.deepEqual(pool.tenants(), ['busy'])
  t.is(busy.getCreditCost('op'), 2)
})

test('maxTenants releases the least recently used tenant', async (t) => {
  const { pool } = await setup(t, { tenants: ['a', 'b', 'c', 'd'], pool: { maxTenants: 3 } })
  const a = await pool.tenant('a')
  await pool.tenant('b')
  await pool.tenant('c')
  // a is read after b and c were loaded: b is now the least recently used
  a.getCreditCost('op')
  const released = nextEvent(pool, 'tenantReleased')
  await pool.tenant('d')
  t.deepEqual(await released, { tenantId: 'b', reason: 'maxTenants' })
  t.deepEqual(pool.tenants().sort(), ['a', 'c', 'd'])
})

// ---- a Redis restart ------------------------------------------------------------

test('Redis restart with 60 tenants: all resynced with at most maxConcurrentLoads loads at once, one subscription each, data equal to the Wrapper', async (t) => {
  const ids = Array.from({ length: 60 }, (_, i) => `r${i}`)
  const { pool, sim, redis, numsub, subscribers, reconnect } = await setup(t, {
    tenants: ids,
    pool: { maxConcurrentLoads: 3 },
    sim: { listDelayMs: 15 },
  })
  const consumers = await Promise.all(ids.map((id) => pool.tenant(id)))
  const errors = []
  pool.on('error', (e) => errors.push(e))
  await redis.kill()
  await waitFor(() => !pool.health().connected, { message: 'the pool saw the loss' })
  // the Wrapper changes while Redis is down: only a resync can show it
  ids.forEach((id, i) =>
    sim.tenant(id).data.credits.set('op', {
      operationCode: 'op',
      creditCost: 500 + i,
      isActive: true,
      version: 2,
    }),
  )
  // reads keep answering from the old data meanwhile
  t.is(consumers[5].getCreditCost('op'), 6)
  sim.resetStats()
  await redis.restart()
  await waitFor(() => consumers.every((c) => c.isConnected), {
    timeout: 40_000,
    message: 'every tenant resynced',
  })
  t.true(sim.maxLoadsInFlight <= 3, `at most 3 loads at once, saw ${sim.maxLoadsInFlight}`)
  t.true(sim.maxLoadsInFlight >= 2, 'the loads did overlap (the bound was exercised)')
  consumers.forEach((c, i) => t.is(c.getCreditCost('op'), 500 + i, c.tenantId))
  await reconnect()
  t.is(await subscribers(), 1)
  for (const id of ['r0', 'r30', 'r59']) t.deepEqual(await numsub(id), [1, 1, 1, 1, 1, 1, 1])
  t.true(pool.health().connected)
  t.true(pool.getMetrics().pool.reconnects >= 1)
  t.true(consumers[0].getMetrics().reconnects >= 1)
})

// ---- Express ---------------------------------------------------------------------

test('express tenant(): 401 without a tenant id, 403 for a refused tenant, 503 when it cannot load, req.crm otherwise', async (t) => {
  const { pool, sim } = await setup(t, { tenants: ['a', 'b'], pool: { initTimeoutMs: 1500 } })
  const app = express()
  app.get('/metrics', crmExpress.metricsHandler(pool))
  app.use((req, res, next) => {
    const tenantId = req.get('x-test-tenant')
    req.user = tenantId === undefined ? undefined : { id: 'u1', tenantId }
    next()
  })
  app.use(crmExpress.tenant(pool))
  app.get(
    '/r',
    crmExpress.requirePermission((req) => req.crm, 'a.read'),
    (req, res) => res.json({ tenant: req.crm.tenantId }),
  )
  app.get(
    '/cost',
    crmExpress.requireCredits((req) => req.crm, 'op'),
    (req, res) => res.json({ cost: req.creditCost }),
  )
  const r401 = await request(app).get('/r')
  t.is(r401.status, 401)
  const r403 = await request(app).get('/r').set('x-test-tenant', 'nobody')
  t.is(r403.status, 403)
  t.deepEqual(r403.body, { error: 'Unknown tenant' })
  const rBad = await request(app).get('/r').set('x-test-tenant', 'a:b')
  t.is(rBad.status, 403)
  const ok = await request(app).get('/r').set('x-test-tenant', 'a')
  t.is(ok.status, 200)
  t.deepEqual(ok.body, { tenant: 'a' })
  // b's role grants b.read, not a.read: the guard asks b's consumer
  const denied = await request(app).get('/r').set('x-test-tenant', 'b')
  t.is(denied.status, 403)
  t.deepEqual(denied.body, { error: 'Insufficient permissions' })
  const cost = await request(app).get('/cost').set('x-test-tenant', 'b')
  t.deepEqual(cost.body, { cost: 2 })
  // a tenant whose snapshot cannot load now (the Wrapper fails it): 503
  const c = sim.addTenant('c', tenantData('c'))
  c.fault('/api/', { status: 503, json: { error: 'down' } })
  const r503 = await request(app).get('/r').set('x-test-tenant', 'c')
  t.is(r503.status, 503)
  t.deepEqual(r503.body, { error: 'Tenant unavailable' })
  t.false(pool.tenants().includes('c'))
  const metrics = await request(app).get('/metrics')
  t.regex(metrics.text, /smart_crm_consumer_events_received_total\{tenant="a"\}/)
})

test('pool.shutdown(): every tenant released with reason shutdown, SHUTDOWN afterwards, the connection closed', async (t) => {
  const { pool, subscribers } = await setup(t, { tenants: ['a', 'b'] })
  const a = await pool.tenant('a')
  await pool.tenant('b')
  const released = []
  pool.on('tenantReleased', (e) => released.push(e))
  await pool.shutdown()
  t.deepEqual(
    released.sort((x, y) => x.tenantId.localeCompare(y.tenantId)),
    [
      { tenantId: 'a', reason: 'shutdown' },
      { tenantId: 'b', reason: 'shutdown' },
    ],
  )
  t.throws(() => a.getCreditCost('op'), { code: 'SHUTDOWN' })
  await t.throwsAsync(pool.tenant('a'), { code: 'SHUTDOWN' })
  t.deepEqual(pool.tenants(), [])
  t.false(pool.health().connected)
  await waitFor(async () => (await subscribers()) === 0, { message: 'the link closed' })
})

test('prom-client register(registry, pool): every tenant under one family, read at scrape time', async (t) => {
  const client = require('prom-client')
  const { register } = require('../lib/prometheus.js')
  const { pool } = await setup(t, { tenants: ['a', 'b'] })
  const a = await pool.tenant('a')
  const registry = new client.Registry()
  const names = register(registry, pool)
  t.true(names.includes('smart_crm_consumer_pool_tenants'))
  await pool.tenant('b') // loaded after registering: read at scrape time
  a.getCreditCost('op')
  const text = await registry.metrics()
  t.is(text.match(/^# TYPE smart_crm_consumer_critical_hits_total counter$/gm).length, 1)
  t.regex(text, /^smart_crm_consumer_critical_hits_total\{tenant="a"\} 1$/m)
  t.regex(text, /^smart_crm_consumer_critical_hits_total\{tenant="b"\} 0$/m)
  t.regex(text, /^smart_crm_consumer_pool_tenants 2$/m)
})

test("the pool's 'connection' events, tenant-tagged log lines, 'tenantLoaded' with the consumer, totals of an empty pool", async (t) => {
  const redis = await startRedis()
  const sim = await startMultiTenantSim({ tenants: { a: tenantData('a') } })
  const { logger, lines } = captureLogger()
  const pool = createTenantPool({ wrapperUrl: sim.url, redisUrl: redis.url, logger })
  t.teardown(async () => {
    await pool.shutdown()
    await sim.stop()
    await redis.stop()
  })
  t.deepEqual(await nextEvent(pool, 'connection'), { connected: true }, 'the first connect too')
  t.true(pool.getMetrics().totals.connected, 'an empty pool with its link up is connected')
  const loaded = nextEvent(pool, 'tenantLoaded')
  const a = await pool.tenant('a')
  const e = await loaded
  t.is(e.tenantId, 'a')
  t.is(e.consumer, a)
  t.true(
    lines.some((l) => l.msg.includes('(tenant a) critical data loaded')),
    JSON.stringify(lines),
  )
  const down = nextEvent(pool, 'connection')
  await redis.kill()
  t.deepEqual(await down, { connected: false })
  const up = nextEvent(pool, 'connection', { timeout: 30_000 })
  await redis.restart()
  t.deepEqual(await up, { connected: true })
})

test('a pool in stream mode: every tenant catches up from its stream after the link is killed, no Wrapper load', async (t) => {
  const ids = ['s1', 's2', 's3']
  const { pool, sim, command, reconnect } = await setup(t, {
    tenants: ids,
    pool: { transport: 'stream', requestTimeoutMs: 15_000 },
  })
  const consumers = await Promise.all(ids.map((id) => pool.tenant(id)))
  const { createPublisher } = require('../lib/index.js')
  const { redisUrl } = {
    redisUrl: `redis://127.0.0.1:${(await command('CONFIG', 'GET', 'port'))[1]}`,
  }
  const pubs = ids.map((tenantId) => createPublisher({ redisUrl, tenantId }))
  t.teardown(() => Promise.all(pubs.map((p) => p.close())))
  const setCost = (i, cost) =>
    pubs[i].publish('credit-configs', 'credit-config-changed', {
      operationCode: 'op',
      newValue: cost,
      isActive: true,
    })
  await setCost(0, 5)
  await waitFor(() => consumers[0].getCreditCost('op') === 5)
  const loadsBefore = sim.requests.filter((r) => r.path === '/api/credits/configs').length
  const down = nextEvent(pool, 'connection', { filter: (e) => !e.connected })
  const list = String(await command('CLIENT', 'LIST'))
  for (const l of list.split('\n').filter((x) => / flags=P /.test(x)))
    await command('CLIENT', 'KILL', 'ID', /id=(\d+)/.exec(l)[1])
  await down
  for (let i = 0; i < ids.length; i++) await setCost(i, 100 + i)
  await waitFor(() => consumers.every((c, i) => c.getCreditCost('op') === 100 + i), {
    timeout: 20_000,
    message: 'every tenant caught up',
  })
  await reconnect()
  t.is(sim.requests.filter((r) => r.path === '/api/credits/configs').length, loadsBefore)
  for (const c of consumers) {
    t.is(c.getMetrics().resumes, 1, c.tenantId)
    t.is(c.getMetrics().resyncs, 0)
  }
})
