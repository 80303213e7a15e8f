'use strict'
// Change events (SPEC §3): every event type's effect, the version and
// tombstone rules, replay by eventId, and each rejection reason — each
// rejected event is counted and leaves the cache unchanged.

const test = require('ava')

const { setup, waitFor } = require('./helpers/fixture.js')

async function applied(f, topic, msg) {
  const before = f.consumer.getMetrics().eventsApplied
  await f.publish(topic, msg)
  await f.settle()
  return f.consumer.getMetrics().eventsApplied - before - 1 // minus the marker
}

test('credit events set, deactivate and delete costs', async (t) => {
  const f = await setup(t)
  const { consumer, event } = f
  t.is(
    await applied(
      f,
      'credit-configs',
      event('credit-config-changed', {
        operationCode: 'crm.leads.create',
        newValue: 3,
        oldValue: 2.5,
        changedFields: ['credit_cost'],
      }),
    ),
    1,
  )
  t.is(consumer.getCreditCost('crm.leads.create'), 3)
  await applied(
    f,
    'credit-configs',
    event('credit-config-changed', { operationCode: 'new.op', newValue: 0 }),
  )
  t.is(consumer.getCreditCost('new.op'), 0)
  await applied(
    f,
    'credit-configs',
    event('credit-config-changed', { operationCode: 'new.op', newValue: 1, isActive: false }),
  )
  t.is(consumer.getCreditCost('new.op'), null)
  await applied(
    f,
    'credit-configs',
    event('credit-config-changed', { operationCode: 'new.op', newValue: 1, isActive: true }),
  )
  t.is(consumer.getCreditCost('new.op'), 1)
  await applied(f, 'credit-configs', event('credit-config-deleted', { operationCode: 'new.op' }))
  t.is(consumer.getCreditCost('new.op'), null)
})

test('role, user and config events', async (t) => {
  const f = await setup(t)
  const { consumer, event } = f
  await applied(
    f,
    'roles',
    event('role-changed', { roleId: 'r9', permissions: ['a.b'], roleName: 'R9' }),
  )
  t.deepEqual(consumer.getRolePermissions('r9'), ['a.b'])
  await applied(f, 'roles', event('role-deleted', { roleId: 'r9' }))
  t.is(consumer.getRolePermissions('r9'), null)
  await applied(
    f,
    'users',
    event('user-status-changed', { userId: 'zed', status: 'active', roles: ['r1'] }),
  )
  t.is(consumer.getUserStatus('zed'), 'active')
  t.deepEqual(consumer.getUserRoles('zed'), ['r1'])
  await applied(f, 'users', event('user-deleted', { userId: 'zed' }))
  t.is(consumer.getUserStatus('zed'), null)
  t.is(consumer.getUserRoles('zed'), null)
  await applied(
    f,
    'configs',
    event('config-changed', { configId: 'c1', config: { a: [1, { b: null }] } }),
  )
  t.deepEqual(consumer.getActiveConfig('c1'), { a: [1, { b: null }] })
  await applied(f, 'configs', event('config-deleted', { configId: 'c1' }))
  t.is(consumer.getActiveConfig('c1'), null)
})

test("'change' events carry the event type and keys", async (t) => {
  const f = await setup(t)
  const seen = []
  f.consumer.on('change', (e) => seen.push(e))
  await applied(
    f,
    'credit-configs',
    f.event('credit-config-changed', { operationCode: 'op1', newValue: 1 }),
  )
  await applied(f, 'users', f.event('user-deleted', { userId: 'u1' }))
  await applied(f, 'hierarchy', f.event('hierarchy-changed', { entityId: 'h1' }))
  await applied(f, 'cache', f.event('cache-invalidate', { keys: ['user:a', 'audit:b'] }))
  const mine = seen.filter((e) => !e.keys.some((k) => k.startsWith('config:marker')))
  t.deepEqual(mine, [
    { eventType: 'credit-config-changed', keys: ['credit:op1'] },
    { eventType: 'user-deleted', keys: ['access:u1', 'user:u1'] },
    { eventType: 'hierarchy-changed', keys: ['hierarchy:h1'] },
    { eventType: 'cache-invalidate', keys: ['user:a', 'audit:b'] },
  ])
})

