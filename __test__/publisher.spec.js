'use strict'
// createPublisher (SPEC §3, publisher paragraph): a synchronous factory that
// validates at once, connects on first use, reconnects by itself after a lost
// connection or a Redis restart, waits up to `connectTimeoutMs` for an
// unreachable Redis and then rejects with REDIS_UNAVAILABLE, never resolving for
// a message that was not sent. Real redis-server processes, a real consumer.

const test = require('ava')
const { spawn } = require('node:child_process')
const path = require('node:path')

const { setup, waitFor, nextEvent } = require('./helpers/fixture.js')
const { startRedis } = require('../tools/test-helpers/index.js')
const { createPublisher } = require('../lib/index.js')

const reconnected = (consumer, timeout) =>
  nextEvent(consumer, 'connection', { filter: (e) => e.connected === true, timeout })
const disconnected = (consumer, timeout) =>
  nextEvent(consumer, 'connection', { filter: (e) => e.connected === false, timeout })

/** Publishes a marker config and waits until the consumer shows it. */
async function marker(pub, consumer, name) {
  const receivers = await pub.publish('configs', 'config-changed', { configId: name, config: 1 })
  await waitFor(() => consumer.getActiveConfig(name) === 1, { message: `marker ${name}` })
  return receivers
}

test('createPublisher returns the publisher at once and validates synchronously', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const pub = createPublisher({ redisUrl: redis.url, tenantId: 'acme' })
  t.teardown(() => pub.close())
  t.is(typeof pub.publish, 'function', 'not a promise: the publisher itself')
  t.is(typeof pub.close, 'function')
  t.is(typeof pub.then, 'undefined', 'not a thenable, so `await createPublisher()` yields it too')
  t.is(await pub, pub)
  t.is(await pub.publish('control', 'resync-required'), 0, 'lazy connect on first use')

  const bad = [
    [{ tenantId: 'a:b' }, RangeError, 'tenantId'],
    [{}, TypeError, 'tenantId'],
    [{ tenantId: 'acme', channelPrefix: 'crm*' }, RangeError, 'channelPrefix'],
    [{ tenantId: 'acme', redisUrl: 'http://u:hunter2@host' }, RangeError, 'redisUrl'],
    [{ tenantId: 'acme', redisUrl: 42 }, TypeError, 'redisUrl'],
    [{ tenantId: 'acme', connectTimeoutMs: 0 }, RangeError, 'connectTimeoutMs'],
    [{ tenantId: 'acme', connectTimeoutMs: 1.5 }, RangeError, 'connectTimeoutMs'],
    [{ tenantId: 'acme', connectTimeoutMs: -1 }, RangeError, 'connectTimeoutMs'],
    [{ tenantId: 'acme', connectTimeoutMs: '100' }, TypeError, 'connectTimeoutMs'],
    [{ tenantId: 'acme', signingSecret: '' }, RangeError, 'signingSecret'],
    [{ tenantId: 'acme', signingSecret: 42 }, TypeError, 'signingSecret'],
    [{ tenantId: 'acme', signingsecret: 'hunter2' }, TypeError, 'signingsecret'],
  ]
  for (const [opts, Cls, name] of bad) {
    const err = t.throws(() => createPublisher({ redisUrl: redis.url, ...opts }), {
      instanceOf: Cls,
    })
    t.true(err.message.includes(`\`${name}\``), `${JSON.stringify(opts)}: ${err.message}`)
    t.false(err.message.includes('hunter2'), err.message)
  }
  t.throws(() => createPublisher(null), { instanceOf: TypeError })
})

test('created while Redis is down: the first publish waits for it and is delivered', async (t) => {
  const f = await setup(t)
  const down = disconnected(f.consumer)
  await f.redis.stop()
  await down
  const pub = createPublisher({
    redisUrl: f.redis.url,
    tenantId: f.tenantId,
    connectTimeoutMs: 30_000,
  })
  t.teardown(() => pub.close())
  const pending = pub.publish('configs', 'config-changed', { configId: 'early', config: 1 })
  let settled = false
  pending.then(
    () => (settled = true),
    () => (settled = true),
  )
  const up = reconnected(f.consumer, 40_000)
  await f.redis.restart()
  t.is(typeof (await pending), 'number', 'resolved once Redis was back')
  t.true(settled)
  await up
  t.is(await marker(pub, f.consumer, 'after'), 1)
})

