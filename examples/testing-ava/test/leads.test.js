'use strict'
// The leads API tested with ava and the test double: each test gets its own
// double (they run concurrently), no Redis, no Wrapper.

const test = require('ava')
const request = require('supertest')
const { createTestConsumer } = require('smart-crm-consumer/testing')
const { createApp } = require('../app.js')

/** A fresh double and app for `t`, shut down when the test ends. */
async function setup(t, seed = {}) {
  const crm = createTestConsumer({
    tenantId: 'acme',
    credits: { 'crm.leads.create': 2.5 },
    roles: { sales: ['crm.leads.*'], viewer: ['crm.leads.read'] },
    users: {
      ann: { status: 'active', roles: ['sales'] },
      vic: { status: 'active', roles: ['viewer'] },
    },
    configs: { limits: { maxLeadsPerDay: 500 } },
    reference: { 'user:ann': { name: 'Ann' } },
    balances: { ann: 100 },
    ...seed,
  })
  t.teardown(() => crm.shutdown())
  await crm.initialize()
  return { crm, app: createApp(crm) }
}

test('creates a lead and charges its cost once', async (t) => {
  const { crm, app } = await setup(t)
  const res = await request(app)
    .post('/leads')
    .set('x-user-id', 'ann')
    .set('idempotency-key', 'lead-1')
    .send({ name: 'Acme Corp' })
  t.is(res.status, 201)
  t.deepEqual(res.body, { lead: { name: 'Acme Corp', owner: 'Ann' }, remaining: 97.5 })
  t.deepEqual(crm.deductions, [
    {
      userId: 'ann',
      amount: 2.5,
      operationCode: 'crm.leads.create',
      idempotencyKey: 'lead-1',
      remaining: 97.5,
    },
  ])
})

test('the guards answer 401, 403 and 402', async (t) => {
  const { app } = await setup(t, { balances: { ann: 1 } })
  t.is((await request(app).post('/leads')).status, 401)
  t.is((await request(app).post('/leads').set('x-user-id', 'vic')).status, 403)
  const poor = await request(app).post('/leads').set('x-user-id', 'ann')
  t.is(poor.status, 402)
  t.like(poor.body, { error: 'Insufficient credits', available: 1 })
})

test('a role change at the Wrapper reaches the next request', async (t) => {
  const { crm, app } = await setup(t)
  t.is((await request(app).get('/leads/limits').set('x-user-id', 'vic')).status, 200)
  crm.apply('role-changed', { roleId: 'viewer', permissions: [] }, { version: 2 })
  t.is((await request(app).get('/leads/limits').set('x-user-id', 'vic')).status, 403)
  const err = t.throws(
    () => crm.apply('role-changed', { roleId: 'viewer', permissions: ['*'] }, { version: 1 }),
    { instanceOf: RangeError },
  )
  t.is(err.reason, 'stale', 'an older event is refused, as the consumer refuses it')
})

test('a Wrapper outage on the profile read is a 503 and charges nothing', async (t) => {
  const { crm, app } = await setup(t)
  crm.failNext('getUserProfile', 'WRAPPER_UNAVAILABLE')
  const res = await request(app).post('/leads').set('x-user-id', 'ann').send({ name: 'X' })
  t.is(res.status, 503)
  t.deepEqual(crm.deductions, [])
  t.is((await request(app).post('/leads').set('x-user-id', 'ann').send({ name: 'X' })).status, 201)
})
