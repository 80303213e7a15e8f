'use strict'
// The stream transport and the shared snapshot (SPEC §7), against a real
// redis-server (with AOF where Redis must keep its data across a restart,
// without where it must lose it), the Wrapper simulator over HTTP, and fleets
// of instances as separate OS processes.

const crypto = require('node:crypto')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const test = require('ava')

const { startRedis, waitFor } = require('../tools/test-helpers/index.js')
const { connectRedis } = require('./helpers/resp.js')
const { startWrapperSim, defaultSeed } = require('../tools/wrapper-sim.js')
const { SmartCRMConsumer, createPublisher } = require('../lib/index.js')
const { captureLogger, startFleet, nextEvent } = require('./helpers/fixture.js')

let seq = 0
const OP = 'crm.leads.create'

/** A redis-server; `persist` keeps its data across restarts (AOF, fsync always). */
async function redisServer(t, { persist = false } = {}) {
  const extraArgs = []
  if (persist) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smart-crm-aof-'))
    t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
    extraArgs.push('--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir)
  }
  const redis = await startRedis({ extraArgs })
  t.teardown(() => redis.stop())
  return redis
}

async function setup(
  t,
  { persist = false, consumer: opts = {}, sim: simOpts = {}, init = true } = {},
) {
  const tenantId = `s${process.pid}-${++seq}`
  const redis = await redisServer(t, { persist })
  const sim = await startWrapperSim({ tenantId, redisUrl: redis.url, ...simOpts })
  t.teardown(() => sim.stop())
  const { logger, lines } = captureLogger()
  const base = {
    tenantId,
    wrapperUrl: sim.url,
    redisUrl: redis.url,
    transport: 'stream',
    heartbeatMs: 500,
    resyncJitterMs: 0,
    // Fleets of processes share two cores with the other specs: a slow answer
    // is not an outage here (a retry would be one more Wrapper request).
    requestTimeoutMs: 15_000,
  }
  const consumer = new SmartCRMConsumer({ ...base, logger, ...opts })
  consumer.on('error', () => {})
  t.teardown(() => consumer.shutdown())
  if (init) await consumer.initialize()
  let admin = await connectRedis(redis.url)
  t.teardown(() => admin.destroy())
  const ctx = {
    tenantId,
    redis,
    sim,
    consumer,
    lines,
    base,
    keys: {
      stream: `crm:{${tenantId}}:stream`,
      snapshot: `crm:{${tenantId}}:snapshot`,
      epoch: `crm:{${tenantId}}:epoch`,
    },
    command: (...args) => admin.command(...args),
    reconnectAdmin: async () => {
      admin.destroy()
      admin = await connectRedis(redis.url)
    },
    /** Snapshot list requests made to the Wrapper so far. */
    loads: () => sim.requests.filter((r) => r.path === '/api/credits/configs').length,
    /** Kills every subscriber connection (the consumer's link). */
    killLinks: async () => {
      const list = String(await admin.command('CLIENT', 'LIST'))
      for (const l of list.split('\n').filter((x) => / flags=P /.test(x)))
        await admin.command('CLIENT', 'KILL', 'ID', /id=(\d+)/.exec(l)[1])
    },
  }
  return ctx
}

// ---- resuming from the stream ---------------------------------------------------

test('connection killed: events published meanwhile are applied once and in order, no Wrapper load, counted as a resume', async (t) => {
  const { consumer, sim, loads, killLinks } = await setup(t)
  t.is(loads(), 1)
  const changes = []
  consumer.on('change', (e) => changes.push(e.keys[0]))
  const lost = nextEvent(consumer, 'connection', { filter: (e) => !e.connected })
  await killLinks()
  await lost
  // published while the consumer is disconnected (it reconnects after its backoff)
  for (let i = 1; i <= 20; i++) await sim.setConfig('seq', { n: i })
  await sim.setCreditConfig(OP, { creditCost: 9 })
  await waitFor(() => consumer.getCreditCost(OP) === 9, { timeout: 20_000, message: 'caught up' })
  t.deepEqual(consumer.getActiveConfig('seq'), { n: 20 })
  const m = consumer.getMetrics()
  t.is(loads(), 1, 'no Wrapper request')
  t.is(m.resumes, 1)
  t.is(m.resyncs, 0)
  t.is(m.eventsApplied, 21, 'each applied once')
  t.deepEqual(changes, [...Array(20).fill('config:seq'), `credit:${OP}`], 'in order')
  await waitFor(() => consumer.isConnected, { message: 'connected again' })
})