test('versions: not newer is stale; deletes keep a tombstone', async (t) => {
  const f = await setup(t)
  const { consumer, event } = f
  const set = (v, cost) =>
    event('credit-config-changed', { operationCode: 'v.op', newValue: cost }, { version: v })
  t.is(await applied(f, 'credit-configs', set(5, 1)), 1)
  t.is(await applied(f, 'credit-configs', set(5, 2)), 0)
  t.is(await applied(f, 'credit-configs', set(4, 3)), 0)
  t.is(consumer.getCreditCost('v.op'), 1)
  t.is(consumer.getMetrics().eventsRejected.stale, 2)
  t.is(await applied(f, 'credit-configs', set(6, 4)), 1)
  t.is(consumer.getCreditCost('v.op'), 4)
  await applied(
    f,
    'credit-configs',
    event('credit-config-deleted', { operationCode: 'v.op' }, { version: 8 }),
  )
  t.is(
    await applied(f, 'credit-configs', set(7, 5)),
    0,
    'an older upsert arriving late stays ignored',
  )
  t.is(consumer.getCreditCost('v.op'), null)
  t.is(await applied(f, 'credit-configs', set(9, 6)), 1)
  t.is(consumer.getCreditCost('v.op'), 6)
})

test('versions are per entity and per table', async (t) => {
  const f = await setup(t)
  const { consumer, event } = f
  await applied(
    f,
    'roles',
    event('role-changed', { roleId: 'ra', permissions: ['x'] }, { version: 10 }),
  )
  t.is(
    await applied(
      f,
      'roles',
      event('role-changed', { roleId: 'rb', permissions: ['y'] }, { version: 1 }),
    ),
    1,
  )
  t.is(
    await applied(
      f,
      'users',
      event('user-status-changed', { userId: 'ra', status: 'active' }, { version: 1 }),
    ),
    1,
  )
  t.is(
    await applied(
      f,
      'configs',
      event('config-changed', { configId: 'cfg', config: 1 }, { version: 3 }),
    ),
    1,
  )
  t.is(
    await applied(
      f,
      'configs',
      event('config-changed', { configId: 'cfg', config: 2 }, { version: 2 }),
    ),
    0,
  )
  t.is(consumer.getActiveConfig('cfg'), 1)
})

test('a snapshot version is respected by later events, and a full reload clears tombstones', async (t) => {
  const f = await setup(t, {
    sim: {
      data: {
        credits: [{ operationCode: 'snap.op', creditCost: 1, version: 10 }],
        roles: [],
        users: [],
        configs: [],
      },
    },
  })
  const { consumer, event, sim } = f
  t.is(
    await applied(
      f,
      'credit-configs',
      event('credit-config-changed', { operationCode: 'snap.op', newValue: 2 }, { version: 9 }),
    ),
    0,
  )
  t.is(consumer.getCreditCost('snap.op'), 1)
  await applied(
    f,
    'credit-configs',
    event('credit-config-deleted', { operationCode: 'snap.op' }, { version: 20 }),
  )
  sim.data.credits.set('snap.op', { operationCode: 'snap.op', creditCost: 5, version: 1 })
  const resynced = new Promise((resolve) => consumer.once('resync', resolve))
  await f.publish('control', event('resync-required', {}))
  t.deepEqual(await resynced, { reason: 'resync-required' })
  t.is(consumer.getCreditCost('snap.op'), 5, 'the reload replaced the tombstone')
})

test('an eventId already applied is a replay', async (t) => {
  const f = await setup(t)
  const e = f.event('credit-config-changed', { operationCode: 'r.op', newValue: 1 })
  t.is(await applied(f, 'credit-configs', e), 1)
  await applied(
    f,
    'credit-configs',
    f.event('credit-config-changed', { operationCode: 'r.op', newValue: 2 }),
  )
  t.is(await applied(f, 'credit-configs', e), 0)
  t.is(f.consumer.getCreditCost('r.op'), 2)
  t.is(f.consumer.getMetrics().eventsRejected.replay, 1)
})

