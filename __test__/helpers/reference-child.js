'use strict'
// One instance of a fleet, in its own OS process (forked with an IPC channel by
// __test__/shared-reference.spec.js): a SmartCRMConsumer built from the JSON
// options in argv[2], driven by messages from the parent.
//
//   → { op: 'read', method, id, n }  fires n concurrent calls of consumer[method](id),
//                                     answers { op: 'fired' } at once, then
//                                     { op: 'read', values, errors } when all settled
//   → { op: 'metrics' }               { op: 'metrics', metrics }
//   → { op: 'expiry', key }           { op: 'expiry', expiry }
//   → { op: 'shutdown' }              shuts down and exits
//   ← { op: 'ready' } after initialize(), or { op: 'failed', message }

const { SmartCRMConsumer } = require('../../lib/index.js')
const { quietLogger } = require('../../tools/test-helpers/index.js')

const options = JSON.parse(process.argv[2])
const consumer = new SmartCRMConsumer({ ...options, logger: quietLogger() })

const handlers = {
  async read({ method, id, n }) {
    const calls = []
    for (let i = 0; i < n; i++) calls.push(consumer[method](id))
    process.send({ op: 'fired' })
    const settled = await Promise.allSettled(calls)
    return {
      values: settled.filter((s) => s.status === 'fulfilled').map((s) => s.value),
      errors: settled.filter((s) => s.status === 'rejected').map((s) => s.reason.code),
    }
  },
  metrics: () => ({ metrics: consumer.getMetrics() }),
  expiry: ({ key }) => ({ expiry: consumer.getCacheExpiry(key) }),
  async shutdown() {
    await consumer.shutdown()
    process.disconnect()
    return null
  },
}

process.on('message', async (msg) => {
  const answer = await handlers[msg.op](msg)
  if (answer !== null) process.send({ op: msg.op, ...answer })
})

consumer.initialize().then(
  () => process.send({ op: 'ready' }),
  (err) => {
    process.send({ op: 'failed', message: `${err.code}: ${err.message}` })
    process.exit(1)
  },
)
