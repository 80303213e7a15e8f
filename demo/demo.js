'use strict'
// `npm run demo`: the package's main job, shown to a person.
//
// Starts (or uses) Redis and a Wrapper simulator (which publishes signed change
// events), then walks through: the preload, a credit check, a live cost change
// made at the Wrapper and how long it took to arrive,
// permission checks, a profile miss then a hit, and the metrics. Exits cleanly.

const { randomBytes } = require('node:crypto')
const { performance } = require('node:perf_hooks')

const { SmartCRMConsumer } = require('../lib/index.js')
const { startWrapperSim, defaultSeed } = require('../tools/wrapper-sim.js')
const { startRedis, quietLogger } = require('../tools/test-helpers/index.js')

const TENANT = 'demo-tenant'
const bold = (s) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s)
const step = (n, title) => console.log(`\n${bold(`${n}. ${title}`)}`)
const row = (label, value) => console.log(`   ${label.padEnd(50)} ${value}`)

async function main() {
  console.log(bold('smart-crm-consumer demo'))
  let redis = null
  let redisUrl = process.env.REDIS_URL
  if (redisUrl) {
    console.log(`   Redis: REDIS_URL (${redisUrl.replace(/\/\/[^@]*@/, '//***@')})`)
  } else {
    redis = await startRedis()
    redisUrl = redis.url
    console.log(`   Redis: started redis-server on port ${redis.port} (pid ${redis.pid})`)
  }
  // The simulator plays the Wrapper: it serves the API and publishes a signed
  // change event for every change made through it.
  const signingSecret = randomBytes(32).toString('hex')
  const sim = await startWrapperSim({
    tenantId: TENANT,
    data: defaultSeed(),
    redisUrl,
    signingSecret,
  })
  console.log(`   Wrapper simulator: ${sim.url} (signs its events)`)

  const consumer = new SmartCRMConsumer({
    tenantId: TENANT,
    wrapperUrl: sim.url,
    redisUrl,
    signingSecret,
    logger: quietLogger({ keep: ['warn', 'error'] }),
  })
  try {
    step(1, 'Preload: initialize() subscribes, then loads the critical snapshot')
    let t0 = performance.now()
    await consumer.initialize()
    const m0 = consumer.getMetrics()
    row('initialize() took', `${(performance.now() - t0).toFixed(1)} ms`)
    row('critical entries in memory', m0.criticalCacheSize)
    row("getCreditCost('crm.leads.create')", consumer.getCreditCost('crm.leads.create'))
    row(
      "getCreditCost('crm.contacts.export') (free)",
      consumer.getCreditCost('crm.contacts.export'),
    )
    row(
      "getCreditCost('crm.legacy.import') (inactive)",
      consumer.getCreditCost('crm.legacy.import'),
    )
    row("getActiveConfig('limits')", JSON.stringify(consumer.getActiveConfig('limits')))
    const n = 1_000_000
    t0 = performance.now()
    let sum = 0
    for (let i = 0; i < n; i++) sum += consumer.getCreditCost('crm.leads.create')
    row(
      `${n.toLocaleString('en')} synchronous cost reads`,
      `${(((performance.now() - t0) * 1e6) / n).toFixed(0)} ns each (sum ${sum})`,
    )

    step(2, 'Credit check: cost from memory, balance from the Wrapper')
    const balance = await consumer.getUserCredits('u-alice')
    row("u-alice's balance", balance)
    row(
      "checkCredits('crm.leads.create', 'u-alice')",
      await consumer.checkCredits('crm.leads.create', 'u-alice'),
    )
    row(
      "checkCredits('crm.reports.generate', 'u-carol')",
      await consumer.checkCredits('crm.reports.generate', 'u-carol'),
    )
    const d = await consumer.deductCredits('u-alice', 2.5, { operationCode: 'crm.leads.create' })
    row(
      'deductCredits(u-alice, 2.5) → remaining',
      `${d.remaining} (key ${d.idempotencyKey.slice(0, 8)}…)`,
    )

    step(3, 'Live change: the Wrapper changes a cost and publishes an event')
    const changes = []
    consumer.on('change', (e) => changes.push(e))
    t0 = performance.now()
    // Changes the cost at the Wrapper, which publishes credit-config-changed
    // (version 2, signed); resolves once Redis has taken the event.
    await sim.setCreditConfig('crm.leads.create', { creditCost: 3 })
    while (consumer.getCreditCost('crm.leads.create') !== 3)
      await new Promise((r) => setImmediate(r))
    row('Wrapper change → visible in getCreditCost', `${(performance.now() - t0).toFixed(2)} ms`)
    row("getCreditCost('crm.leads.create') now", consumer.getCreditCost('crm.leads.create'))
    await new Promise((r) => setImmediate(r))
    row("'change' event", JSON.stringify(changes[0]))

    step(4, 'Permission checks: deny by default, exact, prefix.* and *')
    for (const [user, perm] of [
      ['u-alice', 'crm.leads.create'],
      ['u-alice', 'crm.leads.notes.edit'],
      ['u-alice', 'crm.leads'],
      ['u-alice', 'crm.contacts.delete'],
      ['u-bob', 'crm.contacts.read'],
      ['u-carol', 'crm.contacts.read'],
      ['nobody', 'crm.contacts.read'],
    ]) {
      const why =
        user === 'u-bob' ? ' (suspended, even with *)' : user === 'nobody' ? ' (unknown user)' : ''
      row(`checkPermission('${user}', '${perm}')`, `${consumer.checkPermission(user, perm)}${why}`)
    }

    step(5, 'Reference data: a profile miss, then a hit')
    t0 = performance.now()
    const p1 = await consumer.getUserProfile('u-alice')
    row(
      'miss: fetched from the Wrapper',
      `${(performance.now() - t0).toFixed(2)} ms → ${p1.name}, ${p1.title}`,
    )
    t0 = performance.now()
    const p2 = await consumer.getUserProfile('u-alice')
    row('hit: from the cache', `${(performance.now() - t0).toFixed(3)} ms → ${p2.name}`)
    row('Wrapper profile requests so far', sim.count('/api/users/u-alice/profile'))
    row(
      "cache expiry of 'user:u-alice'",
      new Date(consumer.getCacheExpiry('user:u-alice')).toISOString(),
    )
    await Promise.all(Array.from({ length: 100 }, () => consumer.getUserProfile('u-carol')))
    row('100 concurrent misses for u-carol → requests', sim.count('/api/users/u-carol/profile'))

    step(6, 'Metrics')
    const m = consumer.getMetrics()
    for (const k of [
      'criticalHits',
      'criticalMisses',
      'criticalHitRate',
      'referenceHits',
      'referenceMisses',
      'referenceHitRate',
      'overallHitRate',
      'cacheSize',
      'wrapperRequests',
      'coalescedRequests',
      'eventsReceived',
      'eventsApplied',
      'connected',
    ]) {
      row(k, typeof m[k] === 'number' && !Number.isInteger(m[k]) ? m[k].toFixed(4) : m[k])
    }
    row('health()', JSON.stringify(consumer.health()))
  } finally {
    await consumer.shutdown()
    await sim.stop()
    if (redis) await redis.stop()
  }
  console.log(`\n${bold('Done.')} Everything was shut down; the process exits by itself.`)
}

