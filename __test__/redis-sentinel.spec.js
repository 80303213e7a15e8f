'use strict'
// Redis Sentinel (SPEC §6): the consumer and createPublisher find the master
// through the sentinels (`redisSentinel`), follow a failover by themselves
// within `heartbeatMs × 2` plus the backoff, and treat it as a reconnect:
// resync, one live subscription, each later event applied once.
//
// Real topologies (tools/test-helpers/topologies.js): a primary, a replica and
// three sentinels with `down-after-milliseconds` 1000. A forced
// `SENTINEL FAILOVER` promotes the replica in about 1 s, but the old master
// stays a master with its clients connected until the sentinels demote it
// about 10 s later: a consumer that waits for its connection to drop is late.

const test = require('ava')

const { startSentinel } = require('../tools/test-helpers/topologies.js')
const { SmartCRMConsumer, createPublisher } = require('../lib/index.js')
const { captureLogger, waitFor } = require('./helpers/fixture.js')
const {
  world,
  traffic,
  connected,
  disconnected,
  assertAppliedOnce,
  assertNoSecrets,
  newTenantId,
} = require('./helpers/topology.js')
const { startWrapperSim, defaultSeed } = require('../tools/wrapper-sim.js')

const HEARTBEAT_MS = 500
// SPEC §6: "a promoted replica is found again within heartbeatMs × 2 plus the
// backoff" (the first reconnect delay is at most 1 s), plus slack for a loaded
// machine. Well below the ~10 s after which Sentinel itself would drop the old
// master's clients.
const FOLLOW_MS = 2 * HEARTBEAT_MS + 1000 + 2500

async function sentinel(t, options) {
  const s = await startSentinel(options)
  t.teardown(() => s.stop())
  t.log(`sentinel topology up in ${s.setupMs} ms`)
  return s
}

/** `PUBSUB NUMSUB` of the tenant's channels on `server`: the counts, in channel order. */
async function numsub(s, server, channels) {
  const counts = await s.numsub(server, channels)
  return channels.map((c) => Number(counts[c]))
}

/**
 * The publisher's connections on `server` (it names itself with CLIENT SETNAME)
 * whose last command, within the last second, was PUBLISH or the stream script
 * of the default 'both' transport: `{ count, lines }`.
 */
async function publishing(s, server) {
  const list = await s.command(server, ['CLIENT', 'LIST', 'TYPE', 'normal'])
  const lines = list
    .split('\n')
    .filter(
      (line) =>
        / name=smart-crm-publisher( |$)/.test(line) &&
        / cmd=(publish|eval)( |$)/.test(line) &&
        / idle=0( |$)/.test(line),
    )
  return { count: lines.length, lines }
}

const ones = (channels) => channels.map(() => 1)
const zeros = (channels) => channels.map(() => 0)

