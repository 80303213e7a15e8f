'use strict'
// Publisher process for the event storm: builds `events` credit-config-changed
// messages up front, then on 'go' pipelines them all to Redis as fast as Redis
// takes them (the test helper `publishMany`) and reports when it started and
// finished, in cross-process wall-clock milliseconds.

const { publishMany } = require('../__test__/helpers/resp.js')
const { creditEvent, opCode } = require('./lib/data.js')
const { wallMs } = require('./lib/common.js')

const config = JSON.parse(process.argv[2])
const messages = new Array(config.events)
for (let i = 1; i <= config.events; i++) {
  messages[i - 1] = creditEvent(config.tenantId, opCode((i - 1) % config.ops), i)
}

process.on('message', async (msg) => {
  if (!msg || msg.type !== 'go') return
  try {
    const startWall = wallMs()
    const receivers = await publishMany(config.redisUrl, config.channel, messages)
    const endWall = wallMs()
    process.send({ type: 'published', startWall, endWall, receivers }, () => process.exit(0))
  } catch (err) {
    process.send({ type: 'failed', error: String(err.stack || err) }, () => process.exit(1))
  }
})
process.send({ type: 'ready' })
