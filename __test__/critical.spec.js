'use strict'
// Critical reads (SPEC §2): the snapshot loaded at start, synchronous reads,
// copies, checkPermission's rules, and hit/miss counting.

const test = require('ava')

const { setup } = require('./helpers/fixture.js')

const roles = [
  { roleId: 'admin', permissions: ['*'] },
  { roleId: 'sales', permissions: ['crm.leads.*', 'crm.contacts.read'] },
  { roleId: 'viewer', permissions: ['crm.contacts.read'] },
  { roleId: 'notes', permissions: ['crm.leads.notes.edit'] },
]
const users = [
  { userId: 'alice', status: 'active', roles: ['sales'] },
  { userId: 'bob', status: 'suspended', roles: ['admin'] },
  { userId: 'root', status: 'active', roles: ['admin'] },
  { userId: 'carol', status: 'Active', roles: ['admin'] },
  { userId: 'dave', status: 'active', roles: ['ghost-role'] },
  { userId: 'erin', status: 'active', roles: [] },
  { userId: 'fay', status: 'active', roles: ['viewer', 'notes'] },
]
const credits = [
  { operationCode: 'crm.leads.create', creditCost: 2.5 },
  { operationCode: 'crm.free', creditCost: 0 },
  { operationCode: 'crm.old', creditCost: 9, isActive: false },
]
const configs = [
  { configId: 'flags', config: { beta: true, limits: [1, 2] } },
  { configId: 'nothing', config: null },
  { configId: 'n', config: 7 },
]
const data = () => ({ credits, roles, users, configs })

test('the snapshot is loaded before initialize() resolves', async (t) => {
  const { consumer } = await setup(t, { sim: { data: data() } })
  t.is(consumer.getCreditCost('crm.leads.create'), 2.5)
  t.deepEqual(consumer.getRolePermissions('sales'), ['crm.leads.*', 'crm.contacts.read'])
  t.deepEqual(consumer.getUserRoles('alice'), ['sales'])
  t.is(consumer.getUserStatus('bob'), 'suspended')
  t.deepEqual(consumer.getActiveConfig('flags'), { beta: true, limits: [1, 2] })
  t.true(consumer.health().ready)
  t.true(consumer.isConnected)
  t.is(typeof consumer.health().lastSyncAt, 'number')
})

test('a paged snapshot is followed to the end', async (t) => {
  const many = Array.from({ length: 250 }, (_, i) => ({
    userId: `u${i}`,
    status: 'active',
    roles: ['viewer'],
  }))
  const { consumer, sim } = await setup(t, {
    sim: { data: { ...data(), users: many }, pageSize: 40 },
  })
  t.is(consumer.getUserStatus('u0'), 'active')
  t.is(consumer.getUserStatus('u249'), 'active')
  t.true(sim.count('/api/users/access') >= 7, 'seven pages of 40 make 250')
  t.true(sim.requests.some((r) => r.path.startsWith('/api/users/access?cursor=')))
})

test('reads are synchronous values; await still works', async (t) => {
  const { consumer } = await setup(t, { sim: { data: data() } })
  const v = consumer.getCreditCost('crm.leads.create')
  t.is(typeof v, 'number')
  t.is(await consumer.getCreditCost('crm.leads.create'), 2.5)
  t.is(typeof consumer.checkPermission('alice', 'crm.leads.create'), 'boolean')
})

test('a cost of 0 is a real cost; unknown and inactive operations are null', async (t) => {
  const { consumer } = await setup(t, { sim: { data: data() } })
  t.is(consumer.getCreditCost('crm.free'), 0)
  t.is(consumer.getCreditCost('crm.old'), null)
  t.is(consumer.getCreditCost('crm.nope'), null)
})

test('a config whose value is null reads as null; primitives are returned as is', async (t) => {
  const { consumer } = await setup(t, { sim: { data: data() } })
  t.is(consumer.getActiveConfig('nothing'), null)
  t.is(consumer.getActiveConfig('n'), 7)
  t.is(consumer.getActiveConfig('missing'), null)
})

test('returned arrays and objects are the caller’s own copies', async (t) => {
  const { consumer } = await setup(t, { sim: { data: data() } })
  const perms = consumer.getRolePermissions('sales')
  perms.push('*')
  perms[0] = 'x'
  t.deepEqual(consumer.getRolePermissions('sales'), ['crm.leads.*', 'crm.contacts.read'])
  const rs = consumer.getUserRoles('alice')
  rs.push('admin')
  t.deepEqual(consumer.getUserRoles('alice'), ['sales'])
  t.false(consumer.checkPermission('alice', 'crm.admin.delete'))
  const cfg = consumer.getActiveConfig('flags')
  cfg.beta = false
  cfg.limits.push(3)
  t.deepEqual(consumer.getActiveConfig('flags'), { beta: true, limits: [1, 2] })
})

