'use strict'
// The storm's floor subscriber, in a process of its own: a minimal JS RESP
// reader (the test helper) that only counts messages, so that the measured
// process serves lookups while Redis does the full fan-out. Reports when the
// last message arrived, in cross-process wall-clock milliseconds.

const { connectRedis } = require('../__test__/helpers/resp.js')
const { wallMs } = require('./lib/common.js')

const config = JSON.parse(process.argv[2])

async function main() {
  const client = await connectRedis(config.redisUrl)
  let received = 0
  client.on('message', () => {
    if (++received === config.events) {
      process.send({ type: 'done', doneWall: wallMs(), received }, () => process.exit(0))
    }
  })
  await client.subscribe(config.channel)
  process.send({ type: 'ready' })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
