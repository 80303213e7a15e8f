'use strict'
// Every endpoint of the app over real HTTP (supertest), against the real
// stack: a private redis-server, the multi-tenant Wrapper simulator process, a
// tenant pool from the installed tarball. The 401, 403, 402 and 404 paths
// included, and the pool: tenants isolated, a tenant the Wrapper refuses,
// tenants loaded on first use, the pool view.

const { test, before, after, describe } = require('node:test')
const assert = require('node:assert/strict')
const request = require('supertest')
const { createTenantPool } = require('smart-crm-consumer')
const { quietLogger } = require('smart-crm-consumer/test-helpers')

const { createApp, leadIdempotencyKey } = require('../app.js')
const { startApp, auth, waitFor } = require('./helpers.js')

let s // the running stack + app
let app
const ALICE = auth('demo-alice') // acme, sales, 100 credits
const BOB = auth('demo-bob') // acme, suspended admin
const CAROL = auth('demo-carol') // acme, sales, 1 credit
const DANA = auth('demo-dana') // acme, manager (crm.*), 1000 credits
const ERIN = auth('demo-erin') // acme, viewer
const GLOBEX = auth('demo-globex-alice') // globex, sales, 40 credits
const GUS = auth('demo-globex-gus') // globex, manager
const OTHER = auth('demo-other') // a tenant the Wrapper refuses

before(async () => {
  s = await startApp()
  app = s.app
})
after(() => s.stop())

const get = (path, headers = {}) => request(app).get(path).set(headers)
const post = (path, headers, body) => request(app).post(path).set(headers).send(body)
const balance = async (tenant, userId) => (await s.wrapper(tenant).state()).data.balances[userId]

/** Sets an operation's active flag at the Wrapper and waits until the consumer agrees. */
async function setActive(op, isActive) {
  await s.wrapper('acme').setCreditConfig(op, { isActive })
  await waitFor(() => (s.consumer('acme').getCreditCost(op) === null) === !isActive, {
    message: `${op} active=${isActive}`,
  })
}

const API_ROUTES = [
  ['get', '/api/credits/check/crm.leads.create'],
  ['get', '/api/credits/validate?operation=crm.leads.create'],
  ['get', '/api/users/u-alice'],
  ['get', '/api/users/u-alice/profile'],
  ['get', '/api/permissions/check?permission=crm.leads.create'],
  ['post', '/api/leads'],
  ['post', '/api/operations/lead-create'],
  ['get', '/api/test-credit-check'],
  ['get', '/api/events'],
  ['get', '/api/dashboard'],
]

describe('authentication and tenant', () => {
  test('401 on every API route without a user, or with an unknown token', async () => {
    for (const [method, path] of API_ROUTES) {
      for (const headers of [{}, auth('not-a-token'), { 'X-User-Id': 'u-alice' }]) {
        const res = await request(app)[method](path).set(headers).send({ name: 'x' })
        assert.equal(res.status, 401, `${method} ${path}`)
        assert.deepEqual(res.body, { error: 'Authentication required' })
      }
    }
  })

  test('403 for a tenant the Wrapper refuses, and for a suspended user', async () => {
    for (const [method, path] of API_ROUTES) {
      const r1 = await request(app)[method](path).set(OTHER).send({ name: 'x' })
      assert.equal(r1.status, 403, `${method} ${path}`)
      assert.deepEqual(r1.body, { error: 'Unknown tenant' })
      const r2 = await request(app)[method](path).set(BOB).send({ name: 'x' })
      assert.equal(r2.status, 403, `${method} ${path}`)
      assert.equal(r2.body.error, 'Account not active')
    }
  })

  test('the session cookie of the demo login works like the bearer token', async () => {
    const login = await get('/auth/demo-login?token=demo-alice&next=/cost')
    assert.equal(login.status, 302)
    assert.equal(login.headers.location, '/cost')
    const cookie = login.headers['set-cookie'][0].split(';')[0]
    assert.match(login.headers['set-cookie'][0], /HttpOnly/)
    const res = await get('/api/credits/check/crm.leads.create', { Cookie: cookie })
    assert.equal(res.status, 200)
    assert.equal((await get('/auth/demo-login?token=nope')).status, 401)
    const offsite = await get('/auth/demo-login?token=demo-alice&next=//evil.example')
    assert.equal(offsite.headers.location, '/')
  })

  test('unknown API paths answer 404 JSON', async () => {
    const res = await get('/api/nothing-here', ALICE)
    assert.equal(res.status, 404)
    assert.deepEqual(res.body, { error: 'No such endpoint' })
  })
})

