'use strict'
// Express middleware (SPEC §5) through real HTTP with supertest: 401, 403,
// 404, 402 and the happy paths, and the /metrics handler.

const test = require('ava')
const express = require('express')
const request = require('supertest')

const { requirePermission, requireCredits, metricsHandler } = require('../lib/express.js')
const { setup } = require('./helpers/fixture.js')

/** An app whose stand-in authentication sets req.user from a test header. */
function appFor(consumer, opts) {
  const app = express()
  app.use((req, res, next) => {
    const id = req.get('x-test-user')
    if (id) req.user = { id }
    next()
  })
  app.get('/leads', requirePermission(consumer, 'crm.leads.create', opts), (req, res) =>
    res.json({ ok: true }),
  )
  app.post('/leads', requireCredits(consumer, 'crm.leads.create', opts), (req, res) =>
    res.json({ cost: req.creditCost }),
  )
  app.post('/ghost', requireCredits(consumer, 'crm.ghost'), (req, res) => res.json({ ok: true }))
  app.post('/old', requireCredits(consumer, 'crm.old'), (req, res) => res.json({ ok: true }))
  app.get('/metrics', metricsHandler(consumer))
  return app
}

const data = {
  credits: [
    { operationCode: 'crm.leads.create', creditCost: 5 },
    { operationCode: 'crm.old', creditCost: 1, isActive: false },
  ],
  roles: [{ roleId: 'sales', permissions: ['crm.leads.*'] }],
  users: [
    { userId: 'alice', status: 'active', roles: ['sales'] },
    { userId: 'bob', status: 'active', roles: [] },
    { userId: 'poor', status: 'active', roles: ['sales'] },
  ],
  configs: [],
  balances: { alice: 100, bob: 100, poor: 1 },
}

test('requirePermission: 401 without a user, 403 when denied, next() when allowed', async (t) => {
  const { consumer } = await setup(t, { sim: { data } })
  const app = appFor(consumer)
  const r401 = await request(app).get('/leads')
  t.is(r401.status, 401)
  const r403 = await request(app).get('/leads').set('x-test-user', 'bob')
  t.is(r403.status, 403)
  t.deepEqual(r403.body, { error: 'Insufficient permissions' })
  const ok = await request(app).get('/leads').set('x-test-user', 'alice')
  t.is(ok.status, 200)
})

test('requirePermission never trusts a bare header: getUserId decides', async (t) => {
  const { consumer } = await setup(t, { sim: { data } })
  const app = express()
  app.get('/leads', requirePermission(consumer, 'crm.leads.create'), (req, res) =>
    res.json({ ok: true }),
  )
  const r = await request(app).get('/leads').set('x-user-id', 'alice').set('user-id', 'alice')
  t.is(r.status, 401)
  const custom = express()
  custom.get(
    '/leads',
    requirePermission(consumer, 'crm.leads.create', { getUserId: (req) => req.query.u }),
    (req, res) => res.json({ ok: true }),
  )
  t.is((await request(custom).get('/leads?u=alice')).status, 200)
})

test('requireCredits: 401, 404 for unknown or inactive, 402, and req.creditCost', async (t) => {
  const { consumer, sim } = await setup(t, { sim: { data } })
  const app = appFor(consumer)
  t.is((await request(app).post('/leads')).status, 401)
  const r404 = await request(app).post('/ghost').set('x-test-user', 'alice')
  t.is(r404.status, 404)
  t.deepEqual(r404.body, { error: 'Operation not configured' })
  t.is((await request(app).post('/old').set('x-test-user', 'alice')).status, 404)
  const r402 = await request(app).post('/leads').set('x-test-user', 'poor')
  t.is(r402.status, 402)
  t.is(r402.body.error, 'Insufficient credits')
  const ok = await request(app).post('/leads').set('x-test-user', 'alice')
  t.is(ok.status, 200)
  t.deepEqual(ok.body, { cost: 5 })
  t.is(sim.data.balances.get('alice'), 100, 'the middleware deducts nothing')
})

test('a numeric req.user.id is taken as its decimal string', async (t) => {
  const { consumer, sim } = await setup(t, {
    sim: {
      data: {
        ...data,
        users: [...data.users, { userId: '42', status: 'active', roles: ['sales'] }],
        balances: { ...data.balances, 42: 100 },
      },
    },
  })
  const app = express()
  app.use((req, res, next) => {
    const id = req.get('x-test-user')
    if (id !== undefined) req.user = { id: JSON.parse(id) }
    next()
  })
  app.get('/leads', requirePermission(consumer, 'crm.leads.create'), (req, res) =>
    res.json({ ok: true }),
  )
  app.post('/leads', requireCredits(consumer, 'crm.leads.create'), (req, res) =>
    res.json({ cost: req.creditCost }),
  )
  t.is((await request(app).get('/leads').set('x-test-user', '42')).status, 200)
  const paid = await request(app).post('/leads').set('x-test-user', '42')
  t.is(paid.status, 200)
  t.deepEqual(paid.body, { cost: 5 })
  t.true(
    sim.requests.some((r) => r.path === '/api/users/42/credits'),
    'asked for user "42"',
  )
  t.is((await request(app).get('/leads').set('x-test-user', '7')).status, 403, 'an unknown user')
  for (const notAnId of ['""', 'null', 'true', '{}', '[42]']) {
    const r = await request(app).get('/leads').set('x-test-user', notAnId)
    t.is(r.status, 401, notAnId)
  }
  for (const notFinite of [NaN, Infinity, -Infinity]) {
    const guarded = express()
    guarded.get(
      '/leads',
      requirePermission(consumer, 'crm.leads.create', { getUserId: () => notFinite }),
      (req, res) => res.json({ ok: true }),
    )
    t.is((await request(guarded).get('/leads')).status, 401, String(notFinite))
  }
})

test('requireCredits passes Wrapper failures to the error handler', async (t) => {
  const { consumer, sim } = await setup(t, { sim: { data } })
  sim.fault('/api/users/alice/credits', { status: 500 })
  const app = appFor(consumer)
  app.use((err, req, res, next) => res.status(503).json({ code: err.code }))
  const r = await request(app).post('/leads').set('x-test-user', 'alice')
  t.is(r.status, 503)
  t.deepEqual(r.body, { code: 'WRAPPER_UNAVAILABLE' })
})

test('metricsHandler serves Prometheus text', async (t) => {
  const { consumer } = await setup(t, { sim: { data } })
  consumer.getCreditCost('crm.leads.create')
  const r = await request(appFor(consumer)).get('/metrics')
  t.is(r.status, 200)
  t.regex(r.headers['content-type'], /^text\/plain/)
  t.regex(r.text, /smart_crm_consumer_critical_hits_total\{tenant="[^"]+"\} 1/)
})

test('middleware factories reject bad arguments at once', (t) => {
  t.throws(() => requirePermission(null, 'x'), { instanceOf: TypeError })
  t.throws(() => requirePermission({ checkPermission() {} }, ''), { instanceOf: TypeError })
  t.throws(() => requireCredits({ checkPermission() {} }, 'x', { getUserId: 5 }), {
    instanceOf: TypeError,
  })
  t.throws(() => metricsHandler({}), { instanceOf: TypeError })
})