test('resync-required reloads critical data and drops reference data', async (t) => {
  const f = await setup(t)
  const { consumer, sim } = f
  await consumer.getUserProfile('u-alice')
  t.not(consumer.getCacheExpiry('user:u-alice'), null)
  sim.data.credits.set('crm.leads.create', { operationCode: 'crm.leads.create', creditCost: 42 })
  const resynced = new Promise((resolve) => consumer.once('resync', resolve))
  await f.publish('control', f.event('resync-required', {}))
  await resynced
  t.is(consumer.getCreditCost('crm.leads.create'), 42)
  t.is(consumer.getCacheExpiry('user:u-alice'), null)
  t.is(consumer.getMetrics().resyncs, 1)
})

test('hierarchy-changed, user-changed and cache-invalidate drop reference entries', async (t) => {
  const f = await setup(t)
  const { consumer, sim, event } = f
  sim.data.hierarchy.set('h1', { entityId: 'h1', parent: null })
  await consumer.getHierarchy('h1')
  await consumer.getUserProfile('u-alice')
  await consumer.getUserProfile('u-bob')
  await applied(f, 'hierarchy', event('hierarchy-changed', { entityId: 'h1' }))
  t.is(consumer.getCacheExpiry('hierarchy:h1'), null)
  await applied(f, 'users', event('user-changed', { userId: 'u-alice', changedFields: ['name'] }))
  t.is(consumer.getCacheExpiry('user:u-alice'), null)
  t.not(consumer.getCacheExpiry('user:u-bob'), null)
  await applied(f, 'cache', event('cache-invalidate', { keys: ['user:u-bob'] }))
  t.is(consumer.getCacheExpiry('user:u-bob'), null)
})

const costEvent = (tenantId, data) => ({
  eventId: `x-${Math.random()}`,
  eventType: 'credit-config-changed',
  tenantId,
  data,
})

const hostile = [
  ['not JSON', 'malformed', () => '{"eventType":'],
  ['invalid UTF-8', 'malformed', () => Buffer.from([0x7b, 0xff, 0xfe, 0x7d])],
  ['a JSON array', 'malformed', () => '[]'],
  [
    'nesting 10,000 deep',
    'malformed',
    (tid) =>
      `{"eventType":"credit-config-changed","tenantId":"${tid}","data":${'['.repeat(10000)}${']'.repeat(10000)}}`,
  ],
  [
    '64 KiB + 1',
    'tooLarge',
    (tid) => {
      const s = JSON.stringify(
        costEvent(tid, { operationCode: 'crm.leads.create', newValue: 1, pad: '' }),
      )
      return s.replace('"pad":""', `"pad":"${'x'.repeat(65537 - s.length)}"`)
    },
  ],
  ['missing eventType', 'malformed', (tid) => ({ tenantId: tid, data: {} })],
  ['missing data', 'malformed', (tid) => ({ eventType: 'credit-config-changed', tenantId: tid })],
  [
    'data not an object',
    'malformed',
    (tid) => ({ eventType: 'credit-config-changed', tenantId: tid, data: 'x' }),
  ],
  ['missing operationCode', 'malformed', (tid) => costEvent(tid, { newValue: 1 })],
  [
    'cost as a string',
    'malformed',
    (tid) => costEvent(tid, { operationCode: 'crm.leads.create', newValue: '1' }),
  ],
  [
    'negative cost',
    'malformed',
    (tid) => costEvent(tid, { operationCode: 'crm.leads.create', newValue: -1 }),
  ],
  [
    '1e309 cost',
    'malformed',
    (tid) =>
      `{"eventType":"credit-config-changed","tenantId":"${tid}","data":{"operationCode":"crm.leads.create","newValue":1e309}}`,
  ],
  [
    'NaN cost',
    'malformed',
    (tid) =>
      `{"eventType":"credit-config-changed","tenantId":"${tid}","data":{"operationCode":"crm.leads.create","newValue":NaN}}`,
  ],
  [
    'Infinity cost',
    'malformed',
    (tid) =>
      `{"eventType":"credit-config-changed","tenantId":"${tid}","data":{"operationCode":"crm.leads.create","newValue":Infinity}}`,
  ],
  [
    'version not an integer',
    'malformed',
    (tid) => ({
      ...costEvent(tid, { operationCode: 'crm.leads.create', newValue: 1 }),
      version: '7',
    }),
  ],
  [
    'id with a control character',
    'malformed',
    (tid) => costEvent(tid, { operationCode: 'crm\u0000x', newValue: 1 }),
  ],
  // the one id rule (SPEC §3): ':', '*' and '/' are ordinary; see ids.spec.js
  ['empty id', 'malformed', (tid) => costEvent(tid, { operationCode: '', newValue: 1 })],
  ['id .', 'malformed', (tid) => costEvent(tid, { operationCode: '.', newValue: 1 })],
  [
    'id of 257 bytes',
    'malformed',
    (tid) => costEvent(tid, { operationCode: 'x'.repeat(257), newValue: 1 }),
  ],
  ['id ..', 'malformed', (tid) => costEvent(tid, { operationCode: '..', newValue: 1 })],
  [
    'permissions not strings',
    'malformed',
    (tid) => ({
      eventType: 'role-changed',
      tenantId: tid,
      data: { roleId: 'r', permissions: [1] },
    }),
    'roles',
  ],
  [
    'wrong tenant',
    'wrongTenant',
    () => costEvent('someone-else', { operationCode: 'crm.leads.create', newValue: 1 }),
  ],
  [
    'wrong topic',
    'wrongTopic',
    (tid) => ({ eventType: 'role-deleted', tenantId: tid, data: { roleId: 'admin' } }),
  ],
  [
    'unknown type',
    'unknownType',
    (tid) => ({ eventType: 'credit-config-exploded', tenantId: tid, data: {} }),
  ],
  [
    'cache-invalidate of a critical key',
    'malformed',
    (tid) => ({
      eventType: 'cache-invalidate',
      tenantId: tid,
      data: { keys: ['credit:crm.leads.create'] },
    }),
    'cache',
  ],
]