test('Redis restarted with its data (AOF): caught up from the stream, zero Wrapper requests', async (t) => {
  const { consumer, sim, redis, loads } = await setup(t, { persist: true })
  await sim.setCreditConfig(OP, { creditCost: 3 })
  await waitFor(() => consumer.getCreditCost(OP) === 3)
  const before = sim.requests.length
  await redis.restart()
  // the sim's publisher reconnects by itself; published before the consumer is back
  await sim.setCreditConfig(OP, { creditCost: 4 })
  await sim.setConfig('after-restart', { ok: true })
  await waitFor(() => consumer.getActiveConfig('after-restart') !== null, {
    timeout: 30_000,
    message: 'caught up after the restart',
  })
  t.is(consumer.getCreditCost(OP), 4)
  t.is(sim.requests.length, before, 'no Wrapper request at all')
  t.is(loads(), 1)
  const m = consumer.getMetrics()
  t.true(m.resumes >= 1)
  t.is(m.resyncs, 0)
  t.is(consumer.health().source, 'wrapper')
})

test('a stream trimmed past the position: one full reload, counted, no silent gap', async (t) => {
  const { consumer, sim, loads, killLinks, command, keys } = await setup(t, {
    consumer: { sharedSnapshot: false },
  })
  const lost = nextEvent(consumer, 'connection', { filter: (e) => !e.connected })
  await killLinks()
  await lost
  await sim.setCreditConfig(OP, { creditCost: 11 })
  await command('XTRIM', keys.stream, 'MAXLEN', '0')
  // a change the trimmed stream no longer carries: only a reload can show it
  sim.data.credits.set('crm.legacy.import', {
    operationCode: 'crm.legacy.import',
    creditCost: 5,
    isActive: true,
  })
  await waitFor(() => consumer.getMetrics().resyncs === 1, { timeout: 20_000, message: 'reload' })
  await waitFor(() => consumer.isConnected)
  t.is(loads(), 2)
  t.is(consumer.getMetrics().resumes, 0)
  t.is(consumer.getCreditCost(OP), 11)
  t.is(consumer.getCreditCost('crm.legacy.import'), 5)
})

test('Redis restarted without persistence: the epoch is gone, one full reload, counted', async (t) => {
  const { consumer, sim, redis, loads } = await setup(t, { consumer: { sharedSnapshot: false } })
  await sim.setCreditConfig(OP, { creditCost: 6 })
  await waitFor(() => consumer.getCreditCost(OP) === 6)
  sim.data.credits.set('crm.legacy.import', {
    operationCode: 'crm.legacy.import',
    creditCost: 8,
    isActive: true,
  })
  await redis.restart()
  await waitFor(() => consumer.getMetrics().resyncs === 1, { timeout: 30_000, message: 'reload' })
  await waitFor(() => consumer.isConnected)
  t.is(loads(), 2)
  t.is(consumer.getMetrics().resumes, 0)
  t.is(consumer.getCreditCost('crm.legacy.import'), 8)
})

// ---- the shared snapshot ------------------------------------------------------------

