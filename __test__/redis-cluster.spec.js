'use strict'
// Redis Cluster (SPEC §6): `redisCluster: { nodes }` (any reachable subset).
// The consumer SUBSCRIBEs (classic pub/sub) on one node: Redis Cluster
// broadcasts every PUBLISH to every node, so events reach it whichever node
// the publisher used and whichever slot the channel hashes to. A node that
// fails over or dies is handled like any reconnect: resync, exactly one
// subscription across the cluster, each later event applied once.
//
// Real six-node clusters (tools/test-helpers/topologies.js), node timeout 1 s.
// PUBLISH in a cluster counts the receivers on the node it was sent to only, so
// these tests do not check the publisher's receiver counts.

const test = require('ava')

const { startCluster } = require('../tools/test-helpers/topologies.js')
const { freePort } = require('../tools/test-helpers/index.js')
const { waitFor } = require('./helpers/fixture.js')
const { SmartCRMConsumer } = require('../lib/index.js')
const {
  world,
  traffic,
  connected,
  disconnected,
  assertAppliedOnce,
  channelsOf,
  newTenantId,
} = require('./helpers/topology.js')

async function cluster(t) {
  const c = await startCluster()
  t.teardown(() => c.stop())
  t.log(`six-node cluster up in ${c.setupMs} ms`)
  return c
}

/** Per channel, the subscriptions summed over every running node. */
async function totals(c, channels) {
  const per = await c.subscriptions(channels)
  return channels.map((ch) => per.reduce((sum, { counts }) => sum + Number(counts[ch]), 0))
}

/** The running node(s) holding the tenant's subscription. */
async function subscribedNodes(c, channels) {
  const per = await c.subscriptions(channels)
  return per
    .filter(({ counts }) => channels.some((ch) => Number(counts[ch]) > 0))
    .map((x) => x.server)
}

const exactlyOne = async (c, channels) => (await totals(c, channels)).every((n) => n === 1)

/** Waits until the tenant has exactly one subscription per channel, on one node, and returns that node. */
async function oneSubscription(
  t,
  c,
  channels,
  message = 'exactly one subscription across the cluster',
) {
  await waitFor(() => exactlyOne(c, channels), { timeout: 15_000, interval: 50, message })
  const nodes = await subscribedNodes(c, channels)
  t.is(nodes.length, 1, 'all seven channels on one node')
  return nodes[0]
}

test('tenants whose channels hash to different primaries all get their events, each once, from any subset of seed nodes', async (t) => {
  const c = await cluster(t)
  const primaries = await c.primaries()
  // three tenants whose `configs` channels hash to three different primaries
  const picked = new Map()
  for (let i = 0; picked.size < primaries.length && i < 1000; i++) {
    const tenantId = newTenantId(`ks${i}-`)
    const node = await c.nodeForChannel(`crm:${tenantId}:configs`)
    if (!picked.has(node.port)) picked.set(node.port, tenantId)
  }
  t.is(picked.size, 3, 'found a tenant per primary')
  const tenants = [...picked.values()]
  const deadSeed = `redis://127.0.0.1:${await freePort()}`
  const seedSets = [
    c.nodes, // every node
    [c.nodes[4]], // one node
    [deadSeed, c.nodes[2]], // an unreachable seed first
  ]
  const worlds = await Promise.all(
    tenants.map((tenantId, i) =>
      world(t, {
        tenantId,
        redis: { redisCluster: { nodes: seedSets[i] } },
        publisherRedis: { redisCluster: { nodes: seedSets[(i + 1) % 3] } },
      }),
    ),
  )
  for (const w of worlds) await oneSubscription(t, c, w.channels)
  const loads = worlds.map((w) => traffic(w.pub, w.consumer, { everyMs: 10 }))
  t.teardown(() => Promise.all(loads.map((l) => l.stop())))
  await waitFor(() => loads.every((l) => l.count >= 100), { message: '100 events per tenant' })
  await Promise.all(loads.map((l) => l.stop()))
  await Promise.all(worlds.map((w) => w.marker()))
  worlds.forEach((w, i) => {
    assertAppliedOnce(t, loads[i].sent, w.changes, { checkReceivers: false })
    t.is(w.consumer.getMetrics().eventsRejected.replay, 0)
    t.is(w.consumer.getMetrics().reconnects, 0)
    // nobody sees another tenant's events
    for (const other of loads) {
      if (other !== loads[i]) t.is(w.consumer.getActiveConfig(other.id(1)), null)
    }
  })
  for (const w of worlds) t.true(await exactlyOne(c, w.channels))
})