describe('GET /api/credits/check/:operation', () => {
  test('200 with the cost from memory', async () => {
    const res = await get('/api/credits/check/crm.leads.create', ALICE)
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, { operation: 'crm.leads.create', creditCost: 2.5 })
  })

  test('a cost of 0 is a cost, not "not configured"', async () => {
    const res = await get('/api/credits/check/crm.contacts.export', ALICE)
    assert.equal(res.status, 200)
    assert.equal(res.body.creditCost, 0)
  })

  test('404 for an unknown and for an inactive operation', async () => {
    for (const op of ['crm.nothing', 'crm.legacy.import']) {
      const res = await get(`/api/credits/check/${op}`, ALICE)
      assert.equal(res.status, 404)
      assert.deepEqual(res.body, { error: 'Operation not configured', operation: op })
    }
  })

  test('each tenant sees its own Wrapper', async () => {
    await s.wrapper('globex').setCreditCost('crm.reports.generate', 12)
    await waitFor(() => s.consumer('globex').getCreditCost('crm.reports.generate') === 12)
    const acme = await get('/api/credits/check/crm.reports.generate', ALICE)
    const globex = await get('/api/credits/check/crm.reports.generate', GLOBEX)
    assert.equal(acme.body.creditCost, 10)
    assert.equal(globex.body.creditCost, 12)
  })
})

describe('GET /api/credits/validate', () => {
  test('200 for the caller: cost from memory, balance from the Wrapper', async () => {
    const res = await get('/api/credits/validate?operation=crm.reports.generate', DANA)
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, {
      operation: 'crm.reports.generate',
      userId: 'u-dana',
      creditCost: 10,
      availableCredits: await balance('acme', 'u-dana'),
      canAfford: true,
    })
  })

  test('200 for another user with crm.credits.read; canAfford false when short', async () => {
    const res = await get('/api/credits/validate?operation=crm.leads.create&userId=u-carol', DANA)
    assert.equal(res.status, 200)
    assert.equal(res.body.availableCredits, 1)
    assert.equal(res.body.canAfford, false)
  })

  test('400 without operation', async () => {
    const res = await get('/api/credits/validate', ALICE)
    assert.equal(res.status, 400)
  })

  test('403 for another user without crm.credits.read', async () => {
    const res = await get('/api/credits/validate?operation=crm.leads.create&userId=u-dana', ALICE)
    assert.equal(res.status, 403)
    assert.deepEqual(res.body, { error: 'Insufficient permissions' })
  })

  test('404 for an unknown operation, and for a user the Wrapper does not know', async () => {
    const r1 = await get('/api/credits/validate?operation=crm.nothing', ALICE)
    assert.equal(r1.status, 404)
    assert.equal(r1.body.error, 'Operation not configured')
    const r2 = await get('/api/credits/validate?operation=crm.leads.create&userId=u-nobody', DANA)
    assert.equal(r2.status, 404)
    assert.equal(r2.body.code, 'NOT_FOUND')
  })

  test('503 when the Wrapper keeps failing', async () => {
    const w = s.wrapper('acme')
    await w.admin('POST', '/faults', { match: '/api/users/u-erin/credits', status: 500 })
    try {
      const res = await get('/api/credits/validate?operation=crm.leads.create', ERIN)
      assert.equal(res.status, 503)
      assert.deepEqual(res.body, { error: 'CRM backend unavailable', code: 'WRAPPER_UNAVAILABLE' })
    } finally {
      await w.admin('DELETE', '/faults')
    }
  })
})

