'use strict'
// Signing secrets (SPEC §3): `signingSecret` may be one secret or a list, on the
// consumer and on the publisher. The publisher signs with the first, a consumer
// accepts any, so a fleet rotates its secret with no window in which events are
// rejected. Secrets never appear in errors, logs or metrics. Also the
// `maxClockSkewMs` option that bounds signed events older than the latest load.

const test = require('ava')

const { setup, waitFor, captureLogger } = require('./helpers/fixture.js')
const { SmartCRMConsumer, createPublisher, signMessage } = require('../lib/index.js')

const SECRETS = ['old-hunter2-secret', 'new-hunter3-secret', 'retired-hunter4-secret']

/** A consumer on the fixture's Redis and Wrapper, with its own captured logs. */
async function consumerOf(t, f, signingSecret) {
  const { logger, lines } = captureLogger()
  const c = new SmartCRMConsumer({
    tenantId: f.tenantId,
    wrapperUrl: f.sim.url,
    redisUrl: f.redis.url,
    heartbeatMs: 500,
    signingSecret,
    logger,
  })
  t.teardown(() => c.shutdown())
  await c.initialize()
  c.logs = lines
  return c
}

function publisherOf(t, f, signingSecret) {
  const p = createPublisher({ redisUrl: f.redis.url, tenantId: f.tenantId, signingSecret })
  t.teardown(() => p.close())
  return p
}

/** Publishes `config-changed` {configId: id} and waits until every consumer shows it. */
async function flows(pub, consumers, id) {
  await pub.publish('configs', 'config-changed', { configId: id, config: id })
  for (const c of consumers) {
    await waitFor(() => c.getActiveConfig(id) === id, { message: `${id} applied` })
  }
}

function noSecretsIn(t, consumer) {
  const surfaces = [
    JSON.stringify(consumer.getMetrics()),
    consumer.metricsText(),
    JSON.stringify(consumer.health()),
    consumer.logs.map((l) => l.msg).join('\n'),
  ]
  for (const text of surfaces) {
    for (const s of SECRETS) t.false(text.includes(s), `a secret leaked: ${text.slice(0, 200)}`)
  }
}

test('a publisher signs with the first secret of its list; only a consumer holding it accepts', async (t) => {
  const [OLD, NEW] = SECRETS
  const f = await setup(t, { init: false })
  await f.consumer.shutdown()
  const cNew = await consumerOf(t, f, NEW)
  const cOld = await consumerOf(t, f, OLD)
  const rotating = publisherOf(t, f, [NEW, OLD])
  await flows(rotating, [cNew], 'by-new')
  const legacy = publisherOf(t, f, OLD)
  await flows(legacy, [cOld], 'by-old')
  t.is(cOld.getActiveConfig('by-new'), null, 'signed with the first secret only')
  t.is(cOld.getMetrics().eventsRejected.badSignature, 1)
  // cNew handles the legacy message in its own time: wait for its verdict
  await waitFor(() => cNew.getMetrics().eventsRejected.badSignature === 1, {
    message: "cNew's rejection of the legacy message",
  })
  t.is(cNew.getActiveConfig('by-old'), null)
  for (const x of [cNew, cOld]) noSecretsIn(t, x)
})

test('rotating the signing secret across consumers and a publisher rejects no event', async (t) => {
  const [OLD, NEW] = SECRETS
  const f = await setup(t, { init: false })
  await f.consumer.shutdown() // the fixture's unsigned consumer is not used

  // 1. everything on the old secret (the array form with one entry)
  const a = await consumerOf(t, f, [OLD])
  const p1 = publisherOf(t, f, OLD)
  await flows(p1, [a], 'step-1')

  // 2. consumers learn the new secret first (a rolling restart: b starts, a stops)
  const b = await consumerOf(t, f, [NEW, OLD])
  await flows(p1, [a, b], 'step-2')
  await a.shutdown()

  // 3. the publisher signs with the new secret, still listing the old one
  const p2 = publisherOf(t, f, [NEW, OLD])
  await flows(p2, [b], 'step-3')
  await p1.close()

  // 4. consumers drop the old secret
  const c = await consumerOf(t, f, [NEW])
  await flows(p2, [b, c], 'step-4')
  await b.shutdown()
  await flows(p2, [c], 'step-5')

  for (const x of [a, b, c]) t.is(x.getMetrics().eventsRejected.badSignature, 0)

  // A retired or wrong secret is still refused.
  const stale = publisherOf(t, f, [OLD, NEW])
  await stale.publish('configs', 'config-changed', { configId: 'by-old', config: 1 })
  const wrong = publisherOf(t, f, 'wrong')
  await wrong.publish('configs', 'config-changed', { configId: 'by-wrong', config: 1 })
  await flows(p2, [c], 'step-6')
  t.is(c.getMetrics().eventsRejected.badSignature, 2)
  t.is(c.getActiveConfig('by-old'), null)
  t.is(c.getActiveConfig('by-wrong'), null)
  for (const x of [a, b, c]) noSecretsIn(t, x)
})

const BAD_SECRETS = [
  ['', RangeError],
  [[], RangeError],
  [['ok-hunter2-secret', ''], RangeError],
  [['ok-hunter2-secret', 42], TypeError],
  [42, TypeError],
  [{ secret: 'hunter2' }, TypeError],
  [Array.from({ length: 17 }, (_, i) => `hunter2-${i}`), RangeError],
]

