'use strict'
// Soak test (outside CI): continuous events, lookups and reference misses over a
// key space larger than the memory bound, for 10 minutes by default.
//
//   node scripts/soak.js [--minutes 10] [--rate 1000] [--out reports/SOAK.md]
//
// The consumer runs in a child process (so its RSS is its own); this process
// runs redis-server, the Wrapper simulator and the publisher. Passes when RSS at
// the end is within 10 % of RSS at minute 2, and every event published was
// applied or counted as rejected.

const { fork } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const { startRedis, quietLogger } = require('../tools/test-helpers/index.js')
const { connectRedis } = require('../__test__/helpers/resp.js')
const { startWrapperSim, defaultSeed } = require('../tools/wrapper-sim.js')

const args = process.argv.slice(2)
const arg = (name, def) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : def
}
const MINUTES = Number(arg('minutes', 10))
const RATE = Number(arg('rate', 1000))
const OUT = path.resolve(arg('out', path.join(__dirname, '..', 'reports', 'SOAK.md')))
const TENANT = 'soak-tenant'
const PROFILES = 40_000 // ~1 KB each: ~40 MB, against a 16 MiB bound
const OPS = 1000
const MAX_REFERENCE_BYTES = 16 * 1024 * 1024

function child() {
  const { SmartCRMConsumer } = require('../lib/index.js')
  const { wrapperUrl, redisUrl } = JSON.parse(process.env.SOAK)
  const consumer = new SmartCRMConsumer({
    tenantId: TENANT,
    wrapperUrl,
    redisUrl,
    maxReferenceBytes: MAX_REFERENCE_BYTES,
    ttl: { userProfiles: 5000 },
    logger: quietLogger(),
  })
  let lookups = 0
  let refs = 0
  let refErrors = 0
  let running = true
  consumer.initialize().then(() => {
    process.send({ t: 'ready' })
    const spin = () => {
      if (!running) return
      for (let i = 0; i < 200; i++) {
        consumer.getCreditCost(`op.${i % OPS}`)
        consumer.checkPermission('u-alice', 'crm.leads.create')
        lookups += 2
      }
      setImmediate(spin)
    }
    spin()
    const misses = setInterval(() => {
      for (let i = 0; i < 50; i++) {
        refs++
        consumer.getUserProfile(`p${Math.floor(Math.random() * PROFILES)}`).catch(() => refErrors++)
      }
    }, 100)
    process.on('message', async (m) => {
      if (m.t === 'sample') {
        process.send({
          t: 'sample',
          rss: process.memoryUsage().rss,
          heap: process.memoryUsage().heapUsed,
          metrics: consumer.getMetrics(),
          lookups,
          refs,
          refErrors,
        })
      } else if (m.t === 'stop') {
        running = false
        clearInterval(misses)
        process.send({
          t: 'final',
          rss: process.memoryUsage().rss,
          metrics: consumer.getMetrics(),
          lookups,
          refs,
          refErrors,
        })
        await consumer.shutdown()
        process.disconnect()
      }
    })
  })
}