for (const [name, reason, make, topic = 'credit-configs'] of hostile) {
  test(`rejected, counted as ${reason}, cache unchanged: ${name}`, async (t) => {
    const f = await setup(t)
    const before = f.consumer.getMetrics()
    const cost = f.consumer.getCreditCost('crm.leads.create')
    t.is(await applied(f, topic, make(f.tenantId)), 0)
    const after = f.consumer.getMetrics()
    t.is(after.eventsRejected[reason], before.eventsRejected[reason] + 1)
    t.is(f.consumer.getCreditCost('crm.leads.create'), cost)
    t.true(f.consumer.checkPermission('u-alice', 'crm.leads.create'))
    t.true(f.consumer.health().connected, 'still healthy')
  })
}

test('__proto__ and constructor keys in config values never pollute a prototype', async (t) => {
  const f = await setup(t)
  const raw = `{"eventType":"config-changed","tenantId":"${f.tenantId}","data":{"configId":"evil","config":{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}}}`
  t.is(await applied(f, 'configs', raw), 1)
  const cfg = f.consumer.getActiveConfig('evil')
  t.is({}.polluted, undefined)
  t.is(Object.prototype.polluted, undefined)
  t.is(Object.getPrototypeOf(cfg), Object.prototype)
  t.deepEqual(Object.keys(cfg).sort(), ['__proto__', 'constructor'])
})

test('a flood of rejected events is logged at most once a second', async (t) => {
  const f = await setup(t)
  for (let i = 0; i < 50; i++) await f.publish('credit-configs', '{bad')
  await f.settle()
  t.is(f.consumer.getMetrics().eventsRejected.malformed, 50)
  t.true(f.logs.filter((l) => l.msg.includes('rejected')).length <= 3)
})

test('events received and lastEventAt are tracked', async (t) => {
  const f = await setup(t)
  t.is(f.consumer.health().lastEventAt, null)
  await f.settle()
  const m = f.consumer.getMetrics()
  t.is(m.eventsReceived, 1)
  t.is(m.eventsApplied, 1)
  await waitFor(() => f.consumer.health().lastEventAt !== null)
  t.true(Math.abs(f.consumer.health().lastEventAt - Date.now()) < 5000)
})

test('refreshIntervalMs reloads critical data periodically', async (t) => {
  const f = await setup(t, { consumer: { refreshIntervalMs: 1000 } })
  const { consumer, sim } = f
  sim.data.credits.set('crm.leads.create', { operationCode: 'crm.leads.create', creditCost: 77 })
  sim.data.users.delete('u-alice')
  const e = await new Promise((resolve) => consumer.once('resync', resolve))
  t.deepEqual(e, { reason: 'refresh' })
  t.is(consumer.getCreditCost('crm.leads.create'), 77)
  t.is(consumer.getUserStatus('u-alice'), null, 'rows gone at the Wrapper disappear')
  t.true(consumer.isConnected)
})

