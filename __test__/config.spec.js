'use strict'
// Constructor options (SPEC §2): validation names the option, defaults and
// environment fallbacks apply, secrets never leak into errors.

const test = require('ava')

const { SmartCRMConsumer } = require('../lib/index.js')
const { setup, runNode } = require('./helpers/fixture.js')

const base = { tenantId: 'acme', wrapperUrl: 'http://127.0.0.1:9' }

const invalid = [
  [{}, TypeError, 'tenantId'],
  [{ ...base, tenantId: 42 }, TypeError, 'tenantId'],
  [{ ...base, tenantId: 'a:b' }, RangeError, 'tenantId'],
  [{ ...base, tenantId: 'a*' }, RangeError, 'tenantId'],
  [{ ...base, tenantId: 'a?' }, RangeError, 'tenantId'],
  [{ ...base, tenantId: 'a[b]' }, RangeError, 'tenantId'],
  [{ ...base, tenantId: '-x' }, RangeError, 'tenantId'],
  [{ ...base, tenantId: 'x'.repeat(129) }, RangeError, 'tenantId'],
  [{ tenantId: 'acme' }, TypeError, 'wrapperUrl'],
  [{ ...base, wrapperUrl: 'ftp://x' }, RangeError, 'wrapperUrl'],
  [{ ...base, wrapperUrl: 'not a url' }, RangeError, 'wrapperUrl'],
  [{ ...base, redisUrl: 'http://x' }, RangeError, 'redisUrl'],
  [{ ...base, redisUrl: 5 }, TypeError, 'redisUrl'],
  [{ ...base, channelPrefix: 'crm*' }, RangeError, 'channelPrefix'],
  [{ ...base, wrapperToken: 'a b' }, RangeError, 'wrapperToken'],
  [{ ...base, signingSecret: '' }, RangeError, 'signingSecret'],
  [{ ...base, ttl: 5 }, TypeError, 'ttl'],
  [{ ...base, ttl: { userProfiles: -1 } }, RangeError, 'ttl.userProfiles'],
  [{ ...base, ttl: { userProfiles: '5' } }, TypeError, 'ttl.userProfiles'],
  [{ ...base, ttl: { userProfile: 5 } }, TypeError, 'ttl.userProfile'],
  [{ ...base, ttl: { notFound: NaN } }, RangeError, 'ttl.notFound'],
  [{ ...base, staleIfErrorMs: Infinity }, RangeError, 'staleIfErrorMs'],
  [{ ...base, heartbeatMs: 0 }, RangeError, 'heartbeatMs'],
  [{ ...base, heartbeatMs: 1.5 }, RangeError, 'heartbeatMs'],
  [{ ...base, maxReferenceBytes: -1 }, RangeError, 'maxReferenceBytes'],
  [{ ...base, refreshIntervalMs: 10 }, RangeError, 'refreshIntervalMs'],
  [{ ...base, requestTimeoutMs: '2000' }, TypeError, 'requestTimeoutMs'],
  [{ ...base, initTimeoutMs: 0 }, RangeError, 'initTimeoutMs'],
  [{ ...base, logger: {} }, TypeError, 'logger'],
  [{ ...base, bogus: 1 }, TypeError, 'bogus'],
  [{ ...base, ttl: { userProfiles: () => 1 } }, TypeError, 'ttl.userProfiles'],
  // this build cannot skip certificate checks: refused here, not at every connect
  [{ ...base, redisUrl: 'rediss://127.0.0.1:6380/#insecure' }, RangeError, 'redisUrl'],
  [{ ...base, redisUrl: 'rediss://:pw@127.0.0.1:6380/0#insecure' }, RangeError, 'redisUrl'],
  // `env` was accepted and ignored; the environment is read from process.env
  [{ ...base, env: { WRAPPER_URL: 'http://x' } }, TypeError, 'env'],
]

for (const [options, Cls, name] of invalid) {
  test(`invalid ${name}: ${JSON.stringify(options, (k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))}`, (t) => {
    const err = t.throws(() => new SmartCRMConsumer(options), { instanceOf: Cls })
    t.true(err.message.includes(`\`${name}\``), err.message)
  })
}

test('options must be an object', (t) => {
  t.throws(() => new SmartCRMConsumer(), { instanceOf: TypeError })
  t.throws(() => new SmartCRMConsumer('acme'), { instanceOf: TypeError })
})

test('secrets never appear in errors', (t) => {
  const err = t.throws(() => new SmartCRMConsumer({ ...base, redisUrl: 'http://u:hunter2@host' }))
  t.false(err.message.includes('hunter2'))
  const err2 = t.throws(() => new SmartCRMConsumer({ ...base, wrapperToken: 'hunter2 x' }))
  t.false(err2.message.includes('hunter2'))
  const err3 = t.throws(
    () => new SmartCRMConsumer({ ...base, signingSecret: 'hunter2', heartbeatMs: -1 }),
  )
  t.false(err3.message.includes('hunter2'))
})

