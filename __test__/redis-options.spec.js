'use strict'
// The Redis options of SPEC §6, validated synchronously by the constructor
// and by createPublisher: exactly one of `redisUrl`, `redisSentinel`,
// `redisCluster`; malformed sentinel, cluster and TLS options are named in a
// TypeError/RangeError (nested names as `redisSentinel.sentinels`, like
// `ttl.userProfiles`); passwords, keys and CA text are never echoed.

const test = require('ava')

const { SmartCRMConsumer, createPublisher } = require('../lib/index.js')
const { makeCerts } = require('../tools/test-helpers/topologies.js')
const { runNode } = require('./helpers/fixture.js')

const base = { tenantId: 'acme', wrapperUrl: 'http://127.0.0.1:9' }
const sentinelOk = { sentinels: ['127.0.0.1:26379', '10.0.0.2:26380'], masterName: 'mymaster' }
const clusterOk = { nodes: ['redis://127.0.0.1:7000', 'redis://10.0.0.2:7001'] }
const SECRET = 'hunter2-secret'

let certsPromise = null
const certs = () => (certsPromise ??= makeCerts())
test.after.always(async () => {
  if (certsPromise) (await certsPromise).remove()
})

/** Runs `fn` on the consumer constructor and on createPublisher. */
const both = [
  ['new SmartCRMConsumer', (o) => new SmartCRMConsumer({ ...base, ...o })],
  ['createPublisher', (o) => createPublisher({ tenantId: 'acme', ...o }).close()],
]

const conflicts = [
  [
    { redisUrl: 'redis://127.0.0.1:6390', redisSentinel: sentinelOk },
    ['redisUrl', 'redisSentinel'],
  ],
  [{ redisUrl: 'redis://127.0.0.1:6390', redisCluster: clusterOk }, ['redisUrl', 'redisCluster']],
  [{ redisSentinel: sentinelOk, redisCluster: clusterOk }, ['redisSentinel', 'redisCluster']],
  [
    { redisUrl: 'redis://127.0.0.1:6390', redisSentinel: sentinelOk, redisCluster: clusterOk },
    ['redisUrl', 'redisSentinel', 'redisCluster'],
  ],
]

for (const [who, make] of both) {
  for (const [options, names] of conflicts) {
    test(`${who}: exactly one of redisUrl/redisSentinel/redisCluster (${names.join(' + ')})`, (t) => {
      const err = t.throws(() => make(options))
      t.true(err instanceof TypeError || err instanceof RangeError, String(err))
      for (const name of names) t.true(err.message.includes(`\`${name}\``), err.message)
    })
  }
}

