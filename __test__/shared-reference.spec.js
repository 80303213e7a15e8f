'use strict'
// The shared reference tier (SPEC §7 `sharedReference`, issue 11): reference data
// in Redis shared by a fleet. Real redis-server, the Wrapper simulator over HTTP,
// instances as separate OS processes (helpers/reference-child.js) or as separate
// consumers in this process (each its own caches and command connection).
//
// - 20 processes × 50 concurrent misses for one profile → one Wrapper request
// - the fence: an invalidation (events, invalidate(key), a reload that drops
//   reference data) while another instance's fetch is in flight → afterwards no
//   instance and no Redis key holds the old value
// - TTLs in Redis (PTTL ≈ TTL) and the remaining time taken by a later reader
// - Redis down: reads still work, no error
// - the option, the metrics, a pool's one command connection

const test = require('ava')
const { fork } = require('node:child_process')
const path = require('node:path')

const { startRedis, waitFor, quietLogger } = require('../tools/test-helpers/index.js')
const { connectRedis } = require('./helpers/resp.js')
const {
  startWrapperSim,
  defaultSeed,
  startMultiTenantSim,
  normaliseData,
} = require('../tools/wrapper-sim.js')
const { SmartCRMConsumer, createTenantPool } = require('../lib/index.js')
const { startCluster } = require('../tools/test-helpers/topologies.js')

const CHILD = path.join(__dirname, 'helpers', 'reference-child.js')
const ALICE = '/api/users/u-alice/profile'
const TTL = { userProfiles: 60_000, hierarchy: 62_000, notFound: 30_000 }
let seq = 0

/** Redis, the simulator, and `instance(opts)` for consumers of one tenant; all stopped at the end. */
async function fleet(t, { consumer: common = {} } = {}) {
  const tenantId = `sr${process.pid}-${++seq}`
  const redis = await startRedis()
  const sim = await startWrapperSim({ tenantId, data: defaultSeed() })
  const client = await connectRedis(redis.url)
  const consumers = []
  const children = []
  const options = (extra = {}) => ({
    tenantId,
    wrapperUrl: sim.url,
    redisUrl: redis.url,
    heartbeatMs: 500,
    resyncJitterMs: 0,
    sharedReference: true,
    ttl: TTL,
    ...common,
    ...extra,
  })
  t.teardown(async () => {
    await Promise.all(consumers.map((c) => c.shutdown()))
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL')
    client.destroy()
    await sim.stop()
    await redis.stop()
  })
  /** An instance in this process; initialized unless `init: false` (then it never subscribes). */
  const instance = async (extra = {}, { init = true } = {}) => {
    const c = new SmartCRMConsumer({ ...options(extra), logger: quietLogger() })
    consumers.push(c)
    if (init) await c.initialize()
    return c
  }
  /** An instance in its own OS process (see helpers/reference-child.js). */
  const processInstance = (extra = {}) => {
    const child = fork(CHILD, [JSON.stringify(options(extra))], { stdio: 'pipe' })
    children.push(child)
    const inbox = []
    const waiting = []
    child.on('message', (msg) => {
      const i = waiting.findIndex((w) => w.op === msg.op)
      if (i === -1) inbox.push(msg)
      else waiting.splice(i, 1)[0].resolve(msg)
    })
    let stderr = ''
    child.stderr.on('data', (d) => (stderr += d))
    /** The next message `op` from the child. */
    const next = (op) =>
      new Promise((resolve, reject) => {
        const i = inbox.findIndex((m) => m.op === op)
        if (i !== -1) return resolve(inbox.splice(i, 1)[0])
        waiting.push({ op, resolve })
        child.once('exit', (code) => reject(new Error(`child exited (${code}): ${stderr}`)))
      })
    const ask = (op, payload = {}) => {
      const answer = next(op)
      child.send({ op, ...payload })
      return answer
    }
    return { child, next, ask, send: (msg) => child.send(msg) }
  }
  const entry = (key) => `crm:{${tenantId}}:ref:${key}`
  /** The shared value of `key` as Redis holds it (`null`: none). */
  const shared = (key) => client.command('HGET', entry(key), 'v')
  return { tenantId, redis, sim, client, instance, processInstance, entry, shared, options }
}

