'use strict'
// The one id rule (SPEC §3): any id a read method accepts can also be named by
// an event and by a snapshot row, so no cached entry can only be dropped by its
// TTL; an id the read methods refuse is refused by events too. The rule lives in
// crates/core/src/ids.rs: 1-256 bytes of UTF-8, no control characters, not '',
// '.' or '..'. '/', ':', '*' and non-ASCII are ordinary characters (ids travel
// percent-encoded as one path segment).

const test = require('ava')

const { setup } = require('./helpers/fixture.js')

/** Ids the rule accepts that an older rule refused in events. */
const UNUSUAL = ['a/b', 'a:b', 'ü-日本語', 'a*', 'x/../../y', 'a\\b', 'with space', 'é'.repeat(128)]
/** Ids the rule refuses, with why. */
const INVALID = [
  ['', 'empty'],
  ['.', 'dot'],
  ['..', 'dot-dot'],
  ['a\u0000b', 'NUL'],
  ['a\nb', 'newline'],
  ['a\u007fb', 'DEL'],
  ['a\u0085b', 'C1 control'],
  ['x'.repeat(257), '257 bytes'],
  ['é'.repeat(129), '129 characters, 258 bytes'],
]

/** Publishes `msg` on `topic`, waits until it is processed; returns the rejection-count change. */
async function rejectedBy(f, topic, msg) {
  const before = f.consumer.getMetrics().eventsRejected.malformed
  await f.publish(topic, msg)
  await f.settle()
  return f.consumer.getMetrics().eventsRejected.malformed - before
}

test('a profile read with an unusual id is dropped by user-changed, and the next read refetches', async (t) => {
  const f = await setup(t)
  const { sim, consumer, event } = f
  for (const id of UNUSUAL) {
    const label = JSON.stringify(id)
    sim.data.profiles.set(id, { userId: id, v: 1 })
    t.deepEqual(await consumer.getUserProfile(id), { userId: id, v: 1 }, label)
    t.not(consumer.getCacheExpiry(`user:${id}`), null, `${label} is cached`)
    t.is(await rejectedBy(f, 'users', event('user-changed', { userId: id })), 0, label)
    t.is(consumer.getCacheExpiry(`user:${id}`), null, `user-changed dropped ${label}`)
    sim.data.profiles.set(id, { userId: id, v: 2 })
    const requests = sim.requests.length
    t.is((await consumer.getUserProfile(id)).v, 2, `${label} is fetched again`)
    t.is(sim.requests.length, requests + 1, label)
  }
})

test('entries with unusual ids are dropped by cache-invalidate, for every reference type', async (t) => {
  const f = await setup(t)
  const { sim, consumer, event } = f
  const kinds = [
    ['getUserProfile', 'user', 'profiles'],
    ['getHierarchy', 'hierarchy', 'hierarchy'],
    ['getAuditLog', 'audit', 'auditLogs'],
    ['getHistoricalData', 'historical', 'historical'],
  ]
  for (const [method, prefix, collection] of kinds) {
    for (const id of UNUSUAL) {
      const key = `${prefix}:${id}`
      sim.data[collection].set(id, { id, v: 1 })
      t.is((await consumer[method](id)).v, 1, key)
      t.is(await rejectedBy(f, 'cache', event('cache-invalidate', { keys: [key] })), 0, key)
      t.is(consumer.getCacheExpiry(key), null, `cache-invalidate dropped ${key}`)
      sim.data[collection].set(id, { id, v: 2 })
      t.is((await consumer[method](id)).v, 2, `${key} is fetched again`)
    }
  }
})

test('hierarchy-changed drops an entity with an unusual id', async (t) => {
  const f = await setup(t)
  const { sim, consumer, event } = f
  for (const id of UNUSUAL) {
    sim.data.hierarchy.set(id, { entityId: id })
    await consumer.getHierarchy(id)
    t.is(await rejectedBy(f, 'hierarchy', event('hierarchy-changed', { entityId: id })), 0)
    t.is(consumer.getCacheExpiry(`hierarchy:${id}`), null, JSON.stringify(id))
  }
})

test('critical events name unusual ids too, and snapshot rows carry them', async (t) => {
  const f = await setup(t, {
    sim: {
      data: {
        credits: [{ operationCode: 'crm:leads/create', creditCost: 2 }],
        roles: [{ roleId: 'sales/emea', permissions: ['crm.leads.*'] }],
        users: [{ userId: 'u:1', status: 'active', roles: ['sales/emea'] }],
        configs: [{ configId: 'limits/eu', config: { max: 1 } }],
      },
    },
  })
  const { consumer, event } = f
  t.is(consumer.getCreditCost('crm:leads/create'), 2)
  t.true(consumer.checkPermission('u:1', 'crm.leads.create'))
  t.deepEqual(consumer.getActiveConfig('limits/eu'), { max: 1 })
  const events = [
    ['users', event('user-status-changed', { userId: 'u/ü', status: 'active', roles: ['r*'] })],
    ['roles', event('role-changed', { roleId: 'r*', permissions: ['crm.*'] })],
    ['credit-configs', event('credit-config-changed', { operationCode: 'op:x', newValue: 3 })],
    ['configs', event('config-changed', { configId: 'c/1', config: 7 })],
    ['users', event('user-status-changed', { userId: 'u:1', status: 'suspended' })],
  ]
  for (const [topic, msg] of events) t.is(await rejectedBy(f, topic, msg), 0, msg.eventType)
  t.true(consumer.checkPermission('u/ü', 'crm.leads.create'))
  t.deepEqual(consumer.getUserRoles('u/ü'), ['r*'])
  t.is(consumer.getCreditCost('op:x'), 3)
  t.is(consumer.getActiveConfig('c/1'), 7)
  t.is(consumer.getUserStatus('u:1'), 'suspended')
})

test('an id the read methods refuse is refused by events, and requests nothing', async (t) => {
  const f = await setup(t)
  const { sim, consumer, event } = f
  const before = sim.requests.length
  for (const [id, why] of INVALID) {
    for (const m of ['getUserProfile', 'getHierarchy', 'getAuditLog', 'getHistoricalData']) {
      const err = await t.throwsAsync(() => consumer[m](id), { instanceOf: RangeError }, why)
      t.is(err.code, 'ERR_OUT_OF_RANGE', `${m}: ${why}`)
    }
    await t.throwsAsync(() => consumer.getUserCredits(id), { instanceOf: RangeError }, why)
    await t.throwsAsync(
      () => consumer.checkCredits('crm.leads.create', id),
      { instanceOf: RangeError },
      why,
    )
    await t.throwsAsync(() => consumer.deductCredits(id, 1), { instanceOf: RangeError }, why)
    t.is(await rejectedBy(f, 'users', event('user-changed', { userId: id })), 1, why)
    t.is(await rejectedBy(f, 'cache', event('cache-invalidate', { keys: [`user:${id}`] })), 1, why)
    t.is(
      await rejectedBy(f, 'users', event('user-status-changed', { userId: id, status: 'active' })),
      1,
      why,
    )
  }
  t.is(sim.requests.length, before, 'nothing was requested')
})

test('critical reads answer null or false for an id no entity can have', async (t) => {
  const { consumer } = await setup(t)
  for (const [id, why] of INVALID) {
    t.is(consumer.getCreditCost(id), null, why)
    t.is(consumer.getRolePermissions(id), null, why)
    t.is(consumer.getUserRoles(id), null, why)
    t.is(consumer.getUserStatus(id), null, why)
    t.is(consumer.getActiveConfig(id), null, why)
    t.false(consumer.checkPermission(id, 'crm.leads.create'), why)
  }
})
