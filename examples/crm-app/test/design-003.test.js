'use strict'
// Design document 003's own Express code runs unchanged on the package (issue 12).
//
// test/design-003/handlers.mjs holds the design's four endpoints and its
// "Startup and Usage" block verbatim, `new SmartCRMConsumer('tenant-123')`
// included. test/design-003/server.mjs runs them as a child process whose
// environment carries WRAPPER_URL and REDIS_URL (SPEC §2: a string is the tenant
// id, the rest comes from the environment), against a real private redis-server
// and the multi-tenant Wrapper simulator process serving tenant 'tenant-123'
// (test/design-003/seed.json). Each endpoint is called over HTTP (supertest): the
// successful paths, the denial and error paths, with the answers the design's
// code gives; and changes made at the Wrapper reach those answers through Redis.
//
// Where the design's code answers differently from this app's endpoints (a cost
// of 0 reported as "not configured", a lead created before its deduction fails,
// every error a 500), the test asserts the design's behaviour: it is the design's
// code, kept as written; the package gives it what SPEC §2 says.

const path = require('node:path')
const { spawn } = require('node:child_process')
const { test, before, after, describe } = require('node:test')
const assert = require('node:assert/strict')
const request = require('supertest')
const { startRedis, waitFor } = require('smart-crm-consumer/test-helpers')

const { startWrapper } = require('../lib/wrapper.js')

const DIR = path.join(__dirname, 'design-003')
const TENANT = 'tenant-123' // the design's tenant
const FIVE_MINUTES = 5 * 60 * 1000 // the package's default ttl.userProfiles

let redis
let wrapper // the simulator process
let admin // tenant-123's admin API at the simulator
let child // design 003's app
let output = '' // its stdout + stderr, for failure messages
let url

/** Starts test/design-003/server.mjs with `env`; resolves to its URL. */
function startDesignApp(env) {
  child = spawn(process.execPath, [path.join(DIR, 'server.mjs')], {
    cwd: DIR,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  child.stdout.on('data', (d) => (output += d))
  child.stderr.on('data', (d) => (output += d))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('no URL within 15 s')), 15_000)
    const onData = () => {
      const m = /DESIGN_003_URL=(\S+)/.exec(output)
      if (m) {
        clearTimeout(timer)
        child.stdout.off('data', onData)
        resolve(m[1])
      }
    }
    const fail = (err) => {
      clearTimeout(timer)
      reject(new Error(`design 003 app: ${err.message}\n${output}`))
    }
    child.stdout.on('data', onData)
    child.once('exit', (code) => fail(new Error(`exited (${code})`)))
  })
}

before(async () => {
  redis = await startRedis()
  wrapper = await startWrapper({
    redisUrl: redis.url,
    dataFile: path.join(DIR, 'seed.json'),
    tenants: [TENANT],
  })
  admin = wrapper.tenant(TENANT)
  // The design's environment: only the two URLs (no REDIS_HOST & co. that could
  // point elsewhere, no tenant, no options).
  const env = { ...process.env, WRAPPER_URL: wrapper.url, REDIS_URL: redis.url }
  for (const name of Object.keys(env)) {
    if (/^REDIS_/.test(name) && name !== 'REDIS_URL') delete env[name]
  }
  url = await startDesignApp(env)
})

after(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
    await exited
    clearTimeout(timer)
  }
  await wrapper?.stop()
  await redis?.stop()
})

const get = (p) => request(url).get(p)
const postLead = (body) => request(url).post('/api/leads').send(body)
const state = async () => (await admin.state()).data
const balance = async (userId) => (await state()).balances[userId]
const leads = async () => (await get('/test/leads')).body

/** Polls `GET p` until `pred(res)` holds (a change at the Wrapper reaching the design's consumer). */
const until = (p, pred, message) =>
  waitFor(
    async () => {
      const res = await get(p)
      return pred(res) ? res : null
    },
    { message: `${message}\n${output}` },
  )

