'use strict'
// One instance of a fleet, in its own process (SPEC §7 tests): a consumer
// built from the JSON options in argv[2]. It prints one JSON line when ready
// (or when initialize() fails) and answers commands on stdin, one per line:
//   state            → { metrics, health, costs: { [op]: cost } }
//   exit             → shuts down and exits

const readline = require('node:readline')
const { SmartCRMConsumer } = require('../../lib/index.js')

const quiet = { debug() {}, info() {}, warn() {}, error() {} }
const options = JSON.parse(process.argv[2])
const ops = JSON.parse(process.argv[3] || '[]')
const consumer = new SmartCRMConsumer({ ...options, logger: quiet })
consumer.on('error', () => {})

const say = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const state = () => {
  const costs = {}
  for (const op of ops) {
    try {
      costs[op] = consumer.getCreditCost(op)
    } catch {
      costs[op] = 'closed'
    }
  }
  return { metrics: consumer.getMetrics(), health: consumer.health(), costs }
}

consumer.initialize().then(
  () => say({ ready: true, ...state() }),
  (err) => say({ ready: false, code: err.code, message: err.message }),
)

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  if (line === 'state') say(state())
  if (line === 'exit') {
    await consumer.shutdown()
    process.exit(0)
  }
})