test.serial(
  'twenty instances starting at once: one Wrapper load for the fleet; the same after Redis loses its data',
  async (t) => {
    const { sim, base, loads, redis } = await setup(t, { init: false, sim: { pageSize: 2 } })
    sim.resetCounts?.()
    const fleet = startFleet(t, 20, { ...base, initTimeoutMs: 20_000 }, [OP])
    const first = await Promise.all(fleet.map((i) => i.ready))
    t.true(
      first.every((r) => r.ready),
      JSON.stringify(first.find((r) => !r.ready)),
    )
    t.is(loads(), 1, 'one Wrapper load for twenty instances')
    const sources = first.map((r) => r.health.source).sort()
    t.is(sources.filter((s) => s === 'wrapper').length, 1)
    t.is(sources.filter((s) => s === 'snapshot').length, 19)
    t.true(first.every((r) => r.costs[OP] === 2.5))
    // Redis loses its data: everyone reloads, one of them from the Wrapper
    await redis.restart()
    await sim.setCreditConfig(OP, { creditCost: 12 }).catch(() => {})
    await waitFor(
      async () => {
        const s = await Promise.all(fleet.map((i) => i.state()))
        return s.every((x) => x.metrics.resyncs >= 1 && x.metrics.connected)
      },
      { timeout: 40_000, interval: 200, message: 'the fleet reloaded' },
    )
    t.is(loads(), 2, 'one more Wrapper load for the whole fleet')
  },
)

test('Wrapper down at start, snapshot in Redis: initialize() resolves from it and the stream keeps it current', async (t) => {
  const { sim, base, consumer } = await setup(t)
  t.is(consumer.health().source, 'wrapper')
  sim.fault('/api/', { status: 503, json: { error: 'down' } })
  const second = new SmartCRMConsumer({ ...base, logger: captureLogger().logger })
  second.on('error', () => {})
  t.teardown(() => second.shutdown())
  await second.initialize()
  t.is(second.health().source, 'snapshot')
  t.is(second.getMetrics().snapshotLoads.redis, 1)
  t.is(second.getMetrics().snapshotLoads.wrapper, 0)
  t.is(second.getCreditCost(OP), 2.5)
  await sim.setCreditConfig(OP, { creditCost: 13 })
  await waitFor(() => second.getCreditCost(OP) === 13, { message: 'the stream keeps it current' })
})

test.serial(
  'periodic refresh over twenty instances: one Wrapper load per interval, and a change made without an event reaches every instance',
  async (t) => {
    const { sim, base, loads } = await setup(t, { init: false })
    const fleet = startFleet(t, 20, { ...base, refreshIntervalMs: 3000 }, [OP])
    await Promise.all(fleet.map((i) => i.ready))
    t.is(loads(), 1)
    // changed at the Wrapper, no event
    sim.data.credits.set(OP, { operationCode: OP, creditCost: 42, isActive: true, version: 9 })
    await waitFor(
      async () => (await Promise.all(fleet.map((i) => i.state()))).every((s) => s.costs[OP] === 42),
      { timeout: 20_000, interval: 200, message: 'the refresh reached every instance' },
    )
    const afterOne = loads()
    t.true(afterOne <= 3, `one Wrapper load per interval, not one per instance (${afterOne})`)
  },
)

// ---- snapshot bytes (format 2's body is binary: read and written as Buffers) ----------

/** The snapshot's exact bytes (RESP replies are decoded as UTF-8, so Redis sends hex). */
async function getSnapshot(command, key) {
  const hex = await command(
    'EVAL',
    "local s = redis.call('GET', KEYS[1]) if not s then return false end " +
      "return (s:gsub('.', function(c) return string.format('%02x', string.byte(c)) end))",
    '1',
    key,
  )
  return Buffer.from(String(hex), 'hex')
}

/** Splits a snapshot into its format line, header, MAC line and data. */
function parseSnapshot(buf) {
  const a = buf.indexOf(10)
  const b = buf.indexOf(10, a + 1)
  const c = buf.indexOf(10, b + 1)
  return {
    format: buf.subarray(0, a).toString(),
    header: JSON.parse(buf.subarray(a + 1, b).toString()),
    mac: buf.subarray(b + 1, c).toString(),
    data: buf.subarray(c + 1),
  }
}

/**
 * A snapshot from parts, its `dataBytes` and `sha256` made right for `data`
 * (signed with `secret` when given, else `mac` as is).
 */
function frameSnapshot({ format, header, mac = '-', data }, secret) {
  const h = {
    ...header,
    dataBytes: data.length,
    sha256: crypto.createHash('sha256').update(data).digest('hex'),
  }
  const headerLine = Buffer.from(JSON.stringify(h))
  const signed = secret
    ? crypto
        .createHmac('sha256', secret)
        .update(Buffer.concat([headerLine, Buffer.from('\n'), data]))
        .digest('hex')
    : mac
  return Buffer.concat([Buffer.from(`${format}\n`), headerLine, Buffer.from(`\n${signed}\n`), data])
}

