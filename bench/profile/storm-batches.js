'use strict'
// Profiling aid for row 2: during a storm of 100,000 credit-config-changed
// events (published by another process), times every replica batch the core
// hands to the JS thread (by wrapping the consumer's private `_onBatch`), and
// lists the gaps longer than 2 ms between turns of a setImmediate loop, with
// the involuntary context switches of the main thread. Long gaps without a
// long batch are time the JS thread did not get a CPU.
//
//   node bench/profile/storm-batches.js [events] [ops]
//   SMART_CRM_LIB=/tmp/prof-node/lib/index.js ...   (another build, e.g. unstripped for perf)

const fs = require('node:fs')
const path = require('node:path')
const { fork } = require('node:child_process')
const { startRedis } = require('../../tools/test-helpers/index.js')
const { startWrapperSim } = require('../../tools/wrapper-sim.js')
const { smallData } = require('../lib/fixture.js')
const { consumerOptions } = require('../lib/common.js')
const data = require('../lib/data.js')

const { SmartCRMConsumer } = require(process.env.SMART_CRM_LIB || '../../lib/index.js')

const involuntary = () =>
  Number(
    /nonvoluntary_ctxt_switches:\s+(\d+)/.exec(
      fs.readFileSync(`/proc/self/task/${process.pid}/status`, 'utf8'),
    )[1],
  )

async function main() {
  const events = Number(process.argv[2] || 100000)
  const ops = Number(process.argv[3] || 10000)
  const tenantId = 'profile-storm'
  const redis = await startRedis()
  const sim = await startWrapperSim({ tenantId, data: smallData({ ops }) })
  const consumer = new SmartCRMConsumer(
    consumerOptions({ tenantId, wrapperUrl: sim.url, redisUrl: redis.url }),
  )
  await consumer.initialize()
  const batches = []
  const onBatch = consumer._onBatch.bind(consumer)
  consumer._onBatch = (json) => {
    const t0 = process.hrtime.bigint()
    onBatch(json)
    batches.push({ bytes: json.length, ms: Number(process.hrtime.bigint() - t0) / 1e6 })
  }
  const channel = `crm:${tenantId}:credit-configs`
  const pub = fork(
    path.join(__dirname, '..', 'child-publisher.js'),
    [JSON.stringify({ redisUrl: redis.url, channel, tenantId, events, ops })],
    { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
  )
  await new Promise((resolve) => pub.once('message', resolve))
  console.log(`pid ${process.pid}: publishing ${events} events`)
  const lastOp = data.opCode((events - 1) % ops)
  const gaps = []
  const sw0 = involuntary()
  const t0 = process.hrtime.bigint()
  await new Promise((resolve) => {
    let last = process.hrtime.bigint()
    const tick = () => {
      const now = process.hrtime.bigint()
      const gap = Number(now - last) / 1e6
      if (gap > 2) gaps.push(gap)
      last = now
      if (consumer.getCreditCost(lastOp) === events) return resolve()
      setImmediate(tick)
    }
    pub.send({ type: 'go' })
    setImmediate(tick)
  })
  const ms = Number(process.hrtime.bigint() - t0) / 1e6
  const sw = involuntary() - sw0
  const m = consumer.getMetrics()
  const byTime = [...batches].sort((a, b) => b.ms - a.ms)
  console.log(
    `all ${m.eventsApplied} applied in ${ms.toFixed(0)} ms; ${batches.length} batches, ` +
      `largest ${Math.max(...batches.map((b) => b.bytes))} B, ` +
      `slowest ${byTime
        .slice(0, 5)
        .map((b) => `${b.ms.toFixed(2)} ms (${b.bytes} B)`)
        .join(', ')}`,
  )
  console.log(
    `loop gaps > 2 ms: ${gaps.length} (${gaps.map((g) => g.toFixed(1)).join(' ')}); ` +
      `main thread involuntary context switches: ${sw}`,
  )
  await consumer.shutdown()
  await sim.stop()
  await redis.stop()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