describe('construction as the design does it', () => {
  test("new SmartCRMConsumer('tenant-123') from the environment: it loaded tenant-123's data and listens on Redis", async () => {
    // The design's startup block ran to the end (server.mjs printed its URL only
    // after `await crmConsumer.initialize()`), and nothing was thrown.
    assert.doesNotMatch(output, /TypeError|RangeError|UnhandledPromiseRejection/)
    // It asked the simulator for tenant-123's data (X-Tenant-Id): the cost is its own.
    const res = await get('/api/credits/validate?operation=crm.leads.create&userId=user-456')
    assert.equal(res.status, 200)
    assert.equal(res.body.creditCost, 2.5)
  })
})

describe('design 003, "1. Credit Validation Endpoint": GET /api/credits/validate', () => {
  test('200: cost from memory, balance from the Wrapper, canAfford', async () => {
    const res = await get('/api/credits/validate?operation=crm.leads.create&userId=user-456')
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, {
      operation: 'crm.leads.create',
      creditCost: 2.5,
      availableCredits: 100,
      canAfford: true,
      cached: true,
      responseTime: '<1ms',
    })
    const poor = await get('/api/credits/validate?operation=crm.reports.generate&userId=user-poor')
    assert.equal(poor.status, 200)
    assert.equal(poor.body.creditCost, 10)
    assert.equal(poor.body.availableCredits, 1)
    assert.equal(poor.body.canAfford, false)
  })

  test('404 "Operation not configured": unknown, inactive, and (the design\'s `!creditCost`) a cost of 0', async () => {
    for (const operation of ['crm.nothing.here', 'crm.legacy.import', 'crm.contacts.export']) {
      const res = await get(`/api/credits/validate?operation=${operation}&userId=user-456`)
      assert.equal(res.status, 404, operation)
      assert.deepEqual(res.body, { error: 'Operation not configured', operation, cached: true })
    }
  })

  test('500 with the error message: a user without a balance, a missing userId', async () => {
    const ghost = await get('/api/credits/validate?operation=crm.leads.create&userId=ghost')
    assert.equal(ghost.status, 500)
    assert.deepEqual(ghost.body, { error: 'not found: /api/users/ghost/credits' })
    const none = await get('/api/credits/validate?operation=crm.leads.create')
    assert.equal(none.status, 500)
    assert.deepEqual(none.body, { error: 'userId must be a string, got undefined' })
  })

  test('a cost changed at the Wrapper reaches the answer (Redis event), and a new balance', async () => {
    const p = '/api/credits/validate?operation=crm.leads.create&userId=user-456'
    await admin.setCreditCost('crm.leads.create', 4)
    await admin.setBalance('user-456', 3)
    try {
      const res = await until(p, (r) => r.body.creditCost === 4, 'cost 4 at the design app')
      assert.equal(res.body.availableCredits, 3)
      assert.equal(res.body.canAfford, false)
    } finally {
      await admin.setCreditCost('crm.leads.create', 2.5)
      await admin.setBalance('user-456', 100)
      await until(p, (r) => r.body.creditCost === 2.5, 'cost 2.5 again')
    }
  })
})

describe('design 003, "2. User Profile Endpoint": GET /api/users/:userId/profile', () => {
  test('200: the profile, cached: true, cacheExpiry about 5 min ahead', async () => {
    const before = Date.now()
    const res = await get('/api/users/user-456/profile')
    assert.equal(res.status, 200)
    const { cacheExpiry, ...rest } = res.body
    assert.deepEqual(rest, {
      userId: 'user-456',
      name: 'Sam Seller',
      email: 'sam@tenant-123.example',
      title: 'Account Executive',
      department: 'Sales',
      cached: true,
    })
    assert.equal(typeof cacheExpiry, 'number')
    assert.ok(cacheExpiry > before, `cacheExpiry ${cacheExpiry} in the future`)
    assert.ok(cacheExpiry <= Date.now() + FIVE_MINUTES, `cacheExpiry ${cacheExpiry} within the TTL`)
    // A second read is a cache hit: the same entry, the same expiry.
    const again = await get('/api/users/user-456/profile')
    assert.equal(again.body.cacheExpiry, cacheExpiry)
  })

  test('500 with the error message for a user the Wrapper does not know', async () => {
    const res = await get('/api/users/ghost/profile')
    assert.equal(res.status, 500)
    assert.deepEqual(res.body, { error: 'not found: /api/users/ghost/profile' })
  })

  test('a profile changed at the Wrapper: the event invalidates it, the next read fetches the new one', async () => {
    await admin.admin('PATCH', '/users/user-viewer/profile', { title: 'Senior Analyst' })
    const res = await until(
      '/api/users/user-viewer/profile',
      (r) => r.status === 200 && r.body.title === 'Senior Analyst',
      'the new title at the design app',
    )
    assert.equal(res.body.name, 'Val Viewer')
  })
})

