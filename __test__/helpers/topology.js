'use strict'
// Test fixture for the managed-Redis specs (SPEC §6): a Wrapper simulator, a
// consumer and a publisher wired to whatever Redis option a test names
// (`redisUrl`, `redisSentinel`, `redisCluster`, with `redisTls`), steady traffic
// that records every publish, and a count of how often each key changed.

const { startWrapperSim, defaultSeed } = require('../../tools/wrapper-sim.js')
const { SmartCRMConsumer, createPublisher } = require('../../lib/index.js')
const { captureLogger, nextEvent, waitFor } = require('./fixture.js')

const TOPICS = ['credit-configs', 'roles', 'users', 'hierarchy', 'configs', 'cache', 'control']

let seq = 0

/** A tenant id unique to this process and call; `prefix` lets tests pick ids. */
const newTenantId = (prefix = 't') => `${prefix}${process.pid}-${++seq}`

/** The tenant's seven channel names. */
const channelsOf = (tenantId, prefix = 'crm') =>
  TOPICS.map((topic) => `${prefix}:${tenantId}:${topic}`)

const connected = (consumer, timeout = 30_000) =>
  nextEvent(consumer, 'connection', { filter: (e) => e.connected === true, timeout })
const disconnected = (consumer, timeout = 30_000) =>
  nextEvent(consumer, 'connection', { filter: (e) => e.connected === false, timeout })

/**
 * Starts a simulator and a consumer on `redis` (the Redis options: one of
 * `{ redisUrl }`, `{ redisSentinel }`, `{ redisCluster }`, plus `redisTls`), and
 * a publisher on `publisherRedis` (default: the same options). Everything is
 * torn down when the test ends. Records the consumer's 'connection' and
 * 'resync' events, and counts 'change' events per key.
 */
async function world(
  t,
  { redis, publisherRedis = redis, tenantId = newTenantId(), consumer: extra = {}, init = true },
) {
  const sim = await startWrapperSim({ tenantId, data: defaultSeed() })
  t.teardown(() => sim.stop())
  const { logger, lines: logs } = captureLogger()
  const consumer = new SmartCRMConsumer({
    tenantId,
    wrapperUrl: sim.url,
    heartbeatMs: 500,
    resyncJitterMs: 0,
    initTimeoutMs: 10_000,
    logger,
    ...redis,
    ...extra,
  })
  t.teardown(() => consumer.shutdown())
  const pub = createPublisher({ tenantId, connectTimeoutMs: 10_000, ...publisherRedis })
  t.teardown(() => pub.close())
  const connections = []
  const resyncs = []
  const changes = new Map()
  consumer.on('connection', (e) => connections.push({ ...e, at: Date.now() }))
  consumer.on('resync', (e) => resyncs.push({ ...e, at: Date.now() }))
  consumer.on('change', (e) => {
    for (const key of e.keys) changes.set(key, (changes.get(key) || 0) + 1)
  })
  if (init) await consumer.initialize()

  /**
   * Publishes a config through the publisher and waits until the consumer has
   * emitted its 'change' (so every earlier event's 'change' has been emitted
   * too: batches reach JS in order; a read alone could show the marker a batch
   * earlier, lib/replica.js).
   */
  const marker = async (name = `marker-${++seq}`) => {
    const seen = nextEvent(consumer, 'change', {
      filter: (e) => e.keys.includes(`config:${name}`),
      timeout: 10_000,
    })
    await pub.publish('configs', 'config-changed', { configId: name, config: true })
    await seen
  }
  return {
    tenantId,
    channels: channelsOf(tenantId),
    sim,
    consumer,
    pub,
    logs,
    connections,
    resyncs,
    changes,
    marker,
  }
}

/**
 * Steady traffic: every `everyMs` ms one config event (`{name}-{n}` = n)
 * through `pub`, and critical reads on `consumer`. Every publish is recorded
 * `{ n, key, at, receivers, error }` (`key` = the cache key it changes). `stop()`
 * stops it and waits for every pending publish to settle.
 */
function traffic(pub, consumer, { everyMs = 5, name = `traffic${++seq}` } = {}) {
  const sent = []
  const stats = { reads: 0, readErrors: 0, firstReadError: null }
  let n = 0
  const timer = setInterval(() => {
    const entry = { n: ++n, at: Date.now(), receivers: undefined, error: null }
    entry.key = `config:${name}-${entry.n}`
    entry.settled = pub
      .publish('configs', 'config-changed', { configId: `${name}-${entry.n}`, config: entry.n })
      .then(
        (r) => (entry.receivers = r),
        (e) => (entry.error = e),
      )
    sent.push(entry)
    for (let i = 0; i < 10; i++) {
      try {
        consumer.getCreditCost('crm.leads.delete')
        consumer.checkPermission('u-alice', 'crm.leads.create')
        consumer.getActiveConfig(`${name}-${entry.n - 1}`)
        stats.reads += 3
      } catch (err) {
        stats.readErrors++
        stats.firstReadError = stats.firstReadError || err
      }
    }
  }, everyMs)
  return {
    name,
    sent,
    stats,
    /** The config id of event `n`. */
    id: (i) => `${name}-${i}`,
    get count() {
      return n
    },
    async stop() {
      clearInterval(timer)
      await Promise.all(sent.map((e) => e.settled))
    },
  }
}

/**
 * Asserts that every event of `entries` was delivered to one receiver (when
 * `receivers` is checked: not in a cluster, where PUBLISH counts the local
 * node's subscribers only) and applied exactly once by the consumer.
 */
function assertAppliedOnce(t, entries, changes, { checkReceivers = true } = {}) {
  t.true(entries.length > 0, 'some events were published in the window')
  const failed = entries.filter((e) => e.error)
  t.deepEqual(
    failed.map((e) => `${e.n}: ${e.error.code} ${e.error.message}`),
    [],
    'no publish failed in the window',
  )
  if (checkReceivers) {
    const wrong = entries.filter((e) => e.receivers !== 1)
    t.deepEqual(
      wrong.map((e) => `${e.n}: ${e.receivers} receivers`),
      [],
      'each event reached exactly one subscription',
    )
  }
  const notOnce = entries.map((e) => [e.key, changes.get(e.key) || 0]).filter(([, c]) => c !== 1)
  t.deepEqual(
    notOnce.map(([key, c]) => `${key} applied ${c}×`),
    [],
    'each event applied exactly once',
  )
}

/** Every secret must be absent from errors, logs, metrics and health. */
function assertNoSecrets(t, consumer, { logs = [], errors = [], secrets }) {
  const seen = JSON.stringify([
    errors.map((e) => (e ? { message: e.message, code: e.code, stack: e.stack } : e)),
    logs,
    consumer.getMetrics(),
    consumer.health(),
    consumer.metricsText(),
  ])
  for (const secret of secrets) {
    t.false(seen.includes(secret), `a secret (${secret.slice(0, 12)}…) leaked`)
  }
}

/** Whether a PID still names a live process. */
function pidAlive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return err.code === 'EPERM'
  }
}

module.exports = {
  TOPICS,
  newTenantId,
  channelsOf,
  connected,
  disconnected,
  world,
  traffic,
  assertAppliedOnce,
  assertNoSecrets,
  pidAlive,
}