async function main() {
  const redis = await startRedis()
  const data = defaultSeed()
  const sim = await startWrapperSim({ tenantId: TENANT, data })
  for (let i = 0; i < OPS; i++)
    data.credits.set(`op.${i}`, { operationCode: `op.${i}`, creditCost: 1 })
  const pad = 'x'.repeat(900)
  for (let i = 0; i < PROFILES; i++)
    data.profiles.set(`p${i}`, { userId: `p${i}`, name: `User ${i}`, pad })
  const pub = await connectRedis(redis.url)
  const proc = fork(__filename, ['--child'], {
    env: { ...process.env, SOAK: JSON.stringify({ wrapperUrl: sim.url, redisUrl: redis.url }) },
  })
  const waitMsg = (t) =>
    new Promise((resolve) =>
      proc.on('message', function h(m) {
        if (m.t === t) {
          proc.off('message', h)
          resolve(m)
        }
      }),
    )
  await waitMsg('ready')
  console.log(`soak: ${MINUTES} min at ${RATE} events/s; consumer pid ${proc.pid}`)

  let published = 0
  let hostile = 0
  let seq = 0
  const channel = (topic) => `crm:${TENANT}:${topic}`
  const one = () => {
    const r = Math.random()
    const id = `soak-${++seq}`
    if (r < 0.7)
      return [
        'credit-configs',
        {
          eventId: id,
          eventType: 'credit-config-changed',
          tenantId: TENANT,
          data: { operationCode: `op.${seq % OPS}`, newValue: seq % 100 },
        },
      ]
    if (r < 0.8)
      return [
        'users',
        {
          eventId: id,
          eventType: 'user-changed',
          tenantId: TENANT,
          data: { userId: `p${seq % PROFILES}` },
        },
      ]
    if (r < 0.85)
      return [
        'cache',
        {
          eventId: id,
          eventType: 'cache-invalidate',
          tenantId: TENANT,
          data: { keys: [`user:p${(seq * 7) % PROFILES}`] },
        },
      ]
    if (r < 0.9)
      return [
        'roles',
        {
          eventId: id,
          eventType: 'role-changed',
          tenantId: TENANT,
          data: { roleId: 'sales', permissions: ['crm.leads.*', `crm.x${seq % 10}.read`] },
        },
      ]
    hostile++
    return r < 0.95
      ? ['credit-configs', '{not json']
      : [
          'credit-configs',
          {
            eventId: id,
            eventType: 'credit-config-changed',
            tenantId: 'other',
            data: { operationCode: 'op.1', newValue: 1 },
          },
        ]
  }
  const tick = 50 // ms
  const perTick = Math.max(1, Math.round((RATE * tick) / 1000))
  const pubTimer = setInterval(() => {
    for (let i = 0; i < perTick; i++) {
      const [topic, msg] = one()
      published++
      pub.publish(channel(topic), typeof msg === 'string' ? msg : JSON.stringify(msg))
    }
  }, tick)

  const samples = []
  const started = Date.now()
  for (let minute = 1; minute <= MINUTES; minute++) {
    await new Promise((r) => setTimeout(r, Math.max(0, started + minute * 60_000 - Date.now())))
    proc.send({ t: 'sample' })
    const s = await waitMsg('sample')
    samples.push({
      minute,
      rss: s.rss,
      heap: s.heap,
      referenceBytes: s.metrics.referenceCacheBytes,
      referenceEntries: s.metrics.referenceCacheSize,
      applied: s.metrics.eventsApplied,
    })
    console.log(
      `minute ${minute}: rss ${(s.rss / 2 ** 20).toFixed(1)} MiB (V8 heap ${(s.heap / 2 ** 20).toFixed(1)} MiB), reference ${(s.metrics.referenceCacheBytes / 2 ** 20).toFixed(1)} MiB in ${s.metrics.referenceCacheSize} entries, ${published} published, ${s.metrics.eventsApplied} applied`,
    )
  }
  clearInterval(pubTimer)
  // Let the last events arrive: the consumer counts every message it receives.
  const deadline = Date.now() + 30_000
  let final
  for (;;) {
    proc.send({ t: 'sample' })
    final = await waitMsg('sample')
    if (final.metrics.eventsReceived >= published || Date.now() > deadline) break
    await new Promise((r) => setTimeout(r, 200))
  }
  proc.send({ t: 'stop' })
  final = await waitMsg('final')
  await new Promise((r) => proc.on('exit', r))
  pub.destroy()
  await sim.stop()
  await redis.stop()

  const m = final.metrics
  const rejected = Object.values(m.eventsRejected).reduce((a, b) => a + b, 0)
  const at2 = samples.find((s) => s.minute === Math.min(2, MINUTES)).rss
  const end = final.rss
  const growth = (end - at2) / at2
  const accounted = m.eventsApplied + rejected === published && m.eventsReceived === published
  const rssOk = Math.abs(growth) <= 0.1
  const mib = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`
  const lines = [
    '# Soak results',
    '',
    `- Command: \`node scripts/soak.js --minutes ${MINUTES} --rate ${RATE}\``,
    `- Date: ${new Date().toISOString()}; Node ${process.version}; release addon`,
    `- Load: ${RATE} events/s (70 % cost changes, 10 % user-changed, 5 % cache-invalidate, 5 % role changes, 10 % hostile), ~400k critical lookups/s in a spinning loop, 500 profile reads/s over ${PROFILES.toLocaleString('en')} profiles of ~1 KB (~${Math.round((PROFILES * 1000) / 2 ** 20)} MiB) against maxReferenceBytes ${mib(MAX_REFERENCE_BYTES)}, profile TTL 5 s`,
    '',
    '| minute | RSS | V8 heap used | reference cache | entries | events applied |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...samples.map(
      (s) =>
        `| ${s.minute} | ${mib(s.rss)} | ${mib(s.heap)} | ${mib(s.referenceBytes)} | ${s.referenceEntries} | ${s.applied} |`,
    ),
    '',
    `- RSS at minute 2: ${mib(at2)}; at the end: ${mib(end)}; change ${(growth * 100).toFixed(1)} % (limit ±10 %): **${rssOk ? 'pass' : 'FAIL'}**`,
    `- Events published ${published} (of them hostile ${hostile}); received ${m.eventsReceived}; applied ${m.eventsApplied}; rejected ${rejected} (${Object.entries(
      m.eventsRejected,
    )
      .filter(([, v]) => v)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}): **${accounted ? 'every event accounted for' : 'MISMATCH'}**`,
    `- Lookups ${final.lookups.toLocaleString('en')}; profile reads ${final.refs.toLocaleString('en')} (errors ${final.refErrors}); Wrapper requests ${m.wrapperRequests}; reconnects ${m.reconnects}`,
    '',
  ]
  fs.mkdirSync(path.dirname(OUT), { recursive: true })
  fs.writeFileSync(OUT, lines.join('\n'))
  console.log(lines.join('\n'))
  process.exitCode = rssOk && accounted ? 0 : 1
}

if (process.argv.includes('--child')) child()
else
  main().catch((err) => {
    console.error(err)
    process.exitCode = 1
  })