describe('GET /api/users/:userId and /api/users/:userId/profile', () => {
  test('200: the caller reads their own profile', async () => {
    const res = await get('/api/users/u-alice', ALICE)
    assert.equal(res.status, 200)
    assert.equal(res.body.userId, 'u-alice')
    assert.equal(res.body.name, 'Alice Example')
  })

  test('200: /profile adds access from memory and the cache expiry', async () => {
    const before = Date.now()
    const res = await get('/api/users/u-alice/profile', ALICE)
    assert.equal(res.status, 200)
    assert.equal(res.body.name, 'Alice Example')
    assert.deepEqual(res.body.access, { status: 'active', roles: ['sales'] })
    assert.ok(res.body.cacheExpiry > before + 4 * 60_000, 'a 5 min TTL')
  })

  test('a profile change at the Wrapper is served at once (the event invalidates)', async () => {
    await get('/api/users/u-carol', CAROL) // cached now
    const w = s.wrapper('acme')
    await w.admin('PATCH', '/users/u-carol/profile', { title: 'Senior Analyst' })
    await waitFor(() => s.consumer('acme').getCacheExpiry('user:u-carol') === null, {
      message: 'user:u-carol invalidated',
    })
    const res = await get('/api/users/u-carol', CAROL)
    assert.equal(res.body.title, 'Senior Analyst')
  })

  test('200 for another user with crm.users.read', async () => {
    for (const path of ['/api/users/u-alice', '/api/users/u-alice/profile']) {
      const res = await get(path, DANA)
      assert.equal(res.status, 200, path)
      assert.equal(res.body.userId, 'u-alice')
    }
  })

  test('403 for another user without crm.users.read', async () => {
    for (const path of ['/api/users/u-dana', '/api/users/u-dana/profile']) {
      const res = await get(path, ALICE)
      assert.equal(res.status, 403, path)
      assert.deepEqual(res.body, { error: 'Insufficient permissions' })
    }
  })

  test('404 for a user the Wrapper does not know', async () => {
    for (const path of ['/api/users/u-nobody', '/api/users/u-nobody/profile']) {
      const res = await get(path, DANA)
      assert.equal(res.status, 404, path)
      assert.deepEqual(res.body, { error: 'User not found', userId: 'u-nobody' })
    }
  })

  test('400 for an id that cannot be one path segment', async () => {
    const res = await get('/api/users/%2E%2E', DANA)
    assert.equal(res.status, 400)
  })
})

describe('GET /api/permissions/check', () => {
  test('200 with the answer for the caller: exact, prefix.* and denied', async () => {
    const cases = [
      ['crm.leads.create', true],
      ['crm.leads.notes.edit', true],
      ['crm.leads', false],
      ['crm.users.read', false],
    ]
    for (const [permission, authorized] of cases) {
      const res = await get(`/api/permissions/check?permission=${permission}`, ALICE)
      assert.equal(res.status, 200)
      assert.deepEqual(res.body, { userId: 'u-alice', permission, authorized })
    }
  })

  test('200 about another user with crm.users.read; a suspended user is denied', async () => {
    const res = await get('/api/permissions/check?userId=u-bob&permission=crm.leads.create', DANA)
    assert.equal(res.status, 200)
    assert.equal(res.body.authorized, false)
  })

  test('a role change at the Wrapper applies to the next check', async () => {
    const path = '/api/permissions/check?permission=crm.contacts.export'
    assert.equal((await get(path, ERIN)).body.authorized, false)
    await s.wrapper('acme').admin('PUT', '/roles/viewer', {
      permissions: ['crm.contacts.read', 'crm.contacts.export'],
    })
    await waitFor(() => s.consumer('acme').checkPermission('u-erin', 'crm.contacts.export'))
    assert.equal((await get(path, ERIN)).body.authorized, true)
  })

  test('400 without permission; 403 about another user without crm.users.read', async () => {
    assert.equal((await get('/api/permissions/check', ALICE)).status, 400)
    const res = await get('/api/permissions/check?userId=u-dana&permission=x', ALICE)
    assert.equal(res.status, 403)
  })
})