function checkSecretErrors(t, make, cases) {
  for (const [signingSecret, Cls] of cases) {
    const label = JSON.stringify(signingSecret)
    const err = t.throws(() => make(signingSecret), { instanceOf: Cls }, label)
    t.true(err.message.includes('`signingSecret'), `${label}: ${err.message}`)
    t.false(err.message.includes('hunter2'), `${label}: ${err.message}`)
  }
}

const CONSUMER_BASE = {
  tenantId: 'acme',
  wrapperUrl: 'http://127.0.0.1:9',
  logger: captureLogger().logger,
}

test('publisher signingSecret: a string or a non-empty list of non-empty strings; errors name it, never echo it', (t) => {
  checkSecretErrors(
    t,
    (signingSecret) =>
      createPublisher({ tenantId: 'acme', redisUrl: 'redis://127.0.0.1:9', signingSecret }),
    BAD_SECRETS,
  )
  createPublisher({ tenantId: 'acme', signingSecret: ['a', 'b'] }).close()
  createPublisher({ tenantId: 'acme', signingSecret: 'a' }).close()
})

test('consumer signingSecret as a string: errors name it, never echo it', (t) => {
  checkSecretErrors(
    t,
    (signingSecret) => new SmartCRMConsumer({ ...CONSUMER_BASE, signingSecret }),
    BAD_SECRETS.filter(([v]) => !Array.isArray(v)),
  )
})

test('consumer signingSecret as a list: validated, errors name it, never echo it', (t) => {
  checkSecretErrors(
    t,
    (signingSecret) => new SmartCRMConsumer({ ...CONSUMER_BASE, signingSecret }),
    BAD_SECRETS.filter(([v]) => Array.isArray(v)),
  )
  const ok = new SmartCRMConsumer({ ...CONSUMER_BASE, signingSecret: ['a', 'b'] })
  ok.shutdown()
})

test('maxClockSkewMs: validated, named in errors', (t) => {
  const base = {
    tenantId: 'acme',
    wrapperUrl: 'http://127.0.0.1:9',
    logger: captureLogger().logger,
  }
  for (const [v, Cls] of [
    [-1, RangeError],
    [1.5, RangeError],
    [300_001, RangeError],
    ['1000', TypeError],
  ]) {
    const err = t.throws(() => new SmartCRMConsumer({ ...base, maxClockSkewMs: v }), {
      instanceOf: Cls,
    })
    t.true(err.message.includes('`maxClockSkewMs`'), err.message)
  }
  for (const v of [0, 30_000, 300_000]) {
    const c = new SmartCRMConsumer({ ...base, maxClockSkewMs: v })
    c.shutdown()
  }
  t.pass()
})

/**
 * A fresh ("restarted") signed consumer with a 500 ms skew allowance, not yet
 * initialized, and a signed event stamped two seconds ago (as if captured off
 * the wire and replayed).
 */
async function restartedWithCapture(t, secret, eventId) {
  const f = await setup(t, { init: false })
  await f.consumer.shutdown()
  const captured = {
    eventId,
    eventType: 'user-status-changed',
    tenantId: f.tenantId,
    timestamp: new Date(Date.now() - 2000).toISOString(),
    data: { userId: 'u-alice', status: 'reactivated-by-replay' },
  }
  captured.signature = signMessage(captured, secret)
  const c = new SmartCRMConsumer({
    tenantId: f.tenantId,
    wrapperUrl: f.sim.url,
    redisUrl: f.redis.url,
    signingSecret: secret,
    maxClockSkewMs: 500,
    logger: captureLogger().logger,
  })
  t.teardown(() => c.shutdown())
  return { f, c, captured }
}

test('a restarted consumer rejects a replayed signed event older than its load', async (t) => {
  const SECRET = SECRETS[0]
  const { f, c, captured } = await restartedWithCapture(t, SECRET, 'captured-1')
  await c.initialize()
  const before = c.getUserStatus('u-alice')
  await f.publish('users', captured)
  const marker = {
    eventId: 'marker-1',
    eventType: 'config-changed',
    tenantId: f.tenantId,
    timestamp: new Date().toISOString(),
    data: { configId: 'marker', config: 1 },
  }
  marker.signature = signMessage(marker, SECRET)
  await f.publish('configs', marker)
  await waitFor(() => c.getActiveConfig('marker') === 1, { message: 'the marker' })
  t.is(c.getUserStatus('u-alice'), before, 'the replayed event was not applied')
  t.is(c.getMetrics().eventsRejected.expired, 1)
})

test('a replay that arrives while a restarted consumer is still loading is rejected too', async (t) => {
  const { f, c, captured } = await restartedWithCapture(t, SECRETS[0], 'captured-2')
  const gate = f.sim.gate('/api/users/access')
  const ready = c.initialize()
  await waitFor(() => gate.waiting === 1, { message: 'the gated snapshot request' })
  t.is(await f.publish('users', captured), 1, 'subscribed before the load')
  await waitFor(
    () => {
      const m = c.getMetrics()
      return m.eventsApplied + m.eventsRejected.expired >= 1
    },
    { message: 'the replayed event handled' },
  )
  gate.release()
  await ready
  t.is(c.getUserStatus('u-alice'), f.sim.data.users.get('u-alice').status)
  t.is(c.getMetrics().eventsRejected.expired, 1)
})