/**
 * In a terminal (and unless --no-app), the demo goes on to the example CRM app
 * (examples/crm-app, installed from the package's own tarball) and keeps it
 * running until Ctrl-C, so a person can click through it. Elsewhere (CI, a
 * pipe) it only says how.
 */
function startApp() {
  const { spawnSync, spawn } = require('node:child_process')
  const path = require('node:path')
  const app = path.join(__dirname, '..', 'examples', 'crm-app')
  if (!process.stdout.isTTY || process.argv.includes('--no-app')) {
    console.log('The example CRM app (dashboard, live cost page): npm run demo:app')
    return
  }
  console.log(`\n${bold('7. The example CRM app')} (installing it from the package tarball ...)`)
  const install = spawnSync('npm', ['--prefix', app, 'run', 'install-package'], { stdio: 'ignore' })
  if (install.status !== 0) {
    console.log('   could not install the example app; try: npm run demo:app')
    return
  }
  const child = spawn(process.execPath, [path.join(app, 'server.js')], {
    stdio: 'inherit',
    env: { ...process.env, PORT: process.env.PORT || '3000' },
  })
  process.on('SIGINT', () => child.kill('SIGINT'))
  child.on('exit', (code) => (process.exitCode = code ?? 0))
}

main()
  .then(() => process.exitCode || startApp())
  .catch((err) => {
    console.error(err)
    process.exitCode = 1
  })