/** Publishes a well-formed event on a topic of the tenant. */
function publisher(ctx) {
  return (topic, eventType, data) =>
    ctx.client.publish(
      `crm:${ctx.tenantId}:${topic}`,
      JSON.stringify({
        eventId: `e-${++seq}`,
        eventType,
        tenantId: ctx.tenantId,
        timestamp: new Date().toISOString(),
        data,
      }),
    )
}

const sum = (list, f) => list.reduce((n, m) => n + m[f], 0)

// ---- one Wrapper request for the fleet -------------------------------------------

test('20 processes × 50 concurrent misses for one profile make one Wrapper request', async (t) => {
  t.timeout(120_000)
  // A long wait bound: the single request is held until every instance has missed.
  const ctx = await fleet(t, { consumer: { requestTimeoutMs: 30_000 } })
  const { sim } = ctx
  const expected = sim.data.profiles.get('u-alice')
  const instances = Array.from({ length: 20 }, () => ctx.processInstance())
  await Promise.all(instances.map((i) => i.next('ready')))
  t.is(sim.count(ALICE), 0)

  const gate = sim.gate(ALICE)
  const done = instances.map((i) => i.next('read'))
  const fired = instances.map((i) => i.next('fired'))
  for (const i of instances) i.send({ op: 'read', method: 'getUserProfile', id: 'u-alice', n: 50 })
  await Promise.all(fired)
  // Every instance has missed 50 times (its calls joined one local fetch) while
  // the one Wrapper request is held: the others wait on the lease in Redis.
  await waitFor(
    async () => {
      const ms = await Promise.all(instances.map((i) => i.ask('metrics')))
      return ms.every((m) => m.metrics.referenceMisses === 50)
    },
    { message: '50 misses in each of 20 processes', timeout: 30_000 },
  )
  t.is(gate.waiting, 1, 'one request reached the Wrapper')
  t.is(await ctx.client.command('EXISTS', `crm:{${ctx.tenantId}}:ref-lease:user:u-alice`), 1)
  gate.release()

  const results = await Promise.all(done)
  for (const r of results) {
    t.deepEqual(r.errors, [])
    t.is(r.values.length, 50)
    for (const v of r.values) t.deepEqual(v, expected)
  }
  t.is(sim.count(ALICE), 1, 'exactly one Wrapper request for 1000 misses in 20 processes')
  const metrics = (await Promise.all(instances.map((i) => i.ask('metrics')))).map((m) => m.metrics)
  t.is(sum(metrics, 'sharedMisses'), 1, 'one instance fetched')
  t.is(sum(metrics, 'sharedHits'), 19, 'the others took its value from Redis')
  t.is(sum(metrics, 'coalescedRequests'), 20 * 49, 'and each process made one fetch of its own')
  await Promise.all(instances.map((i) => i.ask('shutdown').catch(() => {})))
})

test('when the lease holder dies, its lease expires and one other instance fetches', async (t) => {
  const requestTimeoutMs = 2_000
  const ctx = await fleet(t, { consumer: { requestTimeoutMs } })
  const { sim } = ctx
  const expected = sim.data.profiles.get('u-alice')
  const holder = ctx.processInstance()
  const waiters = [await ctx.instance(), await ctx.instance(), await ctx.instance()]
  await holder.next('ready')

  const gate = sim.gate(ALICE)
  holder.send({ op: 'read', method: 'getUserProfile', id: 'u-alice', n: 1 })
  await waitFor(() => gate.waiting === 1, { message: "the holder's request at the Wrapper" })
  const lease = `crm:{${ctx.tenantId}}:ref-lease:user:u-alice`
  t.is(await ctx.client.command('EXISTS', lease), 1)
  const pttl = await ctx.client.command('PTTL', lease)
  t.true(pttl > 0 && pttl <= requestTimeoutMs, `the lease lives one request's bound (${pttl} ms)`)

  const reads = waiters.map((w) => w.getUserProfile('u-alice'))
  await waitFor(() => waiters.every((w) => w.getMetrics().referenceMisses === 1))
  const exited = new Promise((resolve) => holder.child.once('exit', resolve))
  holder.child.kill('SIGKILL')
  await exited
  gate.release() // the dead holder's request answers no one; later ones pass
  const killedAt = Date.now()

  for (const r of await Promise.all(reads)) t.deepEqual(r, expected)
  const took = Date.now() - killedAt
  t.true(took < requestTimeoutMs + 1_000, `the others had the value ${took} ms after the death`)
  t.is(sim.count(ALICE), 2, "the dead holder's request and one more")
  const metrics = waiters.map((w) => w.getMetrics())
  t.is(sum(metrics, 'sharedMisses'), 1, 'one instance took the lease over')
  t.is(sum(metrics, 'sharedHits'), 2, 'the others waited for it')
})