describe('POST /api/leads', () => {
  test('201: checks, reads the profile, creates the lead, deducts once with a derived key', async () => {
    const start = await balance('acme', 'u-alice')
    const body = { name: 'Initech', company: 'Initech Inc.', email: 'bill@initech.example' }
    const res = await post('/api/leads', ALICE, body)
    assert.equal(res.status, 201)
    assert.equal(res.body.lead.name, 'Initech')
    assert.deepEqual(res.body.lead.owner, {
      id: 'u-alice',
      name: 'Alice Example',
      department: 'Sales',
    })
    assert.equal(res.body.creditsDeducted, 2.5)
    assert.equal(res.body.remainingCredits, start - 2.5)
    assert.equal(await balance('acme', 'u-alice'), start - 2.5)

    const key = leadIdempotencyKey({
      get: () => undefined,
      body,
      user: { id: 'u-alice', tenantId: 'acme' },
      baseUrl: '/api',
      path: '/leads',
    })
    const { deductions } = await s.wrapper('acme').admin('GET', '/log')
    const last = deductions[deductions.length - 1]
    assert.equal(last.userId, 'u-alice')
    assert.deepEqual(last.body, {
      amount: 2.5,
      operationCode: 'crm.leads.create',
      idempotencyKey: key,
    })
  })

  test('a repeated request is not charged again and returns the same lead', async () => {
    const body = { name: 'Duplicate Co' }
    const first = await post('/api/leads', ALICE, body)
    const after1 = await balance('acme', 'u-alice')
    const again = await post('/api/leads', ALICE, body)
    assert.equal(again.status, 201)
    assert.equal(again.headers['idempotent-replayed'], 'true')
    assert.equal(again.body.lead.id, first.body.lead.id)
    assert.equal(await balance('acme', 'u-alice'), after1)

    // Another app instance (a restart, a second replica) derives the same key:
    // the Wrapper answers the first deduction again and charges nothing.
    const other = createApp({ pool: s.pool })
    try {
      const res = await request(other).post('/api/leads').set(ALICE).send(body)
      assert.equal(res.status, 201)
      assert.equal(res.body.lead.id, first.body.lead.id)
      assert.equal(await balance('acme', 'u-alice'), after1)
      const { deductions } = await s.wrapper('acme').admin('GET', '/log')
      assert.equal(deductions[deductions.length - 1].replay, true)
    } finally {
      other.locals.crm.shutdown()
    }
  })

  test('concurrent duplicates make one deduction; an Idempotency-Key makes a new lead', async () => {
    const start = await balance('acme', 'u-alice')
    const body = { name: 'Double Click Ltd' }
    const results = await Promise.all(
      Array.from({ length: 5 }, () => post('/api/leads', ALICE, body)),
    )
    assert.deepEqual(
      results.map((r) => r.status),
      [201, 201, 201, 201, 201],
    )
    assert.equal(new Set(results.map((r) => r.body.lead.id)).size, 1)
    assert.equal(await balance('acme', 'u-alice'), start - 2.5)
    const keyed = await post('/api/leads', { ...ALICE, 'Idempotency-Key': 'k-2' }, body)
    assert.equal(keyed.status, 201)
    assert.notEqual(keyed.body.lead.id, results[0].body.lead.id)
    assert.equal(await balance('acme', 'u-alice'), start - 5)
  })

  test("accepts the design's { leadData } body; 400 for a body that is not a lead", async () => {
    const ok = await post('/api/leads', ALICE, { leadData: { name: 'Design shape' } })
    assert.equal(ok.status, 201)
    for (const bad of [{}, { name: '' }, { name: 42 }, { name: 'x', email: 7 }, [1]]) {
      const res = await post('/api/leads', ALICE, bad)
      assert.equal(res.status, 400, JSON.stringify(bad))
    }
    const res = await request(app)
      .post('/api/leads')
      .set(ALICE)
      .set('Content-Type', 'application/json')
      .send('{"name":')
    assert.equal(res.status, 400)
  })

  test('403 without crm.leads.create (the package middleware)', async () => {
    const res = await post('/api/leads', ERIN, { name: 'x' })
    assert.equal(res.status, 403)
    assert.deepEqual(res.body, { error: 'Insufficient permissions' })
  })

  test('402 when the balance is short; nothing is deducted', async () => {
    const res = await post('/api/leads', CAROL, { name: 'Too expensive' })
    assert.equal(res.status, 402)
    assert.equal(res.body.error, 'Insufficient credits')
    assert.equal(res.body.required, 2.5)
    assert.equal(await balance('acme', 'u-carol'), 1)
  })

  test('402 when the Wrapper refuses the deduction after the check passed', async () => {
    // The check sees 10 credits; a Wrapper fault then answers the deduction 402.
    const w = s.wrapper('acme')
    await w.admin('POST', '/faults', {
      match: '/api/users/u-dana/credits/deduct',
      status: 402,
      times: 1,
    })
    const res = await post('/api/leads', DANA, { name: 'Race' })
    assert.equal(res.status, 402)
    assert.deepEqual(res.body, { error: 'Insufficient credits', code: 'INSUFFICIENT_CREDITS' })
  })
})

