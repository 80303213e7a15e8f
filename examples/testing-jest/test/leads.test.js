'use strict'
// The leads API tested with jest and the test double: no Redis, no Wrapper,
// nothing to start or stop but the double itself.

const request = require('supertest')
const { createTestConsumer } = require('smart-crm-consumer/testing')
const { createApp } = require('../app.js')

let crm
let app

beforeEach(async () => {
  crm = createTestConsumer({
    tenantId: 'acme',
    credits: { 'crm.leads.create': 2.5 },
    roles: { sales: ['crm.leads.*'], viewer: ['crm.leads.read'] },
    users: {
      ann: { status: 'active', roles: ['sales'] },
      vic: { status: 'active', roles: ['viewer'] },
      pat: { status: 'active', roles: ['sales'] },
    },
    configs: { limits: { maxLeadsPerDay: 500 } },
    reference: { 'user:ann': { name: 'Ann' }, 'user:pat': { name: 'Pat' } },
    balances: { ann: 100, pat: 1 },
  })
  await crm.initialize()
  app = createApp(crm)
})

afterEach(() => crm.shutdown())

test('creates a lead and charges its cost once', async () => {
  const res = await request(app)
    .post('/leads')
    .set('x-user-id', 'ann')
    .set('idempotency-key', 'lead-1')
    .send({ name: 'Acme Corp' })
  expect(res.status).toBe(201)
  expect(res.body).toEqual({ lead: { name: 'Acme Corp', owner: 'Ann' }, remaining: 97.5 })
  expect(crm.deductions).toEqual([
    {
      userId: 'ann',
      amount: 2.5,
      operationCode: 'crm.leads.create',
      idempotencyKey: 'lead-1',
      remaining: 97.5,
    },
  ])
})

test('401 without a user, 403 without the permission', async () => {
  expect((await request(app).post('/leads')).status).toBe(401)
  const res = await request(app).post('/leads').set('x-user-id', 'vic')
  expect(res.status).toBe(403)
  expect(res.body).toEqual({ error: 'Insufficient permissions' })
  expect((await request(app).get('/leads/limits').set('x-user-id', 'vic')).body).toEqual({
    maxLeadsPerDay: 500,
  })
})

test('402 when the balance is short, and nothing is deducted', async () => {
  const res = await request(app).post('/leads').set('x-user-id', 'pat').send({ name: 'X' })
  expect(res.status).toBe(402)
  expect(crm.deductions).toEqual([])
})

test('a price change and a suspension reach the next request', async () => {
  crm.apply('credit-config-changed', { operationCode: 'crm.leads.create', newValue: 10 })
  const res = await request(app).post('/leads').set('x-user-id', 'ann').send({ name: 'X' })
  expect(res.body.remaining).toBe(90)

  crm.apply('user-status-changed', { userId: 'ann', status: 'suspended' })
  expect((await request(app).post('/leads').set('x-user-id', 'ann')).status).toBe(403)
})

test('a Wrapper outage is a 503, and the retry with the same key is charged once', async () => {
  crm.failNext('deductCredits', 'WRAPPER_UNAVAILABLE')
  const send = () =>
    request(app)
      .post('/leads')
      .set('x-user-id', 'ann')
      .set('idempotency-key', 'lead-2')
      .send({ name: 'Acme Corp' })
  const first = await send()
  expect(first.status).toBe(503)
  expect(first.headers['retry-after']).toBe('1')
  expect((await send()).status).toBe(201)
  expect((await send()).status).toBe(201)
  expect(crm.deductions.map((d) => d.idempotencyKey)).toEqual(['lead-2'])
})

test('an unknown profile is a 404', async () => {
  crm.setReference('user:ann', null)
  expect((await request(app).post('/leads').set('x-user-id', 'ann')).status).toBe(404)
})

test('events follow the consumer rules: an older version is refused', () => {
  crm.apply(
    'credit-config-changed',
    { operationCode: 'crm.leads.create', newValue: 3 },
    { version: 2 },
  )
  expect(() =>
    crm.apply(
      'credit-config-changed',
      { operationCode: 'crm.leads.create', newValue: 1 },
      { version: 1 },
    ),
  ).toThrow(expect.objectContaining({ name: 'RangeError', reason: 'stale' }))
  expect(crm.getCreditCost('crm.leads.create')).toBe(3)
})