test('a later instance reads the shared entry without asking the Wrapper', async (t) => {
  const ctx = await fleet(t)
  const [a, b] = [await ctx.instance(), await ctx.instance()]
  const expected = ctx.sim.data.hierarchy.get('org-1')
  t.deepEqual(await a.getHierarchy('org-1'), expected)
  t.deepEqual(await b.getHierarchy('org-1'), expected)
  t.is(ctx.sim.count('/api/hierarchy/org-1'), 1)
  t.like(b.getMetrics(), { sharedHits: 1, sharedMisses: 0, referenceMisses: 1 })
  t.like(a.getMetrics(), { sharedHits: 0, sharedMisses: 1 })
  t.deepEqual(JSON.parse(await ctx.shared('hierarchy:org-1')), expected)
})

// ---- the fence ---------------------------------------------------------------------

const OLD = { userId: 'u-alice', name: 'Alice Old' }
const NEW = { userId: 'u-alice', name: 'Alice New' }

/**
 * Instance A's fetch of u-alice is held at the Wrapper and will answer the old
 * profile; the profile changes and `invalidate(ctx, b, c)` runs; then A's answer
 * is let through. Afterwards no instance and no Redis key may hold the old value.
 *
 * A never subscribes (it is never initialized; its reads work all the same): it
 * stands for an instance the invalidation has not reached yet, so its own
 * invalidation-wins rule cannot help. Only the fence in Redis stands between its
 * outdated answer and the fleet: break the fence and this fails.
 */
const fenceHolds = test.macro({
  async exec(t, invalidate) {
    const ctx = await fleet(t)
    const { sim } = ctx
    sim.data.profiles.set('u-alice', OLD)
    const a = await ctx.instance({}, { init: false })
    const [b, c] = [await ctx.instance(), await ctx.instance()]

    const gate = sim.gate(ALICE)
    sim.fault(ALICE, { json: OLD, times: 1 }) // what A's request read before the change
    const fetch = a.getUserProfile('u-alice')
    await waitFor(() => gate.waiting === 1, { message: "A's request at the Wrapper" })
    t.is(await ctx.client.command('EXISTS', `crm:{${ctx.tenantId}}:ref-lease:user:u-alice`), 1)

    sim.data.profiles.set('u-alice', NEW)
    await invalidate(ctx, b, c)
    gate.release()
    // The callers already waiting may get the old value (SPEC §2) ...
    t.deepEqual(await fetch, OLD)

    // ... but nothing keeps it: not Redis, not A (its write was refused), not B or C.
    t.is(await ctx.shared('user:u-alice'), null, 'Redis does not hold the old value')
    t.is(a.getCacheExpiry('user:u-alice'), null, 'A did not keep its outdated answer')
    t.deepEqual(await b.getUserProfile('u-alice'), NEW)
    t.deepEqual(await c.getUserProfile('u-alice'), NEW)
    t.deepEqual(await a.getUserProfile('u-alice'), NEW)
    t.deepEqual(JSON.parse(await ctx.shared('user:u-alice')), NEW)
    t.is(sim.count(ALICE), 2, 'one more request, for the whole fleet')
  },
  title: (what) => `a fetch in flight during ${what} never leaves its old value anywhere`,
})