test('every primary fails over in turn (CLUSTER FAILOVER) under traffic: events keep arriving, each once, one subscription', async (t) => {
  const c = await cluster(t)
  const w = await world(t, { redis: { redisCluster: c.options } })
  const { consumer, sim, channels, changes } = w
  const first = await oneSubscription(t, c, channels)

  const load = traffic(w.pub, consumer)
  t.teardown(() => load.stop())
  await waitFor(() => consumer.getActiveConfig(load.id(20)) === 20, { message: 'traffic flowing' })

  // the shard of the node the consumer is subscribed to first, then the others
  // (when `first` is a replica, failing over its primary promotes `first`)
  const primaries = await c.primaries()
  const order = []
  for (const p of primaries) {
    if (p === first || (await c.replicaOf(p)) === first) order.push(p)
  }
  for (const p of primaries) if (!order.includes(p)) order.push(p)
  t.is(order.length, 3)

  const t0 = Date.now()
  for (const p of order) {
    // a Wrapper change announced while its node fails over
    const cost = 10 + order.indexOf(p)
    sim.data.credits.set('crm.leads.create', {
      operationCode: 'crm.leads.create',
      creditCost: cost,
      isActive: true,
      version: cost,
    })
    const announced = w.pub.publish(
      'credit-configs',
      'credit-config-changed',
      { operationCode: 'crm.leads.create', newValue: cost },
      { version: cost },
    )
    const f = await c.failoverPrimary(p)
    t.log(`CLUSTER FAILOVER :${f.from.port} → :${f.to.port} in ${f.ms} ms`)
    await announced
    await waitFor(() => consumer.getCreditCost('crm.leads.create') === cost, {
      timeout: 15_000,
      message: `the change announced during the failover of :${p.port}`,
    })
  }
  const mark = Date.now() + 2500
  await waitFor(() => consumer.isConnected && Date.now() >= mark + 1500, {
    timeout: 20_000,
    interval: 20,
    message: 'connected, and traffic after the last failover',
  })
  const replays = consumer.getMetrics().eventsRejected.replay
  await load.stop()
  await w.marker()

  assertAppliedOnce(
    t,
    load.sent.filter((e) => e.at >= mark),
    changes,
    { checkReceivers: false },
  )
  t.is(consumer.getMetrics().eventsRejected.replay, replays)
  t.is(load.stats.readErrors, 0)
  await oneSubscription(t, c, channels)
  // a failover may keep the subscription (PUBLISH is broadcast to replicas
  // too) or be a reconnect; a reconnect is always followed by a resync
  const reconnects = w.connections.filter((e) => e.connected && e.at >= t0)
  for (const r of reconnects) {
    t.true(
      w.resyncs.some((e) => e.reason === 'reconnect' && e.at >= t0 && e.at <= r.at),
      `a reconnect at ${r.at} without a resync: ${JSON.stringify(w.resyncs)}`,
    )
  }
  t.log(`${reconnects.length} reconnect(s) over the three failovers`)
  t.like(consumer.health(), { ready: true, connected: true, degraded: false })
})