test('SENTINEL FAILOVER under steady traffic: both sides follow by themselves, resync, each later event applied once', async (t) => {
  const s = await sentinel(t)
  const w = await world(t, { redis: { redisSentinel: s.options } })
  const { consumer, sim, channels, changes } = w
  t.deepEqual(await numsub(s, s.primary, channels), ones(channels), 'subscribed on the master')

  await consumer.getUserProfile('u-alice')
  const load = traffic(w.pub, consumer)
  t.teardown(() => load.stop())
  await waitFor(() => consumer.getActiveConfig(load.id(20)) === 20, {
    message: 'traffic flowing through the sentinel-found master',
  })

  // the Wrapper changes while the failover happens; only a resync can show it
  sim.data.credits.set('crm.leads.create', {
    operationCode: 'crm.leads.create',
    creditCost: 3.5,
    isActive: true,
    version: 2,
  })
  sim.data.users.delete('u-carol')

  const t0 = Date.now()
  const f = await s.failover()
  const promotedAt = Date.now()
  t.log(`SENTINEL FAILOVER: :${f.from.port} → :${f.to.port} in ${f.ms} ms`)
  t.is(f.to, s.replica)

  // the consumer moves to the promoted replica by itself, long before the
  // sentinels would drop its connection to the old master
  await waitFor(
    async () =>
      (await numsub(s, f.to, channels)).every((n) => n === 1) &&
      (await numsub(s, f.from, channels)).every((n) => n === 0),
    {
      timeout: FOLLOW_MS,
      interval: 50,
      message: `the consumer's subscription on the promoted replica within ${FOLLOW_MS} ms (SPEC §6: heartbeatMs × 2 plus the backoff)`,
    },
  )
  const followedMs = Date.now() - promotedAt
  await waitFor(
    () => consumer.isConnected && w.connections.some((e) => e.connected && e.at >= t0),
    {
      timeout: FOLLOW_MS,
      message: 'connected again (resynced) after the failover',
    },
  )
  t.log(`consumer on the new master ${followedMs} ms after the promotion`)

  // from here on, every event the publisher sends must reach the consumer once:
  // the publisher has followed too (it PUBLISHes to the new master)
  const mark = Math.max(Date.now(), promotedAt + FOLLOW_MS)
  await waitFor(() => Date.now() >= mark + 1500, { interval: 20, timeout: FOLLOW_MS + 3000 })
  const metricsAtMark = consumer.getMetrics()
  const connectionsAtMark = w.connections.length
  // while the traffic goes on, the publisher's connection is on the new master
  const onNew = await publishing(s, f.to)
  const onOld = await publishing(s, f.from)
  t.true(onNew.count > 0, 'the publisher PUBLISHes to the promoted replica')
  t.is(
    onOld.count,
    0,
    `and no longer to the old master (${Date.now() - promotedAt} ms after the promotion): ${onOld.lines.join(' | ')}`,
  )
  await load.stop()
  await w.marker()

  const after = load.sent.filter((e) => e.at >= mark)
  assertAppliedOnce(t, after, changes)
  t.is(load.stats.readErrors, 0, `reads never fail: ${load.stats.firstReadError}`)
  t.true(load.stats.reads > 0)
  t.is(
    consumer.getMetrics().eventsRejected.replay - metricsAtMark.eventsRejected.replay,
    0,
    'no duplicate delivery after the failover',
  )
  t.is(w.connections.length, connectionsAtMark, 'no further disconnect once on the new master')

  // a reconnect with resync
  t.true(
    w.resyncs.some((e) => e.reason === 'reconnect' && e.at >= t0),
    JSON.stringify(w.resyncs),
  )
  t.is(consumer.getCreditCost('crm.leads.create'), 3.5, 'the Wrapper change is visible (resync)')
  t.is(consumer.getUserStatus('u-carol'), null)
  t.is(consumer.getCacheExpiry('user:u-alice'), null, 'reference data dropped on the reconnect')
  const m = consumer.getMetrics()
  t.true(m.reconnects >= 1, `reconnects = ${m.reconnects}`)
  t.true(m.connected)
  t.like(consumer.health(), { ready: true, connected: true, degraded: false })

  // once the sentinels demote the old master (and kill its clients), nothing changes
  const d0 = Date.now()
  await s.waitDemoted()
  t.log(`old master demoted ${Date.now() - d0 + (d0 - promotedAt)} ms after the promotion`)
  const second = traffic(w.pub, consumer, { everyMs: 10 })
  await waitFor(() => second.count >= 30, { message: 'a second burst' })
  await second.stop()
  await w.marker()
  assertAppliedOnce(t, second.sent, changes)
  t.deepEqual(await numsub(s, f.to, channels), ones(channels), 'one live subscription')
  t.deepEqual(await numsub(s, f.from, channels), zeros(channels))
  t.is(w.connections.length, connectionsAtMark, 'the demotion of the old master is not a reconnect')
})