describe('POST /api/operations/lead-create', () => {
  test("200 with the design's answer", async () => {
    const start = await balance('acme', 'u-dana')
    const res = await post('/api/operations/lead-create', DANA, { leadData: { name: 'Op lead' } })
    assert.equal(res.status, 200)
    assert.equal(res.body.success, true)
    assert.equal(res.body.operation, 'lead-create')
    assert.match(res.body.leadId, /^lead-[0-9a-f]{16}$/)
    assert.equal(res.body.creditsDeducted, 2.5)
    assert.equal(await balance('acme', 'u-dana'), start - 2.5)
  })

  test('403, 402', async () => {
    assert.equal((await post('/api/operations/lead-create', ERIN, { name: 'x' })).status, 403)
    assert.equal((await post('/api/operations/lead-create', CAROL, { name: 'x' })).status, 402)
  })
})

describe('GET /api/test-credit-check', () => {
  test('200: cost, balance, profile, permission and metrics for the caller', async () => {
    const res = await get('/api/test-credit-check', ALICE)
    assert.equal(res.status, 200)
    assert.equal(res.body.operation, 'crm.leads.create')
    assert.equal(res.body.userId, 'u-alice')
    assert.equal(res.body.cost, 2.5)
    assert.equal(res.body.canAfford, true)
    assert.equal(res.body.profile.name, 'Alice Example')
    assert.equal(res.body.hasPermission, true)
    assert.equal(typeof res.body.metrics.criticalHitRate, 'number')
  })

  test('canAfford false and hasPermission false where they are', async () => {
    const carol = await get('/api/test-credit-check', CAROL)
    assert.equal(carol.body.canAfford, false)
    const erin = await get('/api/test-credit-check', ERIN)
    assert.equal(erin.body.hasPermission, false)
  })
})