/** A format 2 body: counts (credits, roles, users, configs), then `rest` as bytes. */
const body2 = (counts, rest) => Buffer.from([...counts, ...rest])
/** One string "r", one list [0], one shape (status 0, list 0). */
const TABLES = [1, 1, 0x72, 1, 1, 0, 1, 0, 0]

test('the snapshot a consumer writes is format 2 (binary body), smaller than the JSON rows', async (t) => {
  const { command, keys, sim } = await setup(t)
  const snap = parseSnapshot(await getSnapshot(command, keys.snapshot))
  t.is(snap.format, 'smart-crm-snapshot 2')
  t.is(snap.header.dataBytes, snap.data.length)
  t.is(snap.mac, '-')
  const json = JSON.stringify({
    credits: [...sim.data.credits.values()],
    roles: [...sim.data.roles.values()],
    users: [...sim.data.users.values()],
  })
  t.true(snap.data.length < Buffer.byteLength(json) / 2, `${snap.data.length} vs ${json.length}`)
})

for (const [name, mutate] of [
  [
    'tampered',
    (b) => {
      const c = Buffer.from(b)
      c[c.length - 3] ^= 1
      return c
    },
  ],
  [
    'foreign-tenant',
    (b) => {
      const s = parseSnapshot(b)
      return frameSnapshot({ ...s, header: { ...s.header, tenantId: 'someone-else' } })
    },
  ],
  ['wrong-format', (b) => frameSnapshot({ ...parseSnapshot(b), format: 'smart-crm-snapshot 9' })],
  // 16 × maxResponseBytes is the bound of one load, the snapshot's too
  ['oversize', (b) => Buffer.concat([b, Buffer.alloc(20_000, 32)])],
  // bodies that lie, with a right digest: rejected when decoded, never a crash
  [
    'out-of-range-shape',
    (b) =>
      frameSnapshot({ ...parseSnapshot(b), data: body2([0, 0, 1, 0], [...TABLES, 1, 0x75, 4]) }),
  ],
  [
    'truncated-varint',
    (b) =>
      frameSnapshot({ ...parseSnapshot(b), data: body2([0, 0, 1, 0], [...TABLES, 1, 0x75, 0x80]) }),
  ],
  [
    'count-beyond-its-bytes',
    (b) => frameSnapshot({ ...parseSnapshot(b), data: body2([0, 0, 0x80, 0x89, 0x7a, 0], TABLES) }),
  ],
]) {
  test(`a ${name} snapshot is rejected, counted, and the Wrapper used`, async (t) => {
    const { base, command, keys, loads } = await setup(t, { consumer: { maxResponseBytes: 1000 } })
    const stored = await getSnapshot(command, keys.snapshot)
    await command('SET', keys.snapshot, mutate(stored))
    const second = new SmartCRMConsumer({ ...base, maxResponseBytes: 1000 })
    second.on('error', () => {})
    t.teardown(() => second.shutdown())
    await second.initialize()
    t.is(second.getMetrics().snapshotRejected, 1)
    t.is(second.health().source, 'wrapper')
    t.is(loads(), 2)
    t.is(second.getCreditCost(OP), 2.5)
    // and it wrote a good one in its place
    t.is(parseSnapshot(await getSnapshot(command, keys.snapshot)).format, 'smart-crm-snapshot 2')
  })
}

