'use strict'
// Profiling aid for row 7: a cold start with 1,000,000 users (pages of
// 10,000), with a timeline: when the simulator saw each page of users
// requested, and, for the package, when each replica batch reached the JS
// thread, how big it was and how long applying it took (by wrapping the
// consumer's private `_onBatch`). `--baseline` runs the baseline instead.
//
//   node bench/profile/cold-timeline.js [--baseline] [users]
//   SMART_CRM_LIB=/tmp/prof-node/lib/index.js ...   (another build, e.g. unstripped for perf)

const path = require('node:path')
const { fork } = require('node:child_process')
const { startRedis } = require('../../tools/test-helpers/index.js')
const { startWrapperSim } = require('../../tools/wrapper-sim.js')
const { consumerOptions, wallMs } = require('../lib/common.js')
const data = require('../lib/data.js')

async function child({ baseline, ...config }) {
  let subject
  if (baseline) {
    const { JsConsumer } = require('../baselines/js-consumer.js')
    subject = new JsConsumer(config)
  } else {
    const { SmartCRMConsumer } = require(process.env.SMART_CRM_LIB || '../../lib/index.js')
    subject = new SmartCRMConsumer(consumerOptions(config))
  }
  const batches = []
  if (subject._onBatch) {
    const onBatch = subject._onBatch.bind(subject)
    subject._onBatch = (json) => {
      const at = wallMs()
      onBatch(json)
      batches.push({ at, bytes: json.length, ms: wallMs() - at })
    }
  }
  process.send({ type: 'pid', pid: process.pid })
  await new Promise((resolve) => process.once('message', resolve))
  const t0 = wallMs()
  await subject.initialize()
  const t1 = wallMs()
  process.send({
    type: 'done',
    t0,
    t1,
    batches,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
  })
  await subject.shutdown()
  process.exit(0)
}

async function main() {
  const baseline = process.argv.includes('--baseline')
  const users = Number(process.argv.find((a) => /^\d+$/.test(a)) || 1000000)
  const tenantId = 'profile-cold'
  const redis = await startRedis()
  const sim = await startWrapperSim({
    tenantId,
    pageSize: 10000,
    data: {
      credits: data.credits(10000),
      roles: data.roles(1000, 20, 2),
      users: data.users(users, 1000, 2),
      configs: data.configs(10),
    },
  })
  const pages = []
  sim.server.on('request', (req) => {
    if (req.url.startsWith('/api/users/access')) pages.push(wallMs())
  })
  const config = { baseline, tenantId, wrapperUrl: sim.url, redisUrl: redis.url }
  const c = fork(__filename, ['--child', JSON.stringify(config)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const done = new Promise((resolve, reject) => {
    c.once('exit', (code) => reject(new Error(`the child exited (${code}) without a result`)))
    c.on('message', (m) => {
      if (m.type === 'pid') {
        console.log(`${baseline ? 'baseline' : 'package'} in pid ${m.pid}`)
        setTimeout(() => c.send('go'), Number(process.env.WAIT_MS || 0))
      } else if (m.type === 'done') resolve(m)
    })
  })
  const r = await done
  const rel = (t) => `${(t - r.t0).toFixed(0)} ms`
  console.log(`initialize(): ${rel(r.t1)}; peak RSS ${r.peakRssMiB.toFixed(0)} MiB`)
  console.log(
    `pages of users: ${pages.length}, first at ${rel(pages[0])}, last at ${rel(pages.at(-1))}`,
  )
  for (const b of r.batches) {
    console.log(
      `replica batch at ${rel(b.at)}: ${(b.bytes / 1e6).toFixed(1)} MB, applied in ${b.ms.toFixed(0)} ms`,
    )
  }
  await sim.stop()
  await redis.stop()
}

if (process.argv[2] === '--child') child(JSON.parse(process.argv[3]))
else
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