/** Waits until the invalidation of u-alice reached Redis (its fence token is gone). */
const fenceGone = (ctx) =>
  waitFor(
    async () =>
      (await ctx.client.command('EXISTS', `crm:{${ctx.tenantId}}:ref-fence:user:u-alice`)) === 0,
    { message: 'the fence token deleted' },
  )

/** Publishes an event and waits until B and C have applied it and Redis shows it. */
const byEvent = (topic, eventType, data) => async (ctx, b, c) => {
  const applied = [b, c].map((x) => x.getMetrics().eventsApplied)
  await publisher(ctx)(topic, eventType, data)
  await waitFor(() => [b, c].every((x, i) => x.getMetrics().eventsApplied > applied[i]), {
    message: 'the event applied by B and C',
  })
  await fenceGone(ctx)
}

test('a user-changed event', fenceHolds, byEvent('users', 'user-changed', { userId: 'u-alice' }))
test(
  'a cache-invalidate event',
  fenceHolds,
  byEvent('cache', 'cache-invalidate', { keys: ['user:u-alice'] }),
)
test('invalidate(key) on another instance', fenceHolds, async (ctx, b) => {
  b.invalidate('user:u-alice')
  await fenceGone(ctx)
})
test('a reload that drops reference data (resync-required)', fenceHolds, async (ctx, b, c) => {
  const resyncs = [b, c].map((x) => x.getMetrics().resyncs)
  await publisher(ctx)('control', 'resync-required', {})
  await waitFor(() => [b, c].every((x, i) => x.getMetrics().resyncs > resyncs[i]), {
    message: 'B and C reloaded',
  })
  await waitFor(
    async () => (await ctx.client.command('EXISTS', `crm:{${ctx.tenantId}}:ref-epoch`)) === 0,
    { message: 'the epoch deleted' },
  )
})

test('hierarchy-changed removes the shared entry; the next read anywhere fetches anew', async (t) => {
  const ctx = await fleet(t)
  const [a, b] = [await ctx.instance(), await ctx.instance()]
  await a.getHierarchy('org-1')
  t.truthy(await ctx.shared('hierarchy:org-1'))
  const changed = { ...ctx.sim.data.hierarchy.get('org-1'), name: 'Renamed' }
  ctx.sim.data.hierarchy.set('org-1', changed)
  const applied = b.getMetrics().eventsApplied
  await publisher(ctx)('hierarchy', 'hierarchy-changed', { entityId: 'org-1' })
  await waitFor(() => b.getMetrics().eventsApplied > applied)
  await waitFor(async () => (await ctx.shared('hierarchy:org-1')) === null, {
    message: 'the shared entry removed',
  })
  t.deepEqual(await b.getHierarchy('org-1'), changed)
  t.is(ctx.sim.count('/api/hierarchy/org-1'), 2)
})

// ---- TTLs ------------------------------------------------------------------------

test('TTLs hold in Redis, and a later reader keeps an entry only for the time it has left', async (t) => {
  const ctx = await fleet(t)
  const [a, b] = [await ctx.instance(), await ctx.instance()]
  await a.getUserProfile('u-alice')
  const pttl = await ctx.client.command('PTTL', ctx.entry('user:u-alice'))
  t.true(pttl > TTL.userProfiles - 2_000 && pttl <= TTL.userProfiles, `PTTL ${pttl} ≈ the TTL`)

  // As if 20 s had passed in Redis.
  await ctx.client.command('PEXPIRE', ctx.entry('user:u-alice'), '40000')
  const before = Date.now()
  await b.getUserProfile('u-alice')
  const left = b.getCacheExpiry('user:u-alice') - before
  t.true(left > 38_000 && left <= 40_500, `B keeps it ${left} ms (what Redis had left), not 60 s`)
  t.is(ctx.sim.count(ALICE), 1)

  // A remembered 404 is shared, for ttl.notFound.
  const e = await t.throwsAsync(a.getUserProfile('nobody'))
  t.is(e.code, 'NOT_FOUND')
  t.is(await ctx.shared('user:nobody'), 'null')
  const p404 = await ctx.client.command('PTTL', ctx.entry('user:nobody'))
  t.true(p404 > TTL.notFound - 2_000 && p404 <= TTL.notFound, `PTTL ${p404} ≈ ttl.notFound`)
  t.is((await t.throwsAsync(b.getUserProfile('nobody'))).code, 'NOT_FOUND')
  t.is(ctx.sim.count('/api/users/nobody/profile'), 1)
  const left404 = b.getCacheExpiry('user:nobody') - Date.now()
  t.true(left404 <= TTL.notFound, `${left404}`)
})