test('a format 1 snapshot (JSON rows, written by an older consumer) is still read', async (t) => {
  const { base, command, keys, loads } = await setup(t)
  const s = parseSnapshot(await getSnapshot(command, keys.snapshot))
  const rows = {
    credits: [{ operationCode: OP, creditCost: 7.5, isActive: true, version: 3 }],
    roles: [{ roleId: 'sales', permissions: ['crm.leads.*'] }],
    users: [{ userId: 'u-old', status: 'active', roles: ['sales'], version: 1 }],
    configs: [{ configId: 'k', config: { n: 1 } }],
  }
  const v1 = frameSnapshot({
    format: 'smart-crm-snapshot 1',
    header: s.header,
    data: Buffer.from(JSON.stringify(rows)),
  })
  await command('SET', keys.snapshot, v1)
  const second = new SmartCRMConsumer({ ...base, logger: captureLogger().logger })
  second.on('error', () => {})
  t.teardown(() => second.shutdown())
  await second.initialize()
  t.is(second.health().source, 'snapshot')
  t.is(second.getMetrics().snapshotRejected, 0)
  t.is(loads(), 1)
  t.is(second.getCreditCost(OP), 7.5, 'the format 1 rows were used')
  t.deepEqual(second.getActiveConfig('k'), { n: 1 })
  t.is(second.getUserStatus('u-old'), 'active')
  t.deepEqual(second.getUserRoles('u-old'), ['sales'])
})

test('with a signing secret, an unsigned or badly signed snapshot is rejected', async (t) => {
  const secret = 'fleet-secret'
  const { base, command, keys, loads } = await setup(t, {
    consumer: { signingSecret: secret },
    sim: { signingSecret: secret },
  })
  const stored = parseSnapshot(await getSnapshot(command, keys.snapshot))
  t.regex(stored.mac, /^[0-9a-f]{64}$/, 'signed by its writer')
  // the same MAC computed here: HMAC-SHA256 over the header line, "\n", the data
  t.deepEqual(frameSnapshot(stored, secret), await getSnapshot(command, keys.snapshot))
  for (const mac of ['-', 'ab'.repeat(32)]) {
    await command('SET', keys.snapshot, frameSnapshot({ ...stored, mac }))
    const c = new SmartCRMConsumer({ ...base, signingSecret: secret })
    c.on('error', () => {})
    t.teardown(() => c.shutdown())
    await c.initialize()
    t.is(c.getMetrics().snapshotRejected, 1, mac)
    t.is(c.health().source, 'wrapper')
  }
  t.is(loads(), 3)
})

test.serial(
  "an instance waiting for the lease is woken by the holder's notice, not by its fallback poll",
  async (t) => {
    const { base, command, keys, loads, tenantId } = await setup(t)
    const good = await getSnapshot(command, keys.snapshot)
    const lease = `crm:{${tenantId}}:lease`
    // another instance holds the lease and has not written a snapshot yet
    await command('DEL', keys.snapshot)
    await command('SET', lease, 'someone', 'PX', '60000')
    await command('CONFIG', 'RESETSTAT')
    const waiter = new SmartCRMConsumer({ ...base, logger: captureLogger().logger })
    waiter.on('error', () => {})
    t.teardown(() => waiter.shutdown())
    const ready = waiter.initialize().then(() => performance.now())
    // it has looked once and waits (its fallback poll is 500 ms)
    await new Promise((r) => setTimeout(r, 700))
    // looking at the lease (EXISTS) every 500 ms at most, not every 50 ms
    const stats = String(await command('INFO', 'commandstats'))
    const looks = Number(/cmdstat_exists:calls=(\d+)/.exec(stats)?.[1] ?? 0)
    t.true(looks >= 1 && looks <= 3, `${looks} looks at the lease in 700 ms`)
    await command('SET', keys.snapshot, good)
    await command('DEL', lease)
    const pos = parseSnapshot(good).header.position
    const told = performance.now()
    await command('PUBLISH', `crm:${tenantId}:stream`, `snapshot ${pos} released`)
    const at = await ready
    t.log(`ready ${(at - told).toFixed(0)} ms after the notice`)
    t.true(at - told < 250, `ready ${(at - told).toFixed(0)} ms after the notice`)
    t.is(waiter.health().source, 'snapshot')
    t.is(loads(), 1)
  },
)

// ---- publishers and signed events ------------------------------------------------------

