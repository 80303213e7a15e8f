'use strict'
// The JS read replica against the golden batch vector (test-vectors/batch.json),
// which the Rust tests check byte for byte against what the core emits: the
// two sides of the wire format cannot drift apart.

const test = require('ava')

const vector = require('../test-vectors/batch.json')
const { Replica, ABSENT, MAX_ABSENT } = require('../lib/replica.js')

/** A batch's wire form (crates/core/src/delta.rs): empty but for `parts`. */
const batchOf = (parts) =>
  JSON.stringify({
    credits: [],
    creditsDel: [],
    roles: [],
    rolesDel: [],
    usersReset: false,
    users: [],
    usersDel: [],
    configs: [],
    configsDel: [],
    notices: [],
    ...parts,
  })

/** A stand-in for the core's first reads over `table` (id -> value), at the replica's seq. */
function loader(r, table, seqAhead = 0) {
  const calls = []
  const load = (id) => {
    calls.push(id)
    const known = Object.hasOwn(table, id)
    return { known, value: known ? table[id] : null, seq: r.batchesApplied + seqAhead }
  }
  return { load, calls }
}

/**
 * A replica in `state` that has read every key of `state` and every key of
 * `alsoRead` (absent in `state`): the replica holds only what was read, so a
 * batch changes only these keys.
 */
function replicaFrom(state, alsoRead = {}) {
  const r = new Replica()
  const batch = {
    credits: [],
    creditsDel: [],
    roles: [],
    rolesDel: [],
    usersReset: false,
    users: Object.entries(state.users).map(([id, [status, roles]]) => [id, status, roles]),
    usersDel: [],
    configs: [],
    configsDel: [],
    notices: [],
  }
  r.apply(JSON.stringify(batch))
  for (const name of ['credits', 'roles', 'configs']) {
    const { load } = loader(r, state[name])
    const keys = [...Object.keys(state[name]), ...Object.keys(alsoRead[name] ?? {})]
    for (const id of keys) r.read(r[name], id, load)
  }
  return r
}

/** The held values of a table, ABSENT markers left out. */
function values(held) {
  return [...held.map].filter(([, v]) => v !== ABSENT)
}

function stateOf(r) {
  return {
    credits: Object.fromEntries(values(r.credits)),
    roles: Object.fromEntries(values(r.roles).map(([id, role]) => [id, [...role.perms]])),
    users: Object.fromEntries([...r.users].map(([id, u]) => [id, [u.status, [...u.roles]]])),
    configs: Object.fromEntries(values(r.configs)),
  }
}

test('the golden batch takes the replica from its "before" to its "after" state', (t) => {
  // every key the batch names has been read (those it creates read as unknown)
  const r = replicaFrom(vector.replicaBefore, vector.replicaAfter)
  const notices = r.apply(vector.wire)
  const { notices: expectedNotices, ...expected } = vector.replicaAfter
  t.deepEqual(stateOf(r), expected)
  t.deepEqual(notices, expectedNotices)
  t.is(r.batchesApplied, 2)
})

test('a batch leaves keys the replica does not hold alone; the next read asks the core', (t) => {
  const r = new Replica()
  r.apply(vector.wire)
  t.is(r.credits.map.size + r.roles.map.size + r.configs.map.size, 0)
  t.true(r.users.has('u-alice'), 'users in a batch are kept, as before')
  const { load, calls } = loader(r, { 'crm.leads.create': 2.5, 'crm.off': null })
  t.is(r.read(r.credits, 'crm.leads.create', load), 2.5)
  t.is(r.read(r.credits, 'crm.off', load), null, 'inactive: held as null')
  t.is(r.read(r.credits, 'crm.none', load), ABSENT)
  for (const op of ['crm.leads.create', 'crm.off', 'crm.none']) r.read(r.credits, op, load)
  t.deepEqual(calls, ['crm.leads.create', 'crm.off', 'crm.none'], 'one core read per key')
})

test('held keys follow the batches: upserts, deletes, and absent markers replaced', (t) => {
  const r = new Replica()
  const { load } = loader(r, { a: 1 })
  r.read(r.credits, 'a', load)
  r.read(r.credits, 'b', load)
  t.is(r.credits.absent, 1)
  const batch = (credits, creditsDel = []) => batchOf({ credits, creditsDel })
  r.apply(
    batch([
      ['a', 2],
      ['b', null],
      ['c', 3],
    ]),
  )
  t.is(r.credits.map.get('a'), 2)
  t.is(r.credits.map.get('b'), null, 'created inactive: the marker is replaced')
  t.is(r.credits.absent, 0)
  t.false(r.credits.map.has('c'), 'never read: not stored')
  r.apply(batch([], ['a', 'c']))
  t.is(r.credits.map.get('a'), ABSENT, 'a held key deleted is held absent')
  t.is(r.credits.absent, 1)
  t.false(r.credits.map.has('c'))
})

test('a credit, role or config read while a batch is on its way is answered but not kept', (t) => {
  const r = new Replica()
  const { load } = loader(r, { a: 1 }, 1)
  t.is(r.read(r.credits, 'a', load), 1)
  t.is(r.read(r.credits, 'z', load), ABSENT)
  t.is(r.credits.map.size, 0)
})

test(`the absent markers are bounded: ${MAX_ABSENT + 1} unknown keys hold ${MAX_ABSENT}`, (t) => {
  const r = new Replica()
  const { load, calls } = loader(r, {})
  for (let i = 0; i <= MAX_ABSENT; i++) t.is(r.read(r.configs, `k${i}`, load), ABSENT)
  t.is(r.configs.map.size, MAX_ABSENT)
  t.is(r.configs.absent, MAX_ABSENT)
  r.read(r.configs, `k${MAX_ABSENT}`, load)
  t.is(calls.length, MAX_ABSENT + 2, 'a miss beyond the bound asks the core each time')
  r.read(r.configs, 'x'.repeat(257), load)
  t.is(calls.length, MAX_ABSENT + 2, 'a string that cannot be an id does not cross')
})

test('compiled access reads roles lazily; a change to a role not held still recompiles', (t) => {
  const r = new Replica()
  const roles = { sales: ['crm.leads.*'], viewer: ['crm.contacts.read'] }
  const { load, calls } = loader(r, roles)
  const u = r.user('u1', () => ({ status: 'active', roles: ['sales', 'ghost'], seq: 0 }))
  const c = r.access(u, load)
  t.true(c.prefixes.includes('crm.leads.'))
  t.deepEqual(calls, ['sales', 'ghost'])
  t.is(r.roles.map.get('ghost'), ABSENT)
  t.is(r.access(u, load), c, 'memoised')
  // a batch changes a role the replica does not hold: compiled access is rebuilt
  r.apply(batchOf({ roles: [['other', ['x']]] }))
  t.false(r.roles.map.has('other'))
  t.not(r.access(u, load), c)
})

test('a users reset drops every user, also those read lazily from the core', (t) => {
  const r = new Replica()
  const load = () => ({ status: 'active', roles: ['sales'], seq: r.batchesApplied })
  t.is(r.user('u1', load).status, 'active')
  t.true(r.users.has('u1'), 'kept: no batch was on its way')
  r.apply(vector.wire)
  t.false(r.users.has('u1'))
  t.true(r.users.has('u-alice'))
})

test('a user read while a batch is on its way is answered but not kept', (t) => {
  const r = new Replica()
  const load = () => ({ status: 'active', roles: [], seq: r.batchesApplied + 1 })
  t.is(r.user('u1', load).status, 'active')
  t.false(r.users.has('u1'))
})