describe('an operation switched off at the Wrapper', () => {
  test('404 from every route that spends or prices it, until it is switched on', async () => {
    await setActive('crm.leads.create', false)
    try {
      const checks = [
        await get('/api/credits/check/crm.leads.create', ALICE),
        await get('/api/credits/validate?operation=crm.leads.create', ALICE),
        await post('/api/leads', ALICE, { name: 'Off' }),
        await post('/api/operations/lead-create', ALICE, { name: 'Off' }),
        await get('/api/test-credit-check', ALICE),
      ]
      for (const res of checks) {
        assert.equal(res.status, 404, res.req.path)
        assert.equal(res.body.error, 'Operation not configured')
      }
    } finally {
      await setActive('crm.leads.create', true)
    }
    assert.equal((await post('/api/leads', ALICE, { name: 'On again' })).status, 201)
  })
})

describe('GET /api/dashboard', () => {
  test("200 with the figures of the caller's tenant", async () => {
    const res = await get('/api/dashboard', DANA)
    assert.equal(res.status, 200)
    assert.equal(res.body.tenantId, 'acme')
    assert.equal(res.body.health.ready, true)
    assert.equal(res.body.health.connected, true)
    for (const k of ['criticalHitRate', 'referenceHitRate', 'cacheSize', 'eventsReceived']) {
      assert.equal(typeof res.body.metrics[k], 'number', k)
    }
    assert.ok(Array.isArray(res.body.latency.samples))
    const globex = await get('/api/dashboard', GLOBEX)
    assert.equal(globex.body.tenantId, 'globex')
  })
})

describe('GET /health, GET /metrics, pages', () => {
  test("/health: 200 ok when the pool's link is up and no tenant is degraded", async () => {
    const res = await get('/health')
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, {
      status: 'ok',
      connected: true,
      tenants: s.pool.tenants().length,
      degradedTenants: [],
    })
  })

  test("/health: 503 while the pool's Redis link is down", async () => {
    const down = createTenantPool({
      wrapperUrl: s.sim.url,
      redisUrl: 'redis://127.0.0.1:9',
      logger: quietLogger(),
    })
    const app2 = createApp({ pool: down })
    try {
      const res = await request(app2).get('/health')
      assert.equal(res.status, 503)
      assert.equal(res.body.status, 'unavailable')
      assert.equal(res.body.connected, false)
    } finally {
      app2.locals.crm.shutdown()
      await down.shutdown()
    }
  })

  test("/metrics: the pool's exposition, every tenant's series, each family declared once", async () => {
    await get('/api/credits/check/crm.leads.create', GLOBEX)
    const res = await get('/metrics')
    assert.equal(res.status, 200)
    assert.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
    assert.match(res.text, /^smart_crm_consumer_critical_hits_total\{tenant="acme"\} \d+$/m)
    assert.match(res.text, /^smart_crm_consumer_critical_hits_total\{tenant="globex"\} [1-9]\d*$/m)
    assert.match(res.text, /^smart_crm_consumer_pool_tenants \d+$/m)
    assert.match(res.text, /^smart_crm_consumer_pool_link_connected 1$/m)
    const types = res.text.split('\n').filter((l) => l.startsWith('# TYPE '))
    assert.equal(new Set(types).size, types.length)
  })

  test('the pages are served', async () => {
    for (const [path, marker] of [
      ['/', 'crm-app'],
      ['/dashboard', 'latency-chart'],
      ['/cost', 'id="cost"'],
      ['/static/cost.js', 'cache_invalidate'],
    ]) {
      const res = await get(path)
      assert.equal(res.status, 200, path)
      assert.ok(res.text.includes(marker), path)
    }
    assert.equal((await get('/nothing')).status, 404)
  })
})

