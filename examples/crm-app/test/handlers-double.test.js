'use strict'
// The app's handlers on the package's test double (smart-crm-consumer/testing,
// SPEC §9): no redis-server, no Wrapper — a tenant pool of in-memory consumers
// (createTestPool), the same middleware and guards. The end-to-end tests
// (api, events, browser, design-003) keep the real stack; these show what a
// team writes for its own routes: each case seeds or changes the data in
// memory and checks the answer, the error path (failNext) included.

const { test, describe } = require('node:test')
const assert = require('node:assert/strict')
const request = require('supertest')
const { createTestPool } = require('smart-crm-consumer/testing')
const { quietLogger } = require('smart-crm-consumer/test-helpers')

const { createApp } = require('../app.js')
const { auth } = require('./helpers.js')

const ALICE = auth('demo-alice') // acme, u-alice
const CAROL = auth('demo-carol') // acme, u-carol
const OTHER = auth('demo-other') // initech: no seed, so the memory Wrapper refuses it

function fixture() {
  const pool = createTestPool({
    logger: quietLogger(),
    tenants: {
      acme: {
        credits: { 'crm.leads.create': 2.5, 'crm.legacy.import': null },
        roles: { sales: ['crm.leads.*', 'crm.contacts.read'] },
        users: {
          'u-alice': { status: 'active', roles: ['sales'] },
          'u-carol': { status: 'active', roles: ['sales'] },
        },
        reference: { 'user:u-alice': { userId: 'u-alice', name: 'Alice Example' } },
        balances: { 'u-alice': 100, 'u-carol': 1 },
      },
    },
  })
  const app = createApp({ pool, logger: quietLogger(), canaryConfigId: 'none' })
  return { pool, app }
}

describe('handlers on the test double', () => {
  test('credit check: the seeded cost, 404 for an inactive operation, an applied change at once', async () => {
    const { pool, app } = fixture()
    const ok = await request(app).get('/api/credits/check/crm.leads.create').set(ALICE)
    assert.equal(ok.status, 200)
    assert.deepEqual(ok.body, { operation: 'crm.leads.create', creditCost: 2.5 })
    const inactive = await request(app).get('/api/credits/check/crm.legacy.import').set(ALICE)
    assert.equal(inactive.status, 404)
    pool.peek('acme').apply('credit-config-changed', {
      operationCode: 'crm.leads.create',
      newValue: 3,
    })
    const changed = await request(app).get('/api/credits/check/crm.leads.create').set(ALICE)
    assert.equal(changed.body.creditCost, 3)
    await pool.shutdown()
  })

  test('a tenant the Wrapper refuses gets 403', async () => {
    const { pool, app } = fixture()
    const res = await request(app).get('/api/credits/check/crm.leads.create').set(OTHER)
    assert.equal(res.status, 403)
    assert.deepEqual(res.body, { error: 'Unknown tenant' })
    await pool.shutdown()
  })

  test('creating a lead deducts the cost; 402 without enough credits', async () => {
    const { pool, app } = fixture()
    const created = await request(app).post('/api/leads').set(ALICE).send({ name: 'Ada' })
    assert.equal(created.status, 201, JSON.stringify(created.body))
    assert.equal(created.body.creditsDeducted, 2.5)
    assert.equal(created.body.remainingCredits, 97.5)
    const acme = pool.peek('acme')
    assert.equal(acme.deductions.length, 1)
    assert.equal(acme.deductions[0].userId, 'u-alice')
    const poor = await request(app).post('/api/leads').set(CAROL).send({ name: 'Bo' })
    assert.equal(poor.status, 402)
    await pool.shutdown()
  })

  test("a profile from the double's memory, and the handler's error path when the Wrapper fails", async () => {
    const { pool, app } = fixture()
    const ok = await request(app).get('/api/users/u-alice/profile').set(ALICE)
    assert.equal(ok.status, 200, JSON.stringify(ok.body))
    assert.equal(JSON.stringify(ok.body).includes('Alice Example'), true)
    pool.peek('acme').invalidate('user:u-alice')
    pool.peek('acme').failNext('getUserProfile', 'WRAPPER_UNAVAILABLE')
    const down = await request(app).get('/api/users/u-alice/profile').set(ALICE)
    assert.equal(down.status, 503)
    await pool.shutdown()
  })
})
