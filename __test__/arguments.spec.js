'use strict'
// Bad arguments from JavaScript, for every public method: wrong types, empty
// and 1 MB strings, and calls after shutdown(). Each gives a clear TypeError,
// RangeError or Error (with a code), never a crash. And no secret ever shows
// up in errors, logs, metrics or health.

const test = require('ava')

const { setup } = require('./helpers/fixture.js')

const MB = 'x'.repeat(1 << 20)
const WRONG = [undefined, null, 42, {}, [], () => {}, Symbol('s'), 10n]

/** Runs `fn`, sync or async, and returns the error it throws or rejects with. */
async function errorOf(fn) {
  try {
    await fn()
  } catch (err) {
    return err
  }
  return null
}

const syncReads = [
  'getCreditCost',
  'getRolePermissions',
  'getUserRoles',
  'getUserStatus',
  'getActiveConfig',
  'getCacheExpiry',
  'invalidate',
]
const asyncIdReads = [
  'getUserProfile',
  'getHierarchy',
  'getAuditLog',
  'getHistoricalData',
  'getUserCredits',
]

test('wrong argument types are TypeErrors, for every method', async (t) => {
  const { consumer } = await setup(t)
  for (const value of WRONG) {
    const label =
      typeof value === 'symbol'
        ? 'symbol'
        : typeof value === 'bigint'
          ? 'bigint'
          : (JSON.stringify(value) ?? String(value))
    for (const m of [...syncReads, ...asyncIdReads]) {
      const err = await errorOf(() => consumer[m](value))
      t.true(err instanceof TypeError, `${m}(${label}) → ${err}`)
    }
    t.true((await errorOf(() => consumer.checkPermission(value, 'p'))) instanceof TypeError)
    t.true((await errorOf(() => consumer.checkPermission('u', value))) instanceof TypeError)
    t.true((await errorOf(() => consumer.checkCredits(value, 'u-alice'))) instanceof TypeError)
    t.true(
      (await errorOf(() => consumer.checkCredits('crm.leads.create', value))) instanceof TypeError,
    )
    t.true((await errorOf(() => consumer.deductCredits(value, 1))) instanceof TypeError)
    if (typeof value !== 'number') {
      t.true(
        (await errorOf(() => consumer.deductCredits('u-alice', value))) instanceof TypeError,
        `amount ${label}`,
      )
    }
  }
})

test('empty and 1 MB strings: a RangeError or a plain miss, never a crash', async (t) => {
  const { consumer, sim } = await setup(t)
  const before = sim.requests.length
  for (const m of asyncIdReads) {
    t.true((await errorOf(() => consumer[m](''))) instanceof RangeError, `${m}('')`)
    t.true((await errorOf(() => consumer[m](MB))) instanceof RangeError, `${m}(1 MB)`)
  }
  // getCreditCost is the hot path: a 1 MB id is simply unknown there (below).
  for (const m of syncReads.filter((name) => name !== 'getCreditCost')) {
    t.true((await errorOf(() => consumer[m](MB))) instanceof RangeError, `${m}(1 MB)`)
    t.is(await errorOf(() => consumer[m]('')), null, `${m}('') is a miss`)
  }
  t.is(consumer.getCreditCost(''), null)
  t.is(consumer.getCreditCost(MB), null)
  t.false(consumer.checkPermission('', ''))
  t.false(consumer.checkPermission(MB, MB))
  t.true(
    (await errorOf(() => consumer.deductCredits('u-alice', 1, { idempotencyKey: '' }))) instanceof
      RangeError,
  )
  t.true(
    (await errorOf(() => consumer.deductCredits('u-alice', 1, { idempotencyKey: MB }))) instanceof
      RangeError,
  )
  t.deepEqual(
    sim.requests.slice(before).map((r) => r.path),
    [],
    'nothing was requested for any of them',
  )
  t.true(consumer.health().connected)
})

