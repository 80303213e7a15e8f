'use strict'
// Publisher process for row 8d: builds `events` credit-config-changed
// messages up front, event i for tenant i mod `tenants` (round-robin, so
// every tenant gets its share), then on 'go' publishes them at `rate` per
// second (each 1 ms timer tick sends the events due by then, pipelined) and
// reports when it started and finished, in cross-process wall-clock ms, and
// the receivers Redis counted (one per event when every tenant is subscribed).

const { connectRedis } = require('../tools/test-helpers/index.js')
const { wallMs } = require('./lib/common.js')
const { poolEvent } = require('./lib/tenants.js')

const config = JSON.parse(process.argv[2])

async function main() {
  const { redisUrl, rate, events } = config
  const messages = Array.from({ length: events }, (_, i) => poolEvent(config, i))
  const rc = await connectRedis(redisUrl)
  process.on('message', (msg) => {
    if (!msg || msg.type !== 'go') return
    const replies = []
    const startWall = wallMs()
    const t0 = performance.now()
    let sent = 0
    const tick = () => {
      const due = Math.min(events, Math.floor(((performance.now() - t0) * rate) / 1000) + 1)
      for (; sent < due; sent++) {
        const m = messages[sent]
        replies.push(rc.publish(m.channel, m.text))
      }
      if (sent < events) {
        setTimeout(tick, 1)
        return
      }
      const endWall = wallMs()
      Promise.all(replies).then(
        (r) => {
          const receivers = r.reduce((a, b) => a + b, 0)
          rc.destroy()
          process.send({ type: 'published', startWall, endWall, receivers }, () => process.exit(0))
        },
        (err) => fail(err),
      )
    }
    tick()
  })
  process.send({ type: 'ready' })
}

function fail(err) {
  process.send({ type: 'failed', error: String((err && err.stack) || err) }, () => process.exit(1))
}

main().catch(fail)