test("a 'both' publisher reaches consumers of both transports, each event once", async (t) => {
  const { base, redis, tenantId } = await setup(t, { init: false })
  const pubsub = new SmartCRMConsumer({
    ...base,
    transport: 'pubsub',
    logger: captureLogger().logger,
  })
  const stream = new SmartCRMConsumer({ ...base, logger: captureLogger().logger })
  t.teardown(() => Promise.all([pubsub.shutdown(), stream.shutdown()]))
  await Promise.all([pubsub.initialize(), stream.initialize()])
  const publisher = createPublisher({ redisUrl: redis.url, tenantId })
  t.teardown(() => publisher.close())
  for (let i = 1; i <= 10; i++)
    await publisher.publish('configs', 'config-changed', { configId: 'k', config: i })
  await waitFor(() => pubsub.getActiveConfig('k') === 10 && stream.getActiveConfig('k') === 10)
  t.is(pubsub.getMetrics().eventsApplied, 10)
  t.is(stream.getMetrics().eventsApplied, 10)
  // the publisher's transport options are validated, naming them
  t.throws(() => createPublisher({ redisUrl: redis.url, tenantId, transport: 'carrier-pigeon' }), {
    instanceOf: RangeError,
    message: /transport/,
  })
  t.throws(() => createPublisher({ redisUrl: redis.url, tenantId, streamMaxLen: 0 }), {
    instanceOf: RangeError,
    message: /streamMaxLen/,
  })
})

test('signed events keep the SPEC §3 rules in stream mode: signature, window, replay', async (t) => {
  const secret = 'stream-secret'
  const { consumer, sim, command, keys, tenantId, killLinks } = await setup(t, {
    consumer: { signingSecret: secret, sharedSnapshot: false },
    sim: { signingSecret: secret },
  })
  await sim.setCreditConfig(OP, { creditCost: 21 })
  await waitFor(() => consumer.getCreditCost(OP) === 21)
  const [[, fields]] = await command('XREVRANGE', keys.stream, '+', '-', 'COUNT', '1')
  const msg = String(fields[3])
  const live = (id, m) => command('PUBLISH', `crm:${tenantId}:stream`, `${id} credit-configs ${m}`)
  // a replay of the same signed message under a later id: rejected by its eventId
  await live(`${Date.now() + 1000}-0`, msg)
  // an altered message: bad signature
  const altered = msg.replace('21', '99')
  await live(`${Date.now() + 2000}-0`, altered)
  // an old signed message added to the stream now: outside the window of its entry time
  const old = JSON.parse(msg)
  old.eventId = 'old-1'
  old.timestamp = new Date(Date.now() - 3_600_000).toISOString()
  const { signMessage } = require('../lib/index.js')
  delete old.signature
  old.signature = signMessage(old, secret)
  await command('XADD', keys.stream, '*', 'topic', 'credit-configs', 'msg', JSON.stringify(old))
  // resumes is counted before the catch-up applies anything; the connected
  // notice comes after it, so the rejections are counted by then
  let down = false
  const lost = nextEvent(consumer, 'connection', { filter: (e) => !e.connected })
  const back = nextEvent(consumer, 'connection', {
    filter: (e) => {
      if (!e.connected) down = true
      return e.connected && down
    },
    timeout: 20_000,
  })
  await killLinks()
  await lost
  await back
  t.is(consumer.getMetrics().resumes, 1)
  const r = consumer.getMetrics().eventsRejected
  t.is(r.replay, 1)
  t.is(r.badSignature, 1)
  t.is(r.expired, 1)
  t.is(consumer.getCreditCost(OP), 21)
})

test('options: transport and sharedSnapshot are validated, naming the option', (t) => {
  const base = { tenantId: 't', wrapperUrl: 'http://127.0.0.1:9', redisUrl: 'redis://127.0.0.1:9' }
  t.throws(() => new SmartCRMConsumer({ ...base, transport: 'kafka' }), {
    instanceOf: RangeError,
    message: /transport/,
  })
  t.throws(() => new SmartCRMConsumer({ ...base, sharedSnapshot: true }), {
    instanceOf: RangeError,
    message: /sharedSnapshot/,
  })
  t.throws(() => new SmartCRMConsumer({ ...base, transport: 'stream', sharedSnapshot: 'yes' }), {
    instanceOf: TypeError,
    message: /sharedSnapshot/,
  })
  t.notThrows(() => new SmartCRMConsumer({ ...base, transport: 'stream', sharedSnapshot: false }))
  void defaultSeed
})