test('valid options with every field are accepted; undefined means default', (t) => {
  const c = new SmartCRMConsumer({
    ...base,
    redisUrl: 'redis://user:pw@127.0.0.1:6390/2',
    wrapperToken: 'tok',
    channelPrefix: 'crm:prod',
    signingSecret: 's',
    ttl: { userProfiles: 1, hierarchy: 2, auditLogs: 3, historicalData: 4, notFound: 0 },
    staleIfErrorMs: 0,
    heartbeatMs: 1000,
    maxReferenceBytes: 0,
    refreshIntervalMs: 0,
    requestTimeoutMs: 100,
    initTimeoutMs: 100,
    logger: console,
    wrapperUrlUnused: undefined,
  })
  t.is(c.tenantId, 'acme')
  t.false(c.isConnected)
  t.false(c.health().ready)
})

test('WRAPPER_URL and REDIS_URL environment fallbacks are used', async (t) => {
  const f = await setup(t, { init: false })
  await f.consumer.shutdown()
  const out = await runNode(
    { WRAPPER_URL: f.sim.url, REDIS_URL: f.redis.url },
    `const { SmartCRMConsumer } = require('./lib/index.js')
     const c = new SmartCRMConsumer({ tenantId: ${JSON.stringify(f.tenantId)}, initTimeoutMs: 5000, logger: require('./tools/test-helpers/index.js').quietLogger() })
     c.initialize().then(() => { console.log(c.getCreditCost('crm.leads.create')); return c.shutdown() })`,
  )
  t.is(out, '2.5')
})

test("new SmartCRMConsumer('tenant-id'), as the design writes it: the rest from the environment", async (t) => {
  const f = await setup(t, { init: false })
  await f.consumer.shutdown()
  const out = await runNode(
    { WRAPPER_URL: f.sim.url, REDIS_URL: f.redis.url },
    `const { SmartCRMConsumer } = require('./lib/index.js')
     const c = new SmartCRMConsumer(${JSON.stringify(f.tenantId)})
     c.initialize().then(() => { console.log(c.tenantId, c.getCreditCost('crm.leads.create')); return c.shutdown() })`,
  )
  // the default logger is console: the answer is the last line
  t.is(out.split('\n').pop(), `${f.tenantId} 2.5`)
  // a string is a tenant id: it is validated as one
  t.throws(() => new SmartCRMConsumer('bad:tenant'), {
    instanceOf: RangeError,
    message: /tenantId/,
  })
})

test('REDIS_HOST and REDIS_PORT build the Redis URL', async (t) => {
  const f = await setup(t, { init: false })
  await f.consumer.shutdown()
  const out = await runNode(
    { WRAPPER_URL: f.sim.url, REDIS_HOST: '127.0.0.1', REDIS_PORT: String(f.redis.port) },
    `const { SmartCRMConsumer } = require('./lib/index.js')
     const c = new SmartCRMConsumer({ tenantId: ${JSON.stringify(f.tenantId)}, initTimeoutMs: 5000, logger: require('./tools/test-helpers/index.js').quietLogger() })
     c.initialize().then(() => { console.log(c.health().ready); return c.shutdown() })`,
  )
  t.is(out, 'true')
})

test('REDIS_PASSWORD is used and never printed', async (t) => {
  const f = await setup(t, { init: false })
  await f.consumer.shutdown()
  await f.pub.command('CONFIG', 'SET', 'requirepass', 'hunter2')
  const out = await runNode(
    {
      WRAPPER_URL: f.sim.url,
      REDIS_HOST: '127.0.0.1',
      REDIS_PORT: String(f.redis.port),
      REDIS_PASSWORD: 'hunter2',
    },
    `const { SmartCRMConsumer } = require('./lib/index.js')
     const lines = []
     const log = (...a) => lines.push(a.join(' '))
     const c = new SmartCRMConsumer({ tenantId: ${JSON.stringify(f.tenantId)}, initTimeoutMs: 5000, logger: { debug: log, info: log, warn: log, error: log } })
     c.initialize().then(() => {
       const seen = JSON.stringify([lines, c.getMetrics(), c.health(), c.metricsText()])
       console.log(c.health().ready, seen.includes('hunter2'))
       return c.shutdown()
     })`,
  )
  t.is(out, 'true false')
})

test('a wrong Redis password fails with REDIS_UNAVAILABLE and is not echoed', async (t) => {
  const f = await setup(t, { init: false })
  await f.consumer.shutdown()
  await f.pub.command('CONFIG', 'SET', 'requirepass', 'right-one')
  const url = f.redis.url.replace('redis://', 'redis://:wrong-hunter2@')
  const { logger, lines } = require('./helpers/fixture.js').captureLogger()
  const c = new SmartCRMConsumer({
    tenantId: f.tenantId,
    wrapperUrl: f.sim.url,
    redisUrl: url,
    initTimeoutMs: 1000,
    logger,
  })
  t.teardown(() => c.shutdown())
  const err = await t.throwsAsync(c.initialize())
  t.is(err.code, 'REDIS_UNAVAILABLE')
  const seen = JSON.stringify([err.message, lines, c.getMetrics(), c.health(), c.metricsText()])
  t.false(seen.includes('wrong-hunter2'))
})
