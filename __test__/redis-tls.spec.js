'use strict'
// TLS (SPEC §6): `rediss://` with `redisTls: { ca, cert, key, servername }`
// (PEM strings) for a private CA and mutual TLS, for the consumer and for
// createPublisher. A wrong CA, an expired or mismatched certificate, a missing
// client certificate or a plain server behind `rediss://` rejects
// `initialize()` with code REDIS_UNAVAILABLE and a message that says TLS;
// no password, key or CA text ever appears in an error, a log line or metrics.
//
// Real TLS-only redis-servers with certificates made by the openssl CLI
// (tools/test-helpers/topologies.js).

const test = require('ava')

const { makeCerts, startTlsRedis } = require('../tools/test-helpers/topologies.js')
const { SmartCRMConsumer, createPublisher } = require('../lib/index.js')
const { captureLogger, waitFor } = require('./helpers/fixture.js')
const {
  world,
  connected,
  disconnected,
  assertNoSecrets,
  newTenantId,
} = require('./helpers/topology.js')
const { startWrapperSim, defaultSeed } = require('../tools/wrapper-sim.js')

const PASSWORD = 'tls-hunter2-password'

let certsPromise = null
/** One set of certificates for the file (made once, about 0.2 s). */
const certs = () => (certsPromise ??= makeCerts())

test.after.always(async () => {
  if (certsPromise) (await certsPromise).remove()
})

async function tlsRedis(t, options = {}) {
  const server = await startTlsRedis({ certs: await certs(), requirePass: PASSWORD, ...options })
  t.teardown(() => server.stop())
  return server
}

const withPassword = (url) => url.replace('rediss://', `rediss://:${PASSWORD}@`)

/** Base64 body lines of the PEM texts: none may appear anywhere. */
function pemFragments(c) {
  const lines = []
  for (const pem of [c.ca, c.key, c.clientKey, c.clientCert, c.otherCa]) {
    lines.push(
      ...pem
        .split('\n')
        .filter((l) => l.length > 40 && !l.startsWith('-----'))
        .slice(0, 2),
    )
  }
  return lines
}

test('rediss:// with a private CA: the consumer and the publisher connect, events flow, a restart is a reconnect with resync', async (t) => {
  const c = await certs()
  const server = await tlsRedis(t)
  const redis = { redisUrl: withPassword(server.url), redisTls: { ca: c.ca } }
  const w = await world(t, { redis })
  t.true(w.consumer.isConnected)
  t.is(
    await w.pub.publish('configs', 'config-changed', { configId: 'over-tls', config: 1 }),
    1,
    'the publisher reaches the consumer over TLS',
  )
  await waitFor(() => w.consumer.getActiveConfig('over-tls') === 1, { message: 'the event' })
  const reply = await server.command(['PUBSUB', 'NUMSUB', ...w.channels])
  t.deepEqual(
    reply.filter((_, i) => i % 2 === 1),
    w.channels.map(() => 1),
    'one subscription per channel',
  )

  const down = disconnected(w.consumer)
  await server.kill()
  await down
  w.sim.data.users.delete('u-carol')
  const up = connected(w.consumer, 40_000)
  await server.restart()
  await up
  t.is(w.consumer.getUserStatus('u-carol'), null, 'resynced after the TLS reconnect')
  await w.marker()
  assertNoSecrets(t, w.consumer, { logs: w.logs, secrets: [PASSWORD, ...pemFragments(c)] })
})

test('servername: the name checked against the certificate when the URL holds an address', async (t) => {
  const c = await certs()
  const server = await tlsRedis(t, { serverCert: 'wrongName' })
  // the certificate is for wrong.example; the URL says 127.0.0.1
  const w = await world(t, {
    redis: {
      redisUrl: withPassword(server.url),
      redisTls: { ca: c.ca, servername: 'wrong.example' },
    },
  })
  t.true(w.consumer.isConnected)
  await w.marker()
})

test('mutual TLS: the consumer and the publisher present a client certificate when the server requires one', async (t) => {
  const c = await certs()
  const server = await tlsRedis(t, { authClients: true })
  const w = await world(t, {
    redis: {
      redisUrl: withPassword(server.url),
      redisTls: { ca: c.ca, cert: c.clientCert, key: c.clientKey },
    },
  })
  t.true(w.consumer.isConnected)
  // the publisher (same options) presents the client certificate too
  t.is(await w.pub.publish('configs', 'config-changed', { configId: 'mtls', config: 2 }), 1)
  await waitFor(() => w.consumer.getActiveConfig('mtls') === 2, { message: 'the event' })
  assertNoSecrets(t, w.consumer, { logs: w.logs, secrets: [PASSWORD, ...pemFragments(c)] })
})

/** Each case: what the client is given, and what the server is. */
const failures = [
  ['no CA given: the private CA is not trusted', {}, () => undefined],
  ['a wrong CA', {}, (c) => ({ ca: c.otherCa })],
  ['a certificate for another name', { serverCert: 'wrongName' }, (c) => ({ ca: c.ca })],
  ['an expired certificate', { serverCert: 'expired' }, (c) => ({ ca: c.ca })],
  [
    'a servername the certificate does not cover',
    {},
    (c) => ({ ca: c.ca, servername: 'other.example' }),
  ],
  ['no client certificate where one is required', { authClients: true }, (c) => ({ ca: c.ca })],
  ['a plain (non-TLS) server behind rediss://', { plain: true }, (c) => ({ ca: c.ca })],
]

for (const [what, serverOptions, clientTls] of failures) {
  test(`TLS failure, ${what}: initialize() rejects with REDIS_UNAVAILABLE saying TLS, no secret shown`, async (t) => {
    const c = await certs()
    const server = await tlsRedis(t, serverOptions)
    const tenantId = newTenantId()
    const sim = await startWrapperSim({ tenantId, data: defaultSeed() })
    t.teardown(() => sim.stop())
    const { logger, lines } = captureLogger()
    const consumer = new SmartCRMConsumer({
      tenantId,
      wrapperUrl: sim.url,
      redisUrl: withPassword(server.url),
      redisTls: clientTls(c),
      initTimeoutMs: 2500,
      logger,
    })
    t.teardown(() => consumer.shutdown())
    const started = Date.now()
    const err = await t.throwsAsync(consumer.initialize(), { code: 'REDIS_UNAVAILABLE' })
    t.true(Date.now() - started < 6000, 'rejects about initTimeoutMs, not later')
    t.regex(err.message, /TLS/i, `the message says it is TLS: ${err.message}`)
    t.like(consumer.health(), { ready: false, connected: false, degraded: true })
    assertNoSecrets(t, consumer, {
      logs: lines,
      errors: [err],
      secrets: [PASSWORD, ...pemFragments(c)],
    })
    t.false(err.message.includes('BEGIN'), 'no PEM text')

    // the publisher fails the same way
    const pub = createPublisher({
      tenantId,
      redisUrl: withPassword(server.url),
      redisTls: clientTls(c),
      connectTimeoutMs: 1500,
    })
    t.teardown(() => pub.close())
    const perr = await t.throwsAsync(pub.publish('control', 'resync-required'), {
      code: 'REDIS_UNAVAILABLE',
    })
    t.regex(perr.message, /TLS/i, perr.message)
    t.false(perr.message.includes(PASSWORD), perr.message)
  })
}