describe('the tenant pool', () => {
  /** The tenants' `tenantLoaded` / `tenantReleased` events while `fn` runs. */
  async function poolEvents(pool, fn) {
    const seen = []
    const loaded = (e) => seen.push(['loaded', e.tenantId])
    const released = (e) => seen.push(['released', e.tenantId, e.reason])
    pool.on('tenantLoaded', loaded)
    pool.on('tenantReleased', released)
    try {
      await fn()
    } finally {
      pool.off('tenantLoaded', loaded)
      pool.off('tenantReleased', released)
    }
    return seen
  }

  test('two tenants are isolated: an event for acme changes acme only', async () => {
    const path = '/api/credits/check/crm.leads.delete'
    assert.equal((await get(path, ALICE)).body.creditCost, 1)
    assert.equal((await get(path, GLOBEX)).body.creditCost, 1)
    const before = s.pool.getMetrics().perTenant
    await s.wrapper('acme').setCreditCost('crm.leads.delete', 6)
    await waitFor(async () => (await get(path, ALICE)).body.creditCost === 6, {
      message: "acme's new cost",
    })
    assert.equal((await get(path, GLOBEX)).body.creditCost, 1)
    const after = s.pool.getMetrics().perTenant
    assert.ok(after.acme.eventsApplied > before.acme.eventsApplied)
    assert.equal(after.globex.eventsReceived, before.globex.eventsReceived)

    // Same user id in both tenants: suspending acme's u-alice leaves globex's alone.
    await s.wrapper('acme').setUserAccess('u-alice', { status: 'suspended' })
    try {
      await waitFor(() => s.consumer('acme').getUserStatus('u-alice') === 'suspended')
      assert.equal((await get(path, ALICE)).status, 403)
      assert.equal((await get(path, GLOBEX)).status, 200)
    } finally {
      await s.wrapper('acme').setUserAccess('u-alice', { status: 'active' })
      await waitFor(() => s.consumer('acme').getUserStatus('u-alice') === 'active')
    }
    assert.equal(s.pool.getMetrics().perTenant.globex.eventsReceived, before.globex.eventsReceived)
  })

  test('each tenant has its own data: costs, users, profiles, balances', async () => {
    const cost = await get('/api/credits/check/crm.leads.create', GLOBEX)
    assert.equal(cost.body.creditCost, 4)
    const profile = await get('/api/users/u-alice', GLOBEX)
    assert.equal(profile.body.name, 'Alice Globex')
    const credits = await get('/api/credits/validate?operation=crm.leads.create', GLOBEX)
    assert.equal(credits.body.availableCredits, await balance('globex', 'u-alice'))
    // u-dana is acme's; globex's Wrapper does not know her.
    assert.equal((await get('/api/users/u-dana', GUS)).status, 404)
    assert.equal((await get('/api/users/u-dana', DANA)).status, 200)
  })

  test('a tenant the Wrapper refuses gets 403 every time and is never loaded', async () => {
    const seen = await poolEvents(s.pool, async () => {
      for (let i = 0; i < 3; i++) {
        const res = await get('/api/credits/check/crm.leads.create', OTHER)
        assert.equal(res.status, 403)
        assert.deepEqual(res.body, { error: 'Unknown tenant' })
      }
    })
    assert.deepEqual(seen, [])
    assert.equal(s.pool.peek('initech'), null)
    assert.ok(!s.pool.tenants().includes('initech'))
    assert.equal((await get('/ops/pool/tenants/initech')).status, 404)
  })

  test('a released tenant loads again on its next request; concurrent ones share the load', async () => {
    const seen = await poolEvents(s.pool, async () => {
      await s.pool.release('globex')
      assert.deepEqual(s.pool.tenants(), ['acme'])
      assert.equal((await get('/ops/pool/tenants/globex')).status, 404)
      const results = await Promise.all(
        Array.from({ length: 5 }, () => get('/api/credits/check/crm.leads.create', GLOBEX)),
      )
      assert.deepEqual(
        results.map((r) => r.status),
        [200, 200, 200, 200, 200],
      )
    })
    assert.deepEqual(seen, [
      ['released', 'globex', 'release'],
      ['loaded', 'globex'],
    ])
    assert.deepEqual(s.pool.tenants().sort(), ['acme', 'globex'])
    const view = (await get('/ops/pool')).body
    assert.deepEqual(
      view.log.slice(-2).map((e) => [e.event, e.tenantId, e.reason]),
      [
        ['released', 'globex', 'release'],
        ['loaded', 'globex', undefined],
      ],
    )
  })

  test('GET /ops/pool: the pool view, a row per loaded tenant; loads nothing', async () => {
    await get('/api/users/u-alice', GLOBEX)
    await get('/api/users/u-alice', GLOBEX) // a reference hit
    const res = await get('/ops/pool', DANA)
    assert.equal(res.status, 200)
    const v = res.body
    assert.equal(v.viewer, 'acme')
    assert.equal(v.pool.connected, true)
    assert.equal(v.pool.tenants, 2)
    assert.deepEqual(v.pool.degradedTenants, [])
    assert.deepEqual(
      v.tenants.map((t) => t.tenantId),
      ['acme', 'globex'],
    )
    const m = s.pool.getMetrics().perTenant
    for (const row of v.tenants) {
      assert.equal(row.connected, true)
      assert.equal(row.ready, true)
      assert.equal(row.eventsReceived, m[row.tenantId].eventsReceived)
      assert.equal(typeof row.criticalHitRate, 'number')
      assert.equal(typeof row.referenceHitRate, 'number')
    }
    const globex = v.tenants.find((t) => t.tenantId === 'globex')
    assert.ok(globex.referenceHitRate > 0, JSON.stringify(globex))
    assert.equal(v.totals.totalRequests, m.acme.totalRequests + m.globex.totalRequests)
    assert.equal((await get('/ops/pool')).body.viewer, null)

    // A tenant's detail: its metrics and health, as /api/dashboard gives its own users.
    const detail = await get('/ops/pool/tenants/globex')
    assert.equal(detail.status, 200)
    assert.equal(detail.body.tenantId, 'globex')
    assert.equal(detail.body.health.ready, true)
    assert.equal(detail.body.metrics.referenceHits, m.globex.referenceHits)
    assert.ok(Array.isArray(detail.body.latency.samples))
    const missing = await get('/ops/pool/tenants/initech')
    assert.equal(missing.status, 404)
    assert.deepEqual(missing.body, { error: 'Tenant not loaded', tenantId: 'initech' })
    assert.deepEqual(s.pool.tenants().sort(), ['acme', 'globex'])
  })

  test('maxTenants and idleTenantMs release tenants; their users are served again', async () => {
    const small = createTenantPool({
      wrapperUrl: s.sim.url,
      redisUrl: s.redisUrl,
      signingSecret: s.signingSecret,
      maxTenants: 1,
      idleTenantMs: 300,
      logger: quietLogger(),
    })
    const app2 = createApp({ pool: small })
    const path = '/api/credits/check/crm.leads.create'
    try {
      const seen = await poolEvents(small, async () => {
        assert.equal((await request(app2).get(path).set(ALICE)).body.creditCost, 2.5)
        assert.equal((await request(app2).get(path).set(GLOBEX)).body.creditCost, 4)
        assert.deepEqual(small.tenants(), ['globex'])
        assert.equal((await request(app2).get(path).set(ALICE)).body.creditCost, 2.5)
        await waitFor(() => small.tenants().length === 0, { message: 'the idle release' })
      })
      assert.deepEqual(seen, [
        ['loaded', 'acme'],
        ['released', 'acme', 'maxTenants'],
        ['loaded', 'globex'],
        ['released', 'globex', 'maxTenants'],
        ['loaded', 'acme'],
        ['released', 'acme', 'idle'],
      ])
      const view = (await request(app2).get('/ops/pool')).body
      assert.equal(view.pool.loads, 3)
      assert.equal(view.pool.releases, 3)
      assert.deepEqual(view.tenants, [])
    } finally {
      app2.locals.crm.shutdown()
      await small.shutdown()
    }
  })
})