test('the node the consumer is subscribed to is killed: reconnect to another node, resync, one subscription; and again when it returns', async (t) => {
  const c = await cluster(t)
  // seeds: the primaries, so the subscription is on one and its death is also a failover;
  // the replicas are reached through the other seeds
  const seeds = (await c.primaries()).map((s) => s.url)
  const w = await world(t, { redis: { redisCluster: { nodes: seeds } } })
  const { consumer, sim, channels, changes } = w
  const victim = await oneSubscription(t, c, channels)
  await consumer.getUserProfile('u-alice')

  const load = traffic(w.pub, consumer)
  t.teardown(() => load.stop())
  await waitFor(() => consumer.getActiveConfig(load.id(20)) === 20, { message: 'traffic flowing' })

  const down = disconnected(consumer)
  const up = connected(consumer, 40_000)
  const killedAt = Date.now()
  const k = c.kill(victim)
  await down
  sim.data.users.delete('u-carol')
  sim.data.roles.set('auditor', {
    roleId: 'auditor',
    roleName: 'Auditor',
    permissions: ['crm.audit.read'],
    version: 1,
  })
  const { ms, to } = await k
  t.log(`killed :${victim.port}${to ? `; :${to.port} took over after ${ms} ms` : ' (a replica)'}`)
  await up
  t.log(`consumer connected again ${Date.now() - killedAt} ms after the kill`)
  t.true(w.resyncs.some((e) => e.reason === 'reconnect' && e.at >= killedAt))
  t.is(consumer.getUserStatus('u-carol'), null, 'resynced')
  t.deepEqual(consumer.getRolePermissions('auditor'), ['crm.audit.read'])
  t.is(consumer.getCacheExpiry('user:u-alice'), null, 'reference data dropped')
  const now = await oneSubscription(t, c, channels, 'one subscription on a surviving node')
  t.not(now, victim)

  const mark = Date.now() + 2000
  await waitFor(() => Date.now() >= mark + 1500, { interval: 20, timeout: 10_000 })
  const replays = consumer.getMetrics().eventsRejected.replay
  const connectionsAtMark = w.connections.length

  // the killed node comes back (as a replica): no second subscription
  await victim.restart()
  await c.waitStable()
  await waitFor(() => Date.now() >= mark + 3000, { interval: 20, timeout: 10_000 })
  await load.stop()
  await w.marker()
  assertAppliedOnce(
    t,
    load.sent.filter((e) => e.at >= mark),
    changes,
    { checkReceivers: false },
  )
  t.is(consumer.getMetrics().eventsRejected.replay, replays)
  t.is(w.connections.length, connectionsAtMark, 'the node returning is not a reconnect')
  t.is(load.stats.readErrors, 0)
  t.true(await exactlyOne(c, channels), 'still exactly one subscription with every node back')
  t.true(consumer.getMetrics().reconnects >= 1)
})

test('seeds that are all gone: the consumer reconnects through nodes it learned from the cluster', async (t) => {
  const c = await cluster(t)
  const primaries = await c.primaries()
  // seeds: two primaries of different shards; their replicas take over when both die
  const seeds = primaries.slice(0, 2)
  const w = await world(t, { redis: { redisCluster: { nodes: seeds.map((s) => s.url) } } })
  const { consumer, sim, channels } = w
  const victim = await oneSubscription(t, c, channels)
  t.true(seeds.includes(victim))
  // the publisher connects (and learns the cluster's nodes) before the seeds go
  await w.marker()

  await c.kill(seeds.find((s) => s !== victim))
  await w.marker()
  t.is(consumer.getMetrics().reconnects, 0, 'the death of a seed it is not on is not a reconnect')
  const down = disconnected(consumer)
  const up = connected(consumer, 40_000)
  const k = c.kill(victim)
  await down
  // changed at the Wrapper without an event: only the resync can bring it
  sim.data.users.delete('u-carol')
  await k
  await up
  t.is(consumer.getUserStatus('u-carol'), null, 'resynced')
  const now = await oneSubscription(t, c, channels)
  t.false(seeds.includes(now))
  await w.marker()
})

