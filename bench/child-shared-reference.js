'use strict'
// One instance of the shared-reference row (bench/shared-reference.js): a
// consumer built from argv[2] reads one hot profile every `everyMs` for
// `durationMs`, then prints { reads, misses, sharedHits, sharedMisses } and exits.

const { SmartCRMConsumer } = require('../lib/index.js')
const { quietLogger } = require('../tools/test-helpers/index.js')

const { options, userId, everyMs, durationMs } = JSON.parse(process.argv[2])

async function main() {
  const consumer = new SmartCRMConsumer({ ...options, logger: quietLogger() })
  await consumer.initialize()
  process.send({ ready: true })
  await new Promise((resolve) => process.once('message', resolve))
  const until = Date.now() + durationMs
  let reads = 0
  while (Date.now() < until) {
    await consumer.getUserProfile(userId)
    reads++
    await new Promise((r) => setTimeout(r, everyMs))
  }
  const m = consumer.getMetrics()
  process.send({
    reads,
    misses: m.referenceMisses,
    sharedHits: m.sharedHits,
    sharedMisses: m.sharedMisses,
  })
  await consumer.shutdown()
  process.disconnect()
}

main().catch((err) => {
  process.send({ error: err.message })
  process.exit(1)
})