test('signed events: applied when valid; unsigned, tampered, wrong-secret and expired ones rejected', async (t) => {
  const { createPublisher, signMessage } = require('../lib/index.js')
  const f = await setup(t, { consumer: { signingSecret: 'sekret' } })
  const { consumer, event, tenantId } = f
  const pub = createPublisher({ redisUrl: f.redis.url, tenantId, signingSecret: 'sekret' })
  t.teardown(() => pub.close())
  await pub.publish('credit-configs', 'credit-config-changed', {
    operationCode: 'crm.leads.create',
    newValue: 4,
  })
  await waitFor(() => consumer.getCreditCost('crm.leads.create') === 4, {
    message: 'the signed event',
  })
  const signed = (e, secret = 'sekret') => ({ ...e, signature: signMessage(e, secret) })
  const rejections = [
    [
      'badSignature',
      event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 5 }),
    ],
    [
      'badSignature',
      {
        ...signed(
          event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 5 }),
        ),
        data: { operationCode: 'crm.leads.create', newValue: 6 },
      },
    ],
    [
      'badSignature',
      signed(
        event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 5 }),
        'wrong',
      ),
    ],
    [
      'expired',
      signed(
        event(
          'credit-config-changed',
          { operationCode: 'crm.leads.create', newValue: 5 },
          { timestamp: new Date(Date.now() - 6 * 60_000).toISOString() },
        ),
      ),
    ],
    [
      'expired',
      signed(
        event(
          'credit-config-changed',
          { operationCode: 'crm.leads.create', newValue: 5 },
          { timestamp: new Date(Date.now() + 6 * 60_000).toISOString() },
        ),
      ),
    ],
    [
      'malformed',
      signed(
        event(
          'credit-config-changed',
          { operationCode: 'crm.leads.create', newValue: 5 },
          { eventId: undefined },
        ),
      ),
    ],
  ]
  for (const [reason, msg] of rejections) {
    const before = consumer.getMetrics().eventsRejected[reason]
    await f.publish('credit-configs', msg)
    await waitFor(() => consumer.getMetrics().eventsRejected[reason] === before + 1, {
      message: reason,
    })
  }
  t.is(consumer.getCreditCost('crm.leads.create'), 4)
  const ok = signed(
    event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 8 }),
  )
  await f.publish('credit-configs', JSON.stringify(ok))
  await waitFor(() => consumer.getCreditCost('crm.leads.create') === 8, {
    message: 'a hand-signed event',
  })
  await f.publish('credit-configs', ok)
  await waitFor(() => consumer.getMetrics().eventsRejected.replay === 1, { message: 'the replay' })
})

test("per-key 'change:{key}' events: the same payload, only for their key, cheap without listeners", async (t) => {
  const f = await setup(t)
  const { consumer } = f
  const seen = []
  const onCost = (e) => seen.push(e)
  consumer.on('change:credit:crm.leads.create', onCost)
  const other = []
  consumer.on('change:credit:crm.leads.delete', (e) => other.push(e))
  await f.publish(
    'credit-configs',
    f.event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 4 }),
  )
  await f.settle()
  t.deepEqual(seen, [{ eventType: 'credit-config-changed', keys: ['credit:crm.leads.create'] }])
  t.deepEqual(other, [])
  // user-deleted names two keys: each key's listener gets the event once
  const access = []
  consumer.on('change:access:u-alice', (e) => access.push(e.eventType))
  await f.publish('users', f.event('user-deleted', { userId: 'u-alice' }))
  await f.settle()
  t.deepEqual(access, ['user-deleted'])
  // with every listener gone, nothing more is delivered (and the core stops making notices)
  consumer.off('change:credit:crm.leads.create', onCost)
  consumer.removeAllListeners('change:credit:crm.leads.delete')
  consumer.removeAllListeners('change:access:u-alice')
  await f.publish(
    'credit-configs',
    f.event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 5 }),
  )
  await f.settle()
  t.is(seen.length, 1)
  t.is(consumer.getCreditCost('crm.leads.create'), 5)
})