// [options, error class, the option named]
const invalid = [
  [{ redisSentinel: 42 }, TypeError, 'redisSentinel'],
  [{ redisSentinel: [] }, TypeError, 'redisSentinel'],
  [{ redisSentinel: { masterName: 'mymaster' } }, TypeError, 'redisSentinel.sentinels'],
  [
    { redisSentinel: { ...sentinelOk, sentinels: '127.0.0.1:26379' } },
    TypeError,
    'redisSentinel.sentinels',
  ],
  [{ redisSentinel: { ...sentinelOk, sentinels: [] } }, RangeError, 'redisSentinel.sentinels'],
  [{ redisSentinel: { ...sentinelOk, sentinels: [26379] } }, TypeError, 'redisSentinel.sentinels'],
  [
    { redisSentinel: { ...sentinelOk, sentinels: ['127.0.0.1'] } },
    RangeError,
    'redisSentinel.sentinels',
  ],
  [
    { redisSentinel: { ...sentinelOk, sentinels: ['127.0.0.1:0'] } },
    RangeError,
    'redisSentinel.sentinels',
  ],
  [
    { redisSentinel: { ...sentinelOk, sentinels: ['127.0.0.1:65536'] } },
    RangeError,
    'redisSentinel.sentinels',
  ],
  [
    { redisSentinel: { ...sentinelOk, sentinels: ['127.0.0.1:port'] } },
    RangeError,
    'redisSentinel.sentinels',
  ],
  [
    { redisSentinel: { ...sentinelOk, sentinels: ['a b:26379'] } },
    RangeError,
    'redisSentinel.sentinels',
  ],
  [{ redisSentinel: { sentinels: sentinelOk.sentinels } }, TypeError, 'redisSentinel.masterName'],
  [{ redisSentinel: { ...sentinelOk, masterName: '' } }, RangeError, 'redisSentinel.masterName'],
  [{ redisSentinel: { ...sentinelOk, masterName: 7 } }, TypeError, 'redisSentinel.masterName'],
  [{ redisSentinel: { ...sentinelOk, username: 7 } }, TypeError, 'redisSentinel.username'],
  [{ redisSentinel: { ...sentinelOk, password: 7 } }, TypeError, 'redisSentinel.password'],
  [
    { redisSentinel: { ...sentinelOk, sentinelPassword: 7 } },
    TypeError,
    'redisSentinel.sentinelPassword',
  ],
  [{ redisSentinel: { ...sentinelOk, db: -1 } }, RangeError, 'redisSentinel.db'],
  [{ redisSentinel: { ...sentinelOk, db: 1.5 } }, RangeError, 'redisSentinel.db'],
  [{ redisSentinel: { ...sentinelOk, db: '0' } }, TypeError, 'redisSentinel.db'],
  [{ redisSentinel: { ...sentinelOk, tls: 'yes' } }, TypeError, 'redisSentinel.tls'],
  [{ redisSentinel: { ...sentinelOk, masterNmae: 'x' } }, TypeError, 'redisSentinel.masterNmae'],
  [{ redisCluster: 42 }, TypeError, 'redisCluster'],
  [{ redisCluster: ['redis://127.0.0.1:7000'] }, TypeError, 'redisCluster'],
  [{ redisCluster: {} }, TypeError, 'redisCluster.nodes'],
  [{ redisCluster: { nodes: 'redis://127.0.0.1:7000' } }, TypeError, 'redisCluster.nodes'],
  [{ redisCluster: { nodes: [] } }, RangeError, 'redisCluster.nodes'],
  [{ redisCluster: { nodes: [7000] } }, TypeError, 'redisCluster.nodes'],
  [{ redisCluster: { nodes: ['http://127.0.0.1:7000'] } }, RangeError, 'redisCluster.nodes'],
  [{ redisCluster: { nodes: ['not a url'] } }, RangeError, 'redisCluster.nodes'],
  [{ redisCluster: { nodes: ['redis://127.0.0.1:99999'] } }, RangeError, 'redisCluster.nodes'],
  [
    { redisCluster: { ...clusterOk, node: ['redis://127.0.0.1:7000'] } },
    TypeError,
    'redisCluster.node',
  ],
  [{ redisTls: 42 }, TypeError, 'redisTls'],
  [{ redisTls: { ca: 42 } }, TypeError, 'redisTls.ca'],
  [{ redisTls: { ca: 'not a certificate' } }, RangeError, 'redisTls.ca'],
  [{ redisTls: { servername: 42 } }, TypeError, 'redisTls.servername'],
  [{ redisTls: { servername: '' } }, RangeError, 'redisTls.servername'],
  // this build cannot skip certificate checks (like `#insecure`, refused at once)
  [{ redisTls: { rejectUnauthorized: false } }, TypeError, 'redisTls.rejectUnauthorized'],
]

/** The options without the valid parts every case shares, for a readable title. */
function shortLabel(options) {
  const text = JSON.stringify(options, (k, v) =>
    v === sentinelOk.sentinels ? '…' : k === 'masterName' && v === 'mymaster' ? undefined : v,
  )
  return text.length > 100 ? `${text.slice(0, 100)}…` : text
}

for (const [who, make] of both) {
  invalid.forEach(([options, Cls, name], i) => {
    test(`${who}: invalid \`${name}\` (#${i}): ${shortLabel(options)}`, (t) => {
      const err = t.throws(() => make(options), { instanceOf: Cls })
      t.true(err.message.includes(`\`${name}\``), err.message)
    })
  })
}

