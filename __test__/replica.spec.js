'use strict'
// The JS read replica against the golden batch vector (test-vectors/batch.json),
// which the Rust tests check byte for byte against what the core emits: the
// two sides of the wire format cannot drift apart.

const test = require('ava')

const vector = require('../test-vectors/batch.json')
const { Replica } = require('../lib/replica.js')

function replicaFrom(state) {
  const r = new Replica()
  const batch = {
    credits: Object.entries(state.credits),
    creditsDel: [],
    roles: Object.entries(state.roles),
    rolesDel: [],
    usersReset: false,
    users: Object.entries(state.users).map(([id, [status, roles]]) => [id, status, roles]),
    usersDel: [],
    configs: Object.entries(state.configs),
    configsDel: [],
    notices: [],
  }
  r.apply(JSON.stringify(batch))
  return r
}

function stateOf(r) {
  return {
    credits: Object.fromEntries(r.credits),
    roles: Object.fromEntries([...r.roles].map(([id, role]) => [id, [...role.perms]])),
    users: Object.fromEntries([...r.users].map(([id, u]) => [id, [u.status, [...u.roles]]])),
    configs: Object.fromEntries(r.configs),
  }
}

test('the golden batch takes the replica from its "before" to its "after" state', (t) => {
  const r = replicaFrom(vector.replicaBefore)
  const notices = r.apply(vector.wire)
  const { notices: expectedNotices, ...expected } = vector.replicaAfter
  t.deepEqual(stateOf(r), expected)
  t.deepEqual(notices, expectedNotices)
  t.is(r.batchesApplied, 2)
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
