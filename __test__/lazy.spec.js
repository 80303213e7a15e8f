'use strict'
// The lazy replica (lib/replica.js): the JS replica holds only the credits,
// roles, configs and users that were read, and reads the rest from the core
// on first access. These tests fail if laziness costs correctness: a change
// to a key never read, a change to a key read before, an unknown key read
// (held as absent) and then created, a role changed under a compiled access,
// a full reload that changes values. Real redis-server and Wrapper simulator
// (the consumer), and the test double (the same code path over the other
// native half).

const test = require('ava')

const { setup, nextEvent } = require('./helpers/fixture.js')
const { createTestConsumer } = require('../lib/testing.js')
const { ABSENT, MAX_ABSENT } = require('../lib/replica.js')

/** What the replica holds for `id` in one of its tables (internal, for these tests). */
const held = (consumer, table, id) => consumer._replica[table].map.get(id)

test('nothing but what was read is held after the first load', async (t) => {
  const { consumer } = await setup(t)
  const r = consumer._replica
  t.is(r.credits.map.size + r.roles.map.size + r.configs.map.size + r.users.size, 0)
  t.is(consumer.getCreditCost('crm.leads.create'), 2.5)
  t.is(held(consumer, 'credits', 'crm.leads.create'), 2.5, 'kept: no batch was on its way')
  t.is(r.credits.map.size, 1)
  t.is(consumer.getMetrics().criticalCacheSize, 5 + 3 + 3 + 2, 'sizes come from the core')
})

test('a change to a credit, role or config never read is what the next read sees', async (t) => {
  const f = await setup(t)
  const { consumer, event } = f
  await f.publish(
    'credit-configs',
    event('credit-config-changed', { operationCode: 'crm.reports.generate', newValue: 12 }),
  )
  await f.publish('roles', event('role-changed', { roleId: 'viewer', permissions: ['x.y'] }))
  await f.publish('configs', event('config-changed', { configId: 'limits', config: { max: 1 } }))
  await f.settle()
  t.is(held(consumer, 'credits', 'crm.reports.generate'), undefined, 'not held: never read')
  t.is(held(consumer, 'roles', 'viewer'), undefined)
  t.is(held(consumer, 'configs', 'limits'), undefined)
  t.is(consumer.getCreditCost('crm.reports.generate'), 12)
  t.deepEqual(consumer.getRolePermissions('viewer'), ['x.y'])
  t.deepEqual(consumer.getActiveConfig('limits'), { max: 1 })
  // a user never read whose role was never read either
  t.true(consumer.checkPermission('u-carol', 'x.y'), 'viewer, read from the core')
  t.false(consumer.checkPermission('u-carol', 'crm.contacts.delete'))
})