test('five Redis restarts between publishes: every publish resolves and each event is applied once', async (t) => {
  const f = await setup(t)
  const { consumer, redis, tenantId } = f
  const pub = await createPublisher({ redisUrl: redis.url, tenantId, connectTimeoutMs: 30_000 })
  t.teardown(() => pub.close())
  t.is(await marker(pub, consumer, 'm-start'), 1)

  for (let i = 0; i < 5; i++) {
    const down = disconnected(consumer)
    await redis.stop()
    await down
    // Published while Redis is down: resolves once it is back (the consumer may
    // not be subscribed yet, so it is not counted as applied here).
    const during = pub.publish('configs', 'config-changed', { configId: `down-${i}`, config: i })
    // The consumer's backoff doubles with each quick restart (1, 2, 4, 8, 16 s).
    const up = reconnected(consumer, 40_000)
    await redis.restart()
    t.is(typeof (await during), 'number', `round ${i}: the publish during the outage resolved`)
    await up

    const m0 = consumer.getMetrics()
    const receivers = await pub.publish('configs', 'config-changed', {
      configId: `after-${i}`,
      config: i,
    })
    t.is(receivers, 1, `round ${i}: one subscriber`)
    await marker(pub, consumer, `m-${i}`)
    t.is(consumer.getActiveConfig(`after-${i}`), i)
    const m1 = consumer.getMetrics()
    t.is(m1.eventsReceived - m0.eventsReceived, 2, `round ${i}: the event and the marker, once`)
    t.is(
      m1.eventsApplied - m0.eventsApplied,
      2,
      `round ${i}: the event and the marker, applied once`,
    )
    t.is(m1.eventsRejected.replay, m0.eventsRejected.replay, `round ${i}: no duplicate`)
  }
})

test('with Redis down, publish rejects REDIS_UNAVAILABLE after about connectTimeoutMs, and the message is never delivered', async (t) => {
  const f = await setup(t)
  const { consumer, redis, tenantId } = f
  const pub = createPublisher({ redisUrl: redis.url, tenantId, connectTimeoutMs: 1000 })
  t.teardown(() => pub.close())
  t.is(await marker(pub, consumer, 'm-before'), 1, 'connected first')

  const down = disconnected(consumer)
  await redis.stop()
  await down
  const started = Date.now()
  const err = await t.throwsAsync(
    pub.publish('configs', 'config-changed', { configId: 'lost', config: 1 }),
  )
  const elapsed = Date.now() - started
  t.is(err.code, 'REDIS_UNAVAILABLE', err.message)
  t.true(elapsed >= 900, `waited ${elapsed} ms for Redis`)
  t.true(elapsed < 4000, `gave up after ${elapsed} ms`)

  const up = reconnected(consumer, 40_000)
  await redis.restart()
  await up
  const m0 = consumer.getMetrics()
  await marker(pub, consumer, 'm-after')
  const m1 = consumer.getMetrics()
  t.is(m1.eventsReceived - m0.eventsReceived, 1, 'only the marker arrived: nothing was queued')
  t.is(consumer.getActiveConfig('lost'), null)
})

test('close(): pending and later publishes reject with SHUTDOWN; close is idempotent', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const pub = createPublisher({ redisUrl: redis.url, tenantId: 'acme', connectTimeoutMs: 60_000 })
  t.is(await pub.publish('control', 'resync-required'), 0)
  await redis.stop()
  const pending = pub.publish('control', 'resync-required')
  const started = Date.now()
  await pub.close()
  const err = await t.throwsAsync(pending)
  t.is(err.code, 'SHUTDOWN', err.message)
  t.true(Date.now() - started < 5000, 'close() ends a pending wait at once')
  const later = await t.throwsAsync(pub.publish('control', 'resync-required'))
  t.is(later.code, 'SHUTDOWN')
  await t.notThrowsAsync(pub.close())
})

test('after close() nothing the publisher owns keeps Node alive', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const script = `
    const { createPublisher } = require(${JSON.stringify(path.join(__dirname, '..', 'lib', 'index.js'))})
    const pub = createPublisher({ redisUrl: ${JSON.stringify(redis.url)}, tenantId: 'acme' })
    pub.publish('control', 'resync-required').then(async (n) => { console.log('sent', n); await pub.close() })
  `
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (out += d))
  const code = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`the process did not exit by itself: ${out}`))
    }, 15_000)
    child.on('exit', (c) => {
      clearTimeout(timer)
      resolve(c)
    })
  })
  t.is(code, 0, out)
  t.regex(out, /sent 0/)
})