describe('design 003, "3. Permission Check Endpoint": GET /api/permissions/check', () => {
  const check = (userId, permission) =>
    get(`/api/permissions/check?userId=${userId}&permission=${permission}`)

  test('200 authorized: true for a role that holds the permission (prefix pattern)', async () => {
    const res = await check('user-456', 'crm.leads.create')
    assert.equal(res.status, 200)
    assert.deepEqual(res.body, {
      userId: 'user-456',
      permission: 'crm.leads.create',
      authorized: true,
      cached: true,
      responseTime: '<1ms',
    })
  })

  test('200 authorized: false for a role without it, a suspended user, an unknown user', async () => {
    for (const userId of ['user-viewer', 'user-suspended', 'ghost']) {
      const res = await check(userId, 'crm.leads.create')
      assert.equal(res.status, 200, userId)
      assert.equal(res.body.authorized, false, userId)
    }
  })

  test('500 with the error message when the permission is missing', async () => {
    const res = await get('/api/permissions/check?userId=user-456')
    assert.equal(res.status, 500)
    assert.deepEqual(res.body, { error: 'permission must be a string, got undefined' })
  })

  test('a role changed at the Wrapper reaches the answer', async () => {
    await admin.admin('PUT', '/roles/viewer', {
      permissions: ['crm.contacts.read', 'crm.leads.create'],
    })
    try {
      await until(
        '/api/permissions/check?userId=user-viewer&permission=crm.leads.create',
        (r) => r.body.authorized === true,
        'viewer authorized',
      )
    } finally {
      await admin.admin('PUT', '/roles/viewer', { permissions: ['crm.contacts.read'] })
      await until(
        '/api/permissions/check?userId=user-viewer&permission=crm.leads.create',
        (r) => r.body.authorized === false,
        'viewer denied again',
      )
    }
  })
})

describe('design 003, "4. Lead Creation Endpoint": POST /api/leads', () => {
  test('200: the lead created with the profile, the cost deducted at the Wrapper', async () => {
    const before = await balance('user-456')
    const res = await postLead({ userId: 'user-456', leadData: { name: 'Big deal' } })
    assert.equal(res.status, 200)
    assert.equal(res.body.success, true)
    assert.equal(res.body.creditsDeducted, 2.5)
    const lead = (await leads()).find((l) => l.id === res.body.leadId)
    assert.deepEqual(lead, {
      id: res.body.leadId,
      name: 'Big deal',
      ownerId: 'user-456',
      ownerName: 'Sam Seller',
    })
    assert.equal(await balance('user-456'), before - 2.5)
    // `deductCredits(userId, creditCost)` without options: the package generated
    // an idempotency key (SPEC §2).
    const { deductions } = await admin.admin('GET', '/log')
    const last = deductions.filter((d) => d.userId === 'user-456').at(-1)
    assert.equal(last.body.amount, 2.5)
    assert.equal(typeof last.body.idempotencyKey, 'string')
    assert.ok(last.body.idempotencyKey.length > 0)
  })

  test('403 "Insufficient permissions": a role without it, a suspended user, an unknown user; nothing deducted', async () => {
    const count = (await leads()).length
    for (const userId of ['user-viewer', 'user-suspended', 'ghost']) {
      const before = await balance(userId)
      const res = await postLead({ userId, leadData: { name: 'x' } })
      assert.equal(res.status, 403, userId)
      assert.deepEqual(res.body, { error: 'Insufficient permissions' })
      assert.equal(await balance(userId), before, userId)
    }
    assert.equal((await leads()).length, count, 'no lead created')
  })

  test('402 "Lead creation not configured" while the operation is inactive at the Wrapper', async () => {
    const p = '/api/credits/validate?operation=crm.leads.create&userId=user-456'
    await admin.setCreditConfig('crm.leads.create', { isActive: false })
    try {
      await until(p, (r) => r.status === 404, 'crm.leads.create inactive at the design app')
      const res = await postLead({ userId: 'user-456', leadData: { name: 'x' } })
      assert.equal(res.status, 402)
      assert.deepEqual(res.body, { error: 'Lead creation not configured' })
    } finally {
      await admin.setCreditConfig('crm.leads.create', { isActive: true })
      await until(p, (r) => r.status === 200, 'crm.leads.create active again')
    }
  })

  test("500 when the balance is short: the Wrapper's 402 (INSUFFICIENT_CREDITS), nothing deducted", async () => {
    const count = (await leads()).length
    const res = await postLead({ userId: 'user-poor', leadData: { name: 'Too expensive' } })
    assert.equal(res.status, 500)
    assert.deepEqual(res.body, { error: 'insufficient credits' })
    assert.equal(await balance('user-poor'), 1)
    // The design creates the lead before it deducts (its check-then-deduct order):
    // the lead exists although it was not paid for. The design's flaw, kept as written.
    assert.equal((await leads()).length, count + 1)
  })

  test('500 with the error message for a body without userId', async () => {
    const res = await postLead({})
    assert.equal(res.status, 500)
    assert.deepEqual(res.body, { error: 'userId must be a string, got undefined' })
  })
})