test('a killed master, with passwords on the master and on the sentinels: reconnect, resync, each later event once, no secret shown', async (t) => {
  const password = 'master-hunter2-pw'
  const sentinelPassword = 'sentinel-hunter2-pw'
  const s = await sentinel(t, { password, sentinelPassword })
  const w = await world(t, { redis: { redisSentinel: s.options } })
  const { consumer, sim, channels, changes } = w
  t.deepEqual(await numsub(s, s.primary, channels), ones(channels))
  t.is(
    await w.pub.publish('configs', 'config-changed', { configId: 'first', config: 1 }),
    1,
    'the publisher reaches the master',
  )
  await waitFor(() => consumer.getActiveConfig('first') === 1, { message: 'the first event' })

  const load = traffic(w.pub, consumer)
  t.teardown(() => load.stop())
  await waitFor(() => consumer.getActiveConfig(load.id(20)) === 20, {
    message: 'traffic flowing',
  })

  const down = disconnected(consumer)
  const up = connected(consumer, 40_000)
  const killedAt = Date.now()
  const k = s.killPrimary()
  await down
  sim.data.roles.set('auditor', {
    roleId: 'auditor',
    roleName: 'Auditor',
    permissions: ['crm.audit.read'],
    version: 1,
  })
  const { to, ms } = await k
  const promotedAt = Date.now()
  t.log(`master SIGKILLed; sentinels promoted :${to.port} after ${ms} ms`)
  await up
  t.log(`consumer connected again ${Date.now() - killedAt} ms after the kill`)
  t.true(
    Date.now() - promotedAt < 15_000,
    'found the promoted replica within heartbeatMs × 2 plus the backoff',
  )
  t.deepEqual(consumer.getRolePermissions('auditor'), ['crm.audit.read'], 'resynced')
  t.true(w.resyncs.some((e) => e.reason === 'reconnect' && e.at >= killedAt))

  const mark = Date.now() + FOLLOW_MS
  await waitFor(() => Date.now() >= mark + 1500, { interval: 20, timeout: FOLLOW_MS + 3000 })
  const replaysAtMark = consumer.getMetrics().eventsRejected.replay
  await load.stop()
  await w.marker()
  assertAppliedOnce(
    t,
    load.sent.filter((e) => e.at >= mark),
    changes,
  )
  t.is(consumer.getMetrics().eventsRejected.replay, replaysAtMark)
  t.is(load.stats.readErrors, 0)
  t.deepEqual(await numsub(s, to, channels), ones(channels), 'one live subscription')

  // the old master comes back (the sentinels make it a replica): still one subscription
  await s.primary.restart()
  await s.waitDemoted()
  await w.marker()
  t.deepEqual(await numsub(s, to, channels), ones(channels))
  t.deepEqual(await numsub(s, s.primary, channels), zeros(channels))

  assertNoSecrets(t, consumer, { logs: w.logs, secrets: [password, sentinelPassword] })
})

test('sentinel failures reject initialize() with REDIS_UNAVAILABLE and never show a password', async (t) => {
  const password = 'master-hunter2-right'
  const sentinelPassword = 'sentinel-hunter2-right'
  const s = await sentinel(t, { password, sentinelPassword })
  const tenantId = newTenantId()
  const sim = await startWrapperSim({ tenantId, data: defaultSeed() })
  t.teardown(() => sim.stop())

  const cases = [
    ['a wrong sentinel password', { sentinelPassword: 'sentinel-hunter2-WRONG' }],
    ['no sentinel password', { sentinelPassword: undefined }],
    ['a wrong master password', { password: 'master-hunter2-WRONG' }],
    ['an unknown master name', { masterName: 'no-such-master' }],
    ['no reachable sentinel', { sentinels: ['127.0.0.1:1', '127.0.0.1:2'] }],
  ]
  await Promise.all(
    cases.map(async ([what, change]) => {
      const { logger, lines } = captureLogger()
      const c = new SmartCRMConsumer({
        tenantId,
        wrapperUrl: sim.url,
        redisSentinel: { ...s.options, ...change },
        initTimeoutMs: 2000,
        logger,
      })
      t.teardown(() => c.shutdown())
      const err = await t.throwsAsync(c.initialize(), { code: 'REDIS_UNAVAILABLE' }, what)
      t.false(c.health().ready, what)
      if (what === 'an unknown master name') {
        t.true(err.message.includes('no-such-master'), `${what}: ${err.message}`)
      }
      assertNoSecrets(t, c, {
        logs: lines,
        errors: [err],
        secrets: [password, sentinelPassword, 'sentinel-hunter2-WRONG', 'master-hunter2-WRONG'],
      })
    }),
  )

  // the right passwords work, for the consumer and the publisher
  const c = new SmartCRMConsumer({
    tenantId,
    wrapperUrl: sim.url,
    redisSentinel: s.options,
    initTimeoutMs: 5000,
    logger: captureLogger().logger,
  })
  t.teardown(() => c.shutdown())
  await c.initialize()
  const pub = createPublisher({ tenantId, redisSentinel: s.options })
  t.teardown(() => pub.close())
  t.is(await pub.publish('configs', 'config-changed', { configId: 'via-sentinel', config: 1 }), 1)
  await waitFor(() => c.getActiveConfig('via-sentinel') === 1, { message: 'the event' })

  // a publisher with a wrong password rejects with REDIS_UNAVAILABLE, secret-free
  const bad = createPublisher({
    tenantId,
    redisSentinel: { ...s.options, password: 'master-hunter2-WRONG' },
    connectTimeoutMs: 1500,
  })
  t.teardown(() => bad.close())
  const err = await t.throwsAsync(bad.publish('control', 'resync-required'), {
    code: 'REDIS_UNAVAILABLE',
  })
  t.false(err.message.includes('hunter2'), err.message)
})