test('a key read, then changed by an event, reads the new value', async (t) => {
  const f = await setup(t)
  const { consumer, event } = f
  t.is(consumer.getCreditCost('crm.leads.create'), 2.5)
  t.is(consumer.getCreditCost('crm.legacy.import'), null, 'inactive')
  t.deepEqual(consumer.getRolePermissions('sales'), ['crm.leads.*', 'crm.contacts.read'])
  t.deepEqual(consumer.getActiveConfig('feature-flags'), { beta: true })
  t.is(held(consumer, 'credits', 'crm.legacy.import'), null, 'held as inactive, not absent')
  await f.publish(
    'credit-configs',
    event('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 4 }),
  )
  await f.publish(
    'credit-configs',
    event('credit-config-changed', {
      operationCode: 'crm.legacy.import',
      newValue: 6,
      isActive: true,
    }),
  )
  await f.publish('roles', event('role-changed', { roleId: 'sales', permissions: ['a.*'] }))
  await f.publish(
    'configs',
    event('config-changed', { configId: 'feature-flags', config: { beta: false } }),
  )
  await f.settle()
  t.is(consumer.getCreditCost('crm.leads.create'), 4)
  t.is(consumer.getCreditCost('crm.legacy.import'), 6)
  t.deepEqual(consumer.getRolePermissions('sales'), ['a.*'])
  t.deepEqual(consumer.getActiveConfig('feature-flags'), { beta: false })
  // deletes of held keys
  await f.publish(
    'credit-configs',
    event('credit-config-deleted', { operationCode: 'crm.leads.create' }),
  )
  await f.publish('roles', event('role-deleted', { roleId: 'sales' }))
  await f.publish('configs', event('config-deleted', { configId: 'feature-flags' }))
  await f.settle()
  t.is(consumer.getCreditCost('crm.leads.create'), null)
  t.is(consumer.getRolePermissions('sales'), null)
  t.is(consumer.getActiveConfig('feature-flags'), null)
  t.is(held(consumer, 'credits', 'crm.leads.create'), ABSENT)
})

test('an unknown key read is held as absent; an event that creates it is visible', async (t) => {
  const f = await setup(t)
  const { consumer, event } = f
  const m0 = consumer.getMetrics()
  t.is(consumer.getCreditCost('crm.new'), null)
  t.is(consumer.getRolePermissions('new-role'), null)
  t.is(consumer.getActiveConfig('new-config'), null)
  t.is(held(consumer, 'credits', 'crm.new'), ABSENT)
  t.is(held(consumer, 'roles', 'new-role'), ABSENT)
  t.is(held(consumer, 'configs', 'new-config'), ABSENT)
  t.is(consumer.getMetrics().criticalMisses - m0.criticalMisses, 3, 'unknown keys are misses')
  await f.publish(
    'credit-configs',
    event('credit-config-changed', { operationCode: 'crm.new', newValue: 0 }),
  )
  await f.publish('roles', event('role-changed', { roleId: 'new-role', permissions: ['n.r'] }))
  await f.publish('configs', event('config-changed', { configId: 'new-config', config: [1] }))
  await f.settle()
  t.is(consumer.getCreditCost('crm.new'), 0)
  t.deepEqual(consumer.getRolePermissions('new-role'), ['n.r'])
  t.deepEqual(consumer.getActiveConfig('new-config'), [1])
  t.is(consumer._replica.credits.absent, 0, 'the marker was replaced')
})

test('a role changed by an event: a user whose access was compiled answers by the new role', async (t) => {
  const f = await setup(t)
  const { consumer, event } = f
  t.true(consumer.checkPermission('u-alice', 'crm.leads.create'))
  t.false(consumer.checkPermission('u-alice', 'crm.reports.read'))
  await f.publish(
    'roles',
    event('role-changed', { roleId: 'sales', permissions: ['crm.reports.*'] }),
  )
  await f.settle()
  t.false(consumer.checkPermission('u-alice', 'crm.leads.create'))
  t.true(consumer.checkPermission('u-alice', 'crm.reports.read'))
  // a role that did not exist when the access was compiled, and was never held as a value
  await f.publish(
    'users',
    event('user-status-changed', { userId: 'zed', status: 'active', roles: ['ghost'] }),
  )
  await f.settle()
  t.false(consumer.checkPermission('zed', 'g.read'), 'a role that does not exist grants nothing')
  await f.publish('roles', event('role-changed', { roleId: 'ghost', permissions: ['g.read'] }))
  await f.settle()
  t.true(consumer.checkPermission('zed', 'g.read'))
  // a role change for a role the replica never held still invalidates compiled access
  t.true(consumer.checkPermission('u-carol', 'crm.contacts.read'))
  consumer._replica.roles.map.delete('viewer') // as if it had never been read
  await f.publish('roles', event('role-changed', { roleId: 'viewer', permissions: [] }))
  await f.settle()
  t.false(consumer.checkPermission('u-carol', 'crm.contacts.read'))
})

test('a full reload that changes values: reads see the Wrapper data, held or not', async (t) => {
  const f = await setup(t)
  const { consumer, sim } = f
  // held: read before the reload
  t.is(consumer.getCreditCost('crm.leads.create'), 2.5)
  t.is(consumer.getCreditCost('crm.leads.delete'), 1)
  t.is(consumer.getCreditCost('crm.brand.new'), null)
  t.deepEqual(consumer.getRolePermissions('sales'), ['crm.leads.*', 'crm.contacts.read'])
  t.deepEqual(consumer.getActiveConfig('limits'), { maxLeadsPerDay: 500, exportBatch: 1000 })
  t.true(consumer.checkPermission('u-alice', 'crm.leads.create'))
  // the Wrapper's data changes without events
  const credit = (operationCode, creditCost, isActive = true) => ({
    operationCode,
    creditCost,
    isActive,
    version: 2,
  })
  sim.data.credits.set('crm.leads.create', credit('crm.leads.create', 7))
  sim.data.credits.delete('crm.leads.delete')
  sim.data.credits.set('crm.brand.new', credit('crm.brand.new', 3))
  sim.data.credits.set('crm.reports.generate', credit('crm.reports.generate', 11, false))
  sim.data.roles.set('sales', { roleId: 'sales', permissions: ['crm.x.read'], version: 2 })
  sim.data.roles.set('viewer', { roleId: 'viewer', permissions: ['v.read'], version: 2 })
  sim.data.configs.set('limits', { configId: 'limits', config: { maxLeadsPerDay: 1 }, version: 2 })
  sim.data.configs.delete('feature-flags')
  const resynced = nextEvent(consumer, 'resync')
  await f.publish('control', f.event('resync-required', {}))
  await resynced
  t.is(consumer.getCreditCost('crm.leads.create'), 7)
  t.is(consumer.getCreditCost('crm.leads.delete'), null)
  t.is(consumer.getCreditCost('crm.brand.new'), 3)
  t.is(consumer.getCreditCost('crm.reports.generate'), null, 'now inactive, never read')
  t.deepEqual(consumer.getRolePermissions('sales'), ['crm.x.read'])
  t.deepEqual(consumer.getRolePermissions('viewer'), ['v.read'])
  t.deepEqual(consumer.getActiveConfig('limits'), { maxLeadsPerDay: 1 })
  t.is(consumer.getActiveConfig('feature-flags'), null)
  t.false(consumer.checkPermission('u-alice', 'crm.leads.create'))
  t.true(consumer.checkPermission('u-alice', 'crm.x.read'))
  t.true(consumer.checkPermission('u-carol', 'v.read'))
})

// ---- the test double: the same replica over NativeTestConsumer ------------------

function double() {
  return createTestConsumer({
    tenantId: 'acme',
    credits: { 'crm.leads.create': 2.5, 'crm.old': null },
    roles: { sales: ['crm.leads.*'], viewer: ['crm.contacts.read'] },
    users: {
      u1: { status: 'active', roles: ['sales'] },
      u2: { status: 'active', roles: ['ghost'] },
    },
    configs: { limits: { maxLeadsPerDay: 500 } },
  })
}

test('test double: reads are lazy and every change reaches them', async (t) => {
  const crm = double()
  t.is(crm.getCreditCost('crm.leads.create'), null, 'before initialize: nothing')
  t.is(crm.getRolePermissions('sales'), null)
  await crm.initialize()
  t.is(crm.getCreditCost('crm.leads.create'), 2.5, 'the absent marker was replaced by the load')
  t.is(crm.getCreditCost('crm.old'), null)
  const r = crm._replica
  t.is(r.configs.map.size + r.users.size, 0, 'nothing read, nothing held')
  // never read, then changed
  crm.apply('config-changed', { configId: 'limits', config: { maxLeadsPerDay: 1 } })
  t.deepEqual(crm.getActiveConfig('limits'), { maxLeadsPerDay: 1 })
  // read, then changed
  crm.apply('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 3 })
  t.is(crm.getCreditCost('crm.leads.create'), 3)
  // unknown (held absent), then created
  t.is(crm.getCreditCost('crm.new'), null)
  t.is(r.credits.map.get('crm.new'), ABSENT)
  crm.apply('credit-config-changed', { operationCode: 'crm.new', newValue: 1 })
  t.is(crm.getCreditCost('crm.new'), 1)
  // compiled access, then its role changes; a role that does not exist, then created
  t.true(crm.checkPermission('u1', 'crm.leads.create'))
  t.false(crm.checkPermission('u2', 'g.read'))
  crm.apply('role-changed', { roleId: 'sales', permissions: ['crm.other'] })
  crm.apply('role-changed', { roleId: 'ghost', permissions: ['g.read'] })
  t.false(crm.checkPermission('u1', 'crm.leads.create'))
  t.true(crm.checkPermission('u1', 'crm.other'))
  t.true(crm.checkPermission('u2', 'g.read'))
  // a reload (resync-required) keeps held keys right
  crm.apply('credit-config-deleted', { operationCode: 'crm.new' })
  crm.apply('resync-required', {})
  t.is(crm.getCreditCost('crm.new'), null)
  t.is(crm.getCreditCost('crm.leads.create'), 3)
  t.is(crm.getMetrics().criticalCacheSize, 2 + 3 + 2 + 1, 'sizes come from the core')
  await crm.shutdown()
})

test(`test double: ${MAX_ABSENT + 1} distinct unknown codes hold at most ${MAX_ABSENT} markers`, async (t) => {
  const crm = double()
  await crm.initialize()
  const before = crm.getMetrics().criticalMisses
  for (let i = 0; i <= MAX_ABSENT; i++) t.is(crm.getCreditCost(`nope.${i}`), null)
  const held = crm._replica.credits
  t.is(held.absent, MAX_ABSENT)
  t.is(held.map.size, MAX_ABSENT)
  t.false(held.map.has(`nope.${MAX_ABSENT}`), 'beyond the bound: answered, not held')
  t.is(crm.getCreditCost(`nope.${MAX_ABSENT}`), null, 'and answered again')
  t.is(crm.getMetrics().criticalMisses - before, MAX_ABSENT + 2)
  // a key beyond the bound that is created later is read from the core
  crm.apply('credit-config-changed', { operationCode: `nope.${MAX_ABSENT}`, newValue: 2 })
  t.is(crm.getCreditCost(`nope.${MAX_ABSENT}`), 2)
  // a string that cannot be an id is never held
  t.is(crm.getCreditCost('x'.repeat(300)), null)
  t.is(held.map.size, MAX_ABSENT + 1)
  await crm.shutdown()
})