describe('design 003, "Startup and Usage": GET /api/test-credit-check', () => {
  test('200: cost, canAfford, the profile of user-456, hasPermission and the metrics', async () => {
    const res = await get('/api/test-credit-check')
    assert.equal(res.status, 200)
    const { metrics, ...rest } = res.body
    assert.deepEqual(rest, {
      operation: 'crm.leads.create',
      cost: 2.5,
      canAfford: true,
      profile: {
        userId: 'user-456',
        name: 'Sam Seller',
        email: 'sam@tenant-123.example',
        title: 'Account Executive',
        department: 'Sales',
      },
      hasPermission: true,
    })
    // The figures the design's getMetrics() returns (and its monitor reads), as numbers.
    for (const name of [
      'criticalHitRate',
      'referenceHitRate',
      'overallHitRate',
      'totalRequests',
      'cacheSize',
      'criticalCacheSize',
      'referenceCacheSize',
    ]) {
      assert.equal(typeof metrics[name], 'number', name)
      assert.ok(Number.isFinite(metrics[name]), name)
    }
    assert.ok(metrics.criticalHitRate > 0 && metrics.criticalHitRate <= 1)
    assert.ok(metrics.totalRequests > 0)
  })

  test('hasPermission: false once user-456 is suspended at the Wrapper', async () => {
    await admin.setUserAccess('user-456', { status: 'suspended' })
    try {
      const res = await until(
        '/api/test-credit-check',
        (r) => r.body.hasPermission === false,
        'user-456 suspended at the design app',
      )
      assert.equal(res.status, 200)
      assert.equal(res.body.cost, 2.5)
    } finally {
      await admin.setUserAccess('user-456', { status: 'active' })
      await until('/api/test-credit-check', (r) => r.body.hasPermission === true, 'active again')
    }
  })

  test("500 (Express's error handler: the design's handler has no try/catch) when the profile fetch fails", async () => {
    // The next profile request answers 401 (WRAPPER_AUTH), once; the cached
    // profile is dropped by an invalidation event, so the handler fetches it.
    await admin.admin('POST', '/faults', {
      match: '/api/users/user-456/profile',
      status: 401,
      times: 1,
    })
    await admin.admin('POST', '/invalidate', { keys: ['user:user-456'] })
    const failed = await until('/api/test-credit-check', (r) => r.status === 500, 'a 500')
    assert.match(failed.headers['content-type'], /^text\/html/)
    // The fault was used up: the next request fetches the profile again.
    const res = await get('/api/test-credit-check')
    assert.equal(res.status, 200)
    assert.equal(res.body.profile.name, 'Sam Seller')
  })
})
