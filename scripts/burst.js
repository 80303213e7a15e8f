'use strict'
// Burst check (outside CI): 1,000,000 events published as fast as Redis takes
// them, to a consumer whose 'change' listener is slow (it blocks the JS thread
// for 20 ms per call). Shows that memory stays bounded and what the overflow
// behaviour does (SPEC §3; ARCHITECTURE.md, invariant 5).
//
//   node scripts/burst.js [--events 1000000] [--out reports/BURST.md]
//
// The consumer runs in a child process (so its RSS is its own); this process
// runs redis-server, the Wrapper simulator and the publisher (pipelined
// PUBLISH on a raw RESP connection). RSS is sampled every 100 ms.

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
const EVENTS = Number(arg('events', 1_000_000))
const OUT = arg('out', null)
const TENANT = 'burst-tenant'
const OPS = 1000
// The listener blocks the JS thread for 5 ms every 100 calls: at most about
// 20,000 'change' notices a second, far below the burst's rate.
const SLOW_EVERY = 100
const SLOW_MS = 5

function child() {
  const { SmartCRMConsumer } = require('../lib/index.js')
  const { wrapperUrl, redisUrl } = JSON.parse(process.env.BURST)
  const consumer = new SmartCRMConsumer({
    tenantId: TENANT,
    wrapperUrl,
    redisUrl,
    resyncJitterMs: 0,
    logger: quietLogger(),
  })
  let changes = 0
  const resyncs = []
  consumer.on('change', () => {
    if (++changes % SLOW_EVERY !== 0) return
    const until = Date.now() + SLOW_MS
    while (Date.now() < until);
  })
  consumer.on('resync', (e) => resyncs.push(e.reason))
  consumer.initialize().then(() => process.send({ kind: 'ready' }))
  let peak = 0
  setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss)
  }, 100).unref()
  process.on('message', async (m) => {
    if (m.kind === 'sample') {
      const rss = process.memoryUsage().rss
      peak = Math.max(peak, rss)
      process.send({
        kind: 'sample',
        rss,
        peak,
        metrics: consumer.getMetrics(),
        last: consumer.getCreditCost('op.0'),
        changes,
        resyncs,
      })
    } else if (m.kind === 'stop') {
      await consumer.shutdown()
      process.exit(0)
    }
  })
}

async function main() {
  const redis = await startRedis()
  const data = defaultSeed()
  for (let i = 0; i < OPS; i++) {
    data.credits.set(`op.${i}`, { operationCode: `op.${i}`, creditCost: 1, isActive: true })
  }
  const sim = await startWrapperSim({ tenantId: TENANT, data })
  const proc = fork(__filename, ['--child'], {
    env: { ...process.env, BURST: JSON.stringify({ wrapperUrl: sim.url, redisUrl: redis.url }) },
  })
  const next = (kind) =>
    new Promise((resolve) => {
      const on = (m) => {
        if (m.kind !== kind) return
        proc.off('message', on)
        resolve(m)
      }
      proc.on('message', on)
    })
  const sample = () => {
    const p = next('sample')
    proc.send({ kind: 'sample' })
    return p
  }
  await next('ready')
  const before = await sample()
  const pub = await connectRedis(redis.url)
  const channel = `crm:${TENANT}:credit-configs`
  const started = Date.now()
  let peakDuring = before.rss
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      peakDuring = Math.max(peakDuring, (await sample()).peak)
      await new Promise((r) => setTimeout(r, 250))
    }
  })()
  const CHUNK = 10_000
  for (let sent = 0; sent < EVENTS; sent += CHUNK) {
    const batch = []
    for (let i = sent; i < Math.min(EVENTS, sent + CHUNK); i++) {
      const msg = JSON.stringify({
        eventType: 'credit-config-changed',
        tenantId: TENANT,
        data: { operationCode: `op.${i % OPS}`, newValue: i },
      })
      batch.push(pub.publish(channel, msg))
    }
    await Promise.all(batch)
  }
  const published = Date.now() - started
  // Done when nothing more arrives for a second and the consumer is connected
  // (every event applied, or the link was dropped on overflow and resynced).
  let s = await sample()
  let quietSince = Date.now()
  for (;;) {
    await new Promise((r) => setTimeout(r, 250))
    const now = await sample()
    if (now.metrics.eventsReceived !== s.metrics.eventsReceived) quietSince = Date.now()
    s = now
    if (s.metrics.connected && Date.now() - quietSince > 1000) break
    if (Date.now() - started > 300_000) break
  }
  sampling = false
  await sampler
  peakDuring = Math.max(peakDuring, s.peak)
  const settled = Date.now() - started
  const m = s.metrics
  const mib = (b) => `${(b / 1048576).toFixed(1)} MiB`
  const lines = [
    '# Burst: 1,000,000 events to a consumer with a slow change listener',
    '',
    `Command: \`node scripts/burst.js --events ${EVENTS}\` (${new Date().toISOString()}, ` +
      `load ${require('node:os')
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}).`,
    '',
    `The 'change' listener blocks the JS thread for ${SLOW_MS} ms every ${SLOW_EVERY} calls.`,
    '',
    '| figure | value |',
    '| --- | ---: |',
    `| events published (pipelined) | ${EVENTS.toLocaleString('en')} in ${published} ms |`,
    `| RSS before | ${mib(before.rss)} |`,
    `| RSS peak during the burst | ${mib(peakDuring)} |`,
    `| RSS after | ${mib(s.rss)} |`,
    `| events received / applied | ${m.eventsReceived.toLocaleString('en')} / ${m.eventsApplied.toLocaleString('en')} |`,
    `| queue overflows (counted) | ${m.queueOverflows} |`,
    `| reconnects (a push-queue overflow is a lost link) | ${m.reconnects} |`,
    `| 'change' listener calls | ${s.changes.toLocaleString('en')} |`,
    `| 'resync' events | ${s.resyncs.join(', ') || 'none'} |`,
    `| settled after | ${settled} ms |`,
    '',
  ]
  const text = lines.join('\n')
  console.log(text)
  if (OUT) fs.writeFileSync(path.resolve(OUT), text)
  proc.send({ kind: 'stop' })
  await new Promise((r) => proc.once('exit', r))
  pub.destroy()
  await sim.stop()
  await redis.stop()
}

if (process.argv.includes('--child')) child()
else
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