const permissionCases = [
  ['alice', 'crm.leads.create', true, 'prefix.* matches a child'],
  ['alice', 'crm.leads.notes.edit', true, 'prefix.* matches a grandchild'],
  ['alice', 'crm.leads', false, 'prefix.* does not match the prefix itself'],
  ['alice', 'crm.leadsX.create', false, 'prefix.* needs the dot'],
  ['alice', 'crm.contacts.read', true, 'exact'],
  ['alice', 'crm.contacts.write', false, 'not granted'],
  ['alice', 'CRM.LEADS.CREATE', false, 'case-sensitive'],
  ['alice', 'crm.contacts.read ', false, 'exact means exact'],
  ['root', 'anything.at.all', true, '* matches everything'],
  ['bob', 'crm.contacts.read', false, 'suspended users are denied even with *'],
  ['carol', 'crm.contacts.read', false, "status must be exactly 'active'"],
  ['dave', 'crm.contacts.read', false, 'unknown roles grant nothing'],
  ['erin', 'crm.contacts.read', false, 'no roles, no permission'],
  ['nobody', 'crm.contacts.read', false, 'unknown users are denied'],
  ['fay', 'crm.leads.notes.edit', true, 'a union over roles'],
  ['fay', 'crm.leads.create', false, 'an exact grant is not a prefix'],
]

test('checkPermission: deny by default, exact, prefix.* and * patterns', async (t) => {
  const { consumer } = await setup(t, { sim: { data: data() } })
  for (const [user, perm, expected, why] of permissionCases) {
    t.is(consumer.checkPermission(user, perm), expected, `${user} ${perm}: ${why}`)
  }
})

test('checkPermission follows role and user changes', async (t) => {
  const { consumer, publish, event, settle } = await setup(t, { sim: { data: data() } })
  t.false(consumer.checkPermission('alice', 'crm.reports.view'))
  await publish('roles', event('role-changed', { roleId: 'sales', permissions: ['crm.reports.*'] }))
  await settle()
  t.true(consumer.checkPermission('alice', 'crm.reports.view'))
  t.false(consumer.checkPermission('alice', 'crm.leads.create'), 'the old permissions are gone')
  await publish('users', event('user-status-changed', { userId: 'alice', status: 'suspended' }))
  await settle()
  t.false(consumer.checkPermission('alice', 'crm.reports.view'))
  t.deepEqual(consumer.getUserRoles('alice'), ['sales'], 'roles kept when the event has none')
  await publish(
    'users',
    event('user-status-changed', { userId: 'alice', status: 'active', roles: ['viewer'] }),
  )
  await settle()
  t.false(consumer.checkPermission('alice', 'crm.reports.view'))
  t.true(consumer.checkPermission('alice', 'crm.contacts.read'))
  await publish('roles', event('role-deleted', { roleId: 'viewer' }))
  await settle()
  t.false(consumer.checkPermission('alice', 'crm.contacts.read'))
})

test('critical hits and misses are counted; rates are never NaN', async (t) => {
  const { consumer } = await setup(t, { sim: { data: data() } })
  const m0 = consumer.getMetrics()
  t.is(m0.criticalHitRate, 0)
  t.is(m0.overallHitRate, 0)
  consumer.getCreditCost('crm.leads.create')
  consumer.getCreditCost('nope')
  consumer.checkPermission('alice', 'crm.leads.create')
  consumer.checkPermission('nobody', 'x')
  consumer.getUserStatus('bob')
  const m = consumer.getMetrics()
  t.is(m.criticalHits, 3)
  t.is(m.criticalMisses, 2)
  t.is(m.criticalHitRate, 3 / 5)
  t.is(m.criticalCacheSize, credits.length + roles.length + users.length + configs.length)
})

test('wrong argument types throw TypeError', async (t) => {
  const { consumer } = await setup(t, { sim: { data: data() } })
  t.throws(() => consumer.getCreditCost(42), { instanceOf: TypeError })
  t.throws(() => consumer.checkPermission('alice', undefined), { instanceOf: TypeError })
  t.throws(() => consumer.checkPermission(null, 'x'), { instanceOf: TypeError })
  t.throws(() => consumer.getRolePermissions({}), { instanceOf: TypeError })
  t.throws(() => consumer.getActiveConfig(), { instanceOf: TypeError })
  t.is(consumer.getCreditCost('x'.repeat(1 << 20)), null, 'a 1 MB id is simply unknown')
  t.throws(() => consumer.getRolePermissions('x'.repeat(1 << 20)), { instanceOf: RangeError })
  t.is(consumer.getCreditCost(''), null)
})