test('the publisher through redisCluster moves to another seed when its node dies', async (t) => {
  const c = await cluster(t)
  const tenantId = newTenantId()
  const w = await world(t, { tenantId, redis: { redisCluster: c.options } })
  const subscribedOn = await oneSubscription(t, c, channelsOf(tenantId))
  // the consumer's shard partner survives; the two other primaries die
  const partner = (await c.replicaOf(subscribedOn)) || (await c.primaryOf(subscribedOn))
  const others = []
  for (const p of await c.primaries()) {
    if (p !== subscribedOn && (await c.replicaOf(p)) !== subscribedOn) others.push(p)
  }
  t.is(others.length, 2)
  const { createPublisher } = require('../lib/index.js')
  const pub = createPublisher({
    tenantId,
    redisCluster: { nodes: [...others, partner].map((s) => s.url) },
    connectTimeoutMs: 10_000,
  })
  t.teardown(() => pub.close())
  const send = async (name) => {
    await pub.publish('configs', 'config-changed', { configId: name, config: 7 })
    await waitFor(() => w.consumer.getActiveConfig(name) === 7, { message: name })
  }
  for (let i = 0; i < 5; i++) await send(`before-${i}`)
  for (const node of others) {
    const k = await c.kill(node)
    t.log(`killed seed :${node.port}; :${k.to.port} took over after ${k.ms} ms`)
    for (let i = 0; i < 5; i++) await send(`after-kill-${node.port}-${i}`)
  }
  t.is(w.consumer.getMetrics().reconnects, 0, 'the consumer was not affected')
})

test('stream transport: a tenant whose slot lives on another node than the seed loads, shares its snapshot and catches up there', async (t) => {
  const c = await cluster(t)
  const [seed] = await c.primaries()
  // a tenant whose stream keys (one `{tenant}` hash tag) live on another primary than the only seed
  let tenantId = null
  let owner = null
  for (let i = 0; i < 1000 && !tenantId; i++) {
    const id = newTenantId(`st${i}-`)
    const node = await c.nodeForSlot(c.keyslot(`crm:{${id}}:stream`))
    if (node !== seed) [tenantId, owner] = [id, node]
  }
  t.truthy(tenantId, 'found a tenant on another primary')
  const redis = { redisCluster: { nodes: [seed.url] } }
  const w = await world(t, { tenantId, redis, consumer: { transport: 'stream' } })
  t.is(w.consumer.health().source, 'wrapper')
  t.is(w.consumer.getMetrics().snapshotLoads.wrapper, 1)
  await w.marker('before')
  t.true(Number(await c.command(owner, ['XLEN', `crm:{${tenantId}}:stream`])) >= 1)
  await waitFor(
    async () => Number(await c.command(owner, ['EXISTS', `crm:{${tenantId}}:snapshot`])) === 1,
    {
      message: 'the shared snapshot on the owner of the slot',
    },
  )

  // a second instance starts from that snapshot, not from the Wrapper
  const second = new SmartCRMConsumer({
    tenantId,
    wrapperUrl: w.sim.url,
    transport: 'stream',
    heartbeatMs: 500,
    initTimeoutMs: 10_000,
    ...redis,
  })
  t.teardown(() => second.shutdown())
  await second.initialize()
  t.is(second.health().source, 'snapshot')
  t.is(second.getMetrics().snapshotLoads.wrapper, 0)
  t.is(second.getActiveConfig('before'), true)

  // its links cut: it catches up from the stream on the owner, no Wrapper load
  const listsBefore = w.sim.count((r) => r.path.startsWith('/api/roles'))
  const lost = disconnected(second)
  await c.command(owner, ['CLIENT', 'KILL', 'TYPE', 'normal'])
  for (const node of c.servers) await c.command(node, ['CLIENT', 'KILL', 'TYPE', 'pubsub'])
  await lost
  await w.marker('after')
  await waitFor(() => second.isConnected && second.getActiveConfig('after') === true, {
    message: 'the second instance caught up',
  })
  t.true(second.getMetrics().resumes >= 1, 'resumed from the stream')
  t.is(
    w.sim.count((r) => r.path.startsWith('/api/roles')),
    listsBefore,
    'no Wrapper list request',
  )
})