// ---- Redis unavailable ---------------------------------------------------------------

test('Redis down: reads still work from the local cache and the Wrapper, without an error', async (t) => {
  const ctx = await fleet(t)
  const a = await ctx.instance()
  const errors = []
  a.on('error', (e) => errors.push(e))
  const expected = ctx.sim.data.profiles.get('u-alice')
  t.deepEqual(await a.getUserProfile('u-alice'), expected) // the command connection is open now
  await ctx.redis.stop()

  a.invalidate('user:u-alice')
  const started = Date.now()
  t.deepEqual(await a.getUserProfile('u-alice'), expected)
  t.deepEqual(await a.getHierarchy('org-1'), ctx.sim.data.hierarchy.get('org-1'))
  t.deepEqual(await a.getUserProfile('u-alice'), expected, 'and kept locally')
  t.is((await t.throwsAsync(a.getAuditLog('missing'))).code, 'NOT_FOUND')
  t.true(Date.now() - started < 3_000, `${Date.now() - started} ms`)
  t.is(ctx.sim.count(ALICE), 2)
  t.is(ctx.sim.count('/api/hierarchy/org-1'), 1)
  t.like(a.getMetrics(), { sharedHits: 0, sharedMisses: 1 })
  t.deepEqual(
    errors.map((e) => e.code).filter((c) => c !== 'REDIS_UNAVAILABLE'),
    [],
    'no error but the subscription link reporting Redis down',
  )
})

test('a consumer whose Redis was never up for commands reads through the Wrapper', async (t) => {
  const ctx = await fleet(t)
  const a = await ctx.instance()
  await ctx.redis.stop()
  const reads = await Promise.all(Array.from({ length: 20 }, () => a.getUserProfile('u-alice')))
  for (const r of reads) t.deepEqual(r, ctx.sim.data.profiles.get('u-alice'))
  t.is(ctx.sim.count(ALICE), 1, 'local single-flight still holds')
})

// ---- the option, metrics, the pool --------------------------------------------------

test('sharedReference is a boolean (TypeError naming it), off by default', async (t) => {
  const base = { tenantId: 't1', wrapperUrl: 'http://127.0.0.1:9', logger: quietLogger() }
  for (const bad of ['true', 1, {}, []]) {
    const e = t.throws(() => new SmartCRMConsumer({ ...base, sharedReference: bad }), {
      instanceOf: TypeError,
    })
    t.regex(e.message, /sharedReference/)
    t.is(e.code, 'ERR_INVALID_OPTION')
  }
  t.throws(() => createTenantPool({ wrapperUrl: 'http://127.0.0.1:9', sharedReference: 'yes' }), {
    instanceOf: TypeError,
    message: /sharedReference/,
  })
  const c = new SmartCRMConsumer({ ...base, sharedReference: false })
  t.like(c.getMetrics(), { sharedHits: 0, sharedMisses: 0 })
  await c.shutdown()
})

test('without sharedReference nothing is written to Redis', async (t) => {
  const ctx = await fleet(t)
  const a = await ctx.instance({ sharedReference: false })
  await a.getUserProfile('u-alice')
  t.deepEqual(await ctx.client.command('KEYS', '*ref*'), [])
  t.like(a.getMetrics(), { sharedHits: 0, sharedMisses: 0 })
})