test('every call after shutdown() is an Error with code SHUTDOWN', async (t) => {
  const { consumer } = await setup(t)
  await consumer.shutdown()
  const calls = {
    getCreditCost: () => consumer.getCreditCost('crm.leads.create'),
    checkPermission: () => consumer.checkPermission('u-alice', 'crm.leads.create'),
    getRolePermissions: () => consumer.getRolePermissions('sales'),
    getUserRoles: () => consumer.getUserRoles('u-alice'),
    getUserStatus: () => consumer.getUserStatus('u-alice'),
    getActiveConfig: () => consumer.getActiveConfig('limits'),
    getUserProfile: () => consumer.getUserProfile('u-alice'),
    getHierarchy: () => consumer.getHierarchy('org-1'),
    getAuditLog: () => consumer.getAuditLog('log-1'),
    getHistoricalData: () => consumer.getHistoricalData('revenue-2025-q4'),
    getCacheExpiry: () => consumer.getCacheExpiry('user:u-alice'),
    invalidate: () => consumer.invalidate('user:u-alice'),
    getUserCredits: () => consumer.getUserCredits('u-alice'),
    checkCredits: () => consumer.checkCredits('crm.leads.create', 'u-alice'),
    deductCredits: () => consumer.deductCredits('u-alice', 1),
    initialize: () => consumer.initialize(),
  }
  for (const [name, call] of Object.entries(calls)) {
    const err = await errorOf(call)
    t.true(err instanceof Error, `${name} → ${err}`)
    t.is(err && err.code, 'SHUTDOWN', name)
  }
  await t.notThrowsAsync(consumer.shutdown())
  t.is(typeof consumer.getMetrics().criticalHits, 'number', 'metrics stay readable')
  t.false(consumer.health().connected)
})

test('no secret appears in errors, logs, metrics or health', async (t) => {
  const secrets = {
    token: 'tok-hunter2-wrapper',
    signing: 'sig-hunter2-signing',
    password: 'pw-hunter2-redis',
  }
  const f = await setup(t, {
    sim: { token: secrets.token },
    consumer: { wrapperToken: secrets.token, signingSecret: secrets.signing, initTimeoutMs: 3000 },
    init: false,
  })
  await f.pub.command('CONFIG', 'SET', 'requirepass', secrets.password)
  await f.consumer.shutdown()
  const { SmartCRMConsumer } = require('../lib/index.js')
  const { captureLogger } = require('./helpers/fixture.js')
  const { logger, lines } = captureLogger()
  const make = (extra) =>
    new SmartCRMConsumer({
      tenantId: f.tenantId,
      wrapperUrl: f.sim.url,
      redisUrl: f.redis.url.replace('redis://', `redis://:${secrets.password}@`),
      wrapperToken: secrets.token,
      signingSecret: secrets.signing,
      initTimeoutMs: 3000,
      logger,
      ...extra,
    })
  const seen = []
  const good = make()
  t.teardown(() => good.shutdown())
  await good.initialize()
  seen.push(await errorOf(() => good.getUserProfile('nobody')))
  f.sim.token = 'rotated'
  seen.push(await errorOf(() => good.getUserProfile('u-bob')))
  const badRedis = make({
    redisUrl: f.redis.url.replace('redis://', `redis://:wrong-${secrets.password}@`),
  })
  t.teardown(() => badRedis.shutdown())
  seen.push(await errorOf(() => badRedis.initialize()))
  seen.push(await errorOf(() => make({ heartbeatMs: -1 })))
  seen.push(await errorOf(() => make({ redisUrl: `http://u:${secrets.password}@x` })))
  await f.publish('credit-configs', {
    eventType: 'credit-config-changed',
    tenantId: f.tenantId,
    data: {},
  })
  const haystack = JSON.stringify([
    seen.map((e) => e && { message: e.message, code: e.code, stack: e.stack }),
    lines,
    good.getMetrics(),
    good.health(),
    good.metricsText(),
    badRedis.getMetrics(),
    badRedis.health(),
  ])
  t.is(seen.filter(Boolean).length, 5)
  for (const [name, secret] of Object.entries(secrets)) {
    t.false(haystack.includes(secret), `${name} leaked`)
    t.false(haystack.includes(secret.replace('hunter2', '')), `${name} leaked in part`)
  }
})