test('TLS certificate and key: PEM checked at once, a cert needs its key and a key its cert, no key text echoed', async (t) => {
  const c = await certs()
  const url = { redisUrl: 'rediss://127.0.0.1:6390' }
  const keyBody = c.clientKey.split('\n')[1]
  const cases = [
    [{ ca: c.ca, cert: c.clientCert }, 'redisTls.key'],
    [{ ca: c.ca, key: c.clientKey }, 'redisTls.cert'],
    [{ ca: c.ca, cert: 'not a certificate', key: c.clientKey }, 'redisTls.cert'],
    [
      {
        ca: c.ca,
        cert: c.clientCert,
        key: `-----BEGIN PRIVATE KEY-----\n${SECRET}\n-----END PRIVATE KEY-----\n`,
      },
      'redisTls.key',
    ],
    [{ ca: c.ca, cert: c.clientCert, key: 7 }, 'redisTls.key'],
    [{ ca: `-----BEGIN CERTIFICATE-----\n${SECRET}\n-----END CERTIFICATE-----\n` }, 'redisTls.ca'],
  ]
  for (const [who, make] of both) {
    for (const [redisTls, name] of cases) {
      const err = t.throws(() => make({ ...url, redisTls }), undefined, `${who} ${name}`)
      t.true(err instanceof TypeError || err instanceof RangeError, `${who}: ${err}`)
      t.true(err.message.includes(`\`${name}\``), `${who}: ${err.message}`)
      t.false(err.message.includes(SECRET), `${who}: ${err.message}`)
      t.false(err.message.includes(keyBody), `${who}: key text echoed`)
      t.false(err.message.includes('BEGIN'), `${who}: PEM text echoed: ${err.message}`)
    }
    // valid: a CA alone, a client pair, a servername
    t.notThrows(() => make({ ...url, redisTls: { ca: c.ca } }), who)
    t.notThrows(
      () =>
        make({
          ...url,
          redisTls: {
            ca: c.ca,
            cert: c.clientCert,
            key: c.clientKey,
            servername: 'redis.internal',
          },
        }),
      who,
    )
    t.notThrows(
      () => make({ redisCluster: { nodes: ['rediss://127.0.0.1:7000'] }, redisTls: { ca: c.ca } }),
      who,
    )
    t.notThrows(
      () => make({ redisSentinel: { ...sentinelOk, tls: true }, redisTls: { ca: c.ca } }),
      who,
    )
  }
})

test('secrets in Redis options are never echoed', (t) => {
  const secretCases = [
    { redisSentinel: { ...sentinelOk, password: SECRET, db: -1 } },
    { redisSentinel: { ...sentinelOk, sentinelPassword: SECRET, masterName: '' } },
    { redisSentinel: { ...sentinelOk, sentinels: [`user:${SECRET}@127.0.0.1:26379`] } },
    {
      redisSentinel: { ...sentinelOk, password: SECRET },
      redisUrl: `redis://:${SECRET}@127.0.0.1:6390`,
    },
    { redisCluster: { nodes: [`redis://:${SECRET}@127.0.0.1:notaport`] } },
    { redisCluster: { nodes: [`http://:${SECRET}@127.0.0.1:7000`] } },
    {
      redisCluster: { nodes: [`redis://:${SECRET}@127.0.0.1:7000`] },
      redisUrl: `redis://:${SECRET}@h:1`,
    },
  ]
  for (const [who, make] of both) {
    for (const options of secretCases) {
      const err = t.throws(
        () => make(options),
        undefined,
        `${who} ${JSON.stringify(Object.keys(options))}`,
      )
      t.false(err.message.includes(SECRET), `${who}: ${err.message}`)
      t.false(err.message.includes('hunter2'), `${who}: ${err.message}`)
    }
  }
})

test('valid Sentinel and Cluster options are accepted; undefined means absent', (t) => {
  const valid = [
    { redisSentinel: sentinelOk },
    {
      redisSentinel: {
        ...sentinelOk,
        username: 'app',
        password: 'pw',
        sentinelPassword: 'spw',
        db: 3,
        tls: false,
      },
    },
    { redisSentinel: { sentinels: ['redis-sentinel.internal:26379'], masterName: 'my.master-1' } },
    { redisSentinel: sentinelOk, redisUrl: undefined, redisCluster: undefined },
    { redisCluster: clusterOk },
    { redisCluster: { nodes: ['redis://app:pw@127.0.0.1:7000'] } },
    { redisCluster: { nodes: ['redis://redis-0.cluster.internal:6379'] }, redisUrl: undefined },
  ]
  for (const [who, make] of both) {
    for (const options of valid)
      t.notThrows(() => make(options), `${who} ${JSON.stringify(options)}`)
  }
  const c = new SmartCRMConsumer({ ...base, redisSentinel: sentinelOk })
  t.false(c.isConnected)
  t.false(c.health().ready)
})

test('REDIS_URL in the environment does not conflict with redisSentinel or redisCluster given as options', async (t) => {
  const out = await runNode(
    { REDIS_URL: 'redis://127.0.0.1:6390', WRAPPER_URL: 'http://127.0.0.1:9' },
    `const { SmartCRMConsumer, createPublisher } = require('./lib/index.js')
     new SmartCRMConsumer({ tenantId: 'acme', redisSentinel: ${JSON.stringify(sentinelOk)} })
     new SmartCRMConsumer({ tenantId: 'acme', redisCluster: ${JSON.stringify(clusterOk)} })
     createPublisher({ tenantId: 'acme', redisSentinel: ${JSON.stringify(sentinelOk)} }).close()
     createPublisher({ tenantId: 'acme', redisCluster: ${JSON.stringify(clusterOk)} }).close()
     console.log('ok')`,
  )
  t.is(out, 'ok')
})