test('metricsText has the shared tier counters', async (t) => {
  const ctx = await fleet(t)
  const [a, b] = [await ctx.instance(), await ctx.instance()]
  await a.getUserProfile('u-alice')
  await b.getUserProfile('u-alice')
  t.regex(b.metricsText(), /^smart_crm_consumer_shared_hits_total\{tenant="[^"]+"\} 1$/m)
  t.regex(a.metricsText(), /^smart_crm_consumer_shared_misses_total\{tenant="[^"]+"\} 1$/m)
})

test("a pool's tenants share one command connection, each under its own hash tag", async (t) => {
  const redis = await startRedis()
  const tenants = ['acme', 'globex', 'initech']
  const data = {}
  for (const id of tenants) {
    data[id] = normaliseData({ profiles: [{ userId: 'u1', name: `user of ${id}` }] })
  }
  const sim = await startMultiTenantSim({ tenants: data })
  const client = await connectRedis(redis.url)
  const opts = {
    wrapperUrl: sim.url,
    redisUrl: redis.url,
    heartbeatMs: 500,
    sharedReference: true,
    logger: quietLogger(),
  }
  const pools = [createTenantPool(opts), createTenantPool(opts)]
  t.teardown(async () => {
    await Promise.all(pools.map((p) => p.shutdown()))
    client.destroy()
    await sim.stop()
    await redis.stop()
  })
  for (const id of tenants) {
    t.deepEqual(await (await pools[0].tenant(id)).getUserProfile('u1'), {
      userId: 'u1',
      name: `user of ${id}`,
    })
    t.deepEqual(JSON.parse(await client.command('HGET', `crm:{${id}}:ref:user:u1`, 'v')), {
      userId: 'u1',
      name: `user of ${id}`,
    })
  }
  t.is(pools[0].getMetrics().pool.commandConnections, 1, 'one for three tenants')
  // Another pool (another process of the fleet) takes them from Redis.
  for (const id of tenants) {
    t.is((await (await pools[1].tenant(id)).getUserProfile('u1')).name, `user of ${id}`)
  }
  const hits = pools[1].getMetrics().totals
  t.like(hits, { sharedHits: 3, sharedMisses: 0 })
  for (const id of tenants) t.is(sim.tenant(id).count('/api/users/u1/profile'), 1, id)
})

test("on a Redis Cluster each tenant's entries live on the node that owns its slot", async (t) => {
  t.timeout(120_000)
  const cluster = await startCluster()
  t.teardown(() => cluster.stop())
  // At least six tenants, whose hash tags fall on every primary.
  const primaries = (await cluster.primaries()).map((p) => p.port)
  const tenants = []
  const covered = new Set()
  for (let i = 0; covered.size < primaries.length || tenants.length < 6; i++) {
    const id = `ct${i}`
    covered.add((await cluster.nodeForSlot(cluster.keyslot(`crm:{${id}}:ref-epoch`))).port)
    tenants.push(id)
  }
  const data = {}
  for (const id of tenants) data[id] = normaliseData({ profiles: [{ userId: 'u1', name: id }] })
  const sim = await startMultiTenantSim({ tenants: data })
  t.teardown(() => sim.stop())
  const opts = {
    wrapperUrl: sim.url,
    redisCluster: cluster.options,
    heartbeatMs: 500,
    sharedReference: true,
    logger: quietLogger(),
  }
  const pools = [createTenantPool(opts), createTenantPool(opts)]
  t.teardown(() => Promise.all(pools.map((p) => p.shutdown())))
  for (const id of tenants) {
    t.is((await (await pools[0].tenant(id)).getUserProfile('u1')).name, id)
    const owner = await cluster.nodeForSlot(cluster.keyslot(`crm:{${id}}:ref:user:u1`))
    const v = await cluster.command(owner, ['HGET', `crm:{${id}}:ref:user:u1`, 'v'])
    t.deepEqual(JSON.parse(v), { userId: 'u1', name: id }, `${id} on its slot's owner`)
  }
  const opened = pools[0].getMetrics().pool.commandConnections
  // The first node connected to, plus one per other primary, learned from MOVED.
  t.true(
    opened >= primaries.length && opened <= primaries.length + 1,
    `${opened} command connections for ${tenants.length} tenants on ${primaries.length} primaries`,
  )
  for (const id of tenants) t.is((await (await pools[1].tenant(id)).getUserProfile('u1')).name, id)
  t.like(pools[1].getMetrics().totals, { sharedHits: tenants.length, sharedMisses: 0 })
  for (const id of tenants) t.is(sim.tenant(id).count('/api/users/u1/profile'), 1, id)
})
