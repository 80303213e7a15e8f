'use strict'
// Row 3, propagation, for one side in its own process: publishes
// credit-config-changed events at `rate` per second through a separate Redis
// connection of this same process (the test helper's RESP client), and
// measures, per event, the time from just before its PUBLISH is written until
// `getCreditCost` returns the new value. A tight setImmediate loop does both
// the publishing (on schedule) and the polling, so both timestamps come from
// one process.hrtime clock. The floor is a bare subscriber (the test helper's
// RESP client) in the same process: the time until the message reaches JS.
// With `redisCluster` (row 3c) the consumer subscribes through the cluster
// option and the events are published on `publishUrl`, one of its nodes.

const { connectRedis } = require('../__test__/helpers/resp.js')
const { childMain, percentile, median, sleep } = require('./lib/common.js')
const { setupSide } = require('./lib/fixture.js')
const data = require('./lib/data.js')

const KEYS = 100

async function main(config) {
  const { side, redisUrl, tenantId, rate, events, warmup, redisCluster, publishUrl } = config
  const extra = redisCluster ? { redisUrl: undefined, redisCluster } : {}
  const { subject, floor, close } = await setupSide({
    side,
    redisUrl: publishUrl ?? redisUrl,
    tenantId,
    ops: 1000,
    extra,
  })
  const pub = await connectRedis(publishUrl ?? redisUrl)
  const channel = `crm:${tenantId}:credit-configs`
  const total = warmup + events
  const messages = []
  for (let i = 1; i <= total; i++) {
    messages.push(data.creditEvent(tenantId, data.opCode((i - 1) % KEYS), i))
  }
  let received = 0
  if (floor) floor.on('message', () => received++)
  const visible = (i) => {
    // event i (1-based) sets opCode((i - 1) % KEYS) to i
    if (floor) return received >= i
    const v = subject.getCreditCost(data.opCode((i - 1) % KEYS))
    return v !== null && v >= i
  }
  await sleep(100)

  const sentAt = new Array(total + 1)
  const latencies = []
  const periodNs = BigInt(Math.round(1e9 / rate))
  await new Promise((resolve) => {
    let sent = 0
    let head = 1
    let nextAt = process.hrtime.bigint()
    const tick = () => {
      let now = process.hrtime.bigint()
      while (sent < total && now >= nextAt) {
        sent++
        sentAt[sent] = process.hrtime.bigint()
        pub.publish(channel, messages[sent - 1])
        nextAt += periodNs
        now = process.hrtime.bigint()
      }
      while (head <= sent && visible(head)) {
        const t = process.hrtime.bigint()
        if (head > warmup) latencies.push(Number(t - sentAt[head]) / 1e3)
        head++
      }
      if (head > total) resolve()
      else setImmediate(tick)
    }
    setImmediate(tick)
  })
  pub.destroy()
  await close()
  return {
    side,
    rate,
    events: latencies.length,
    p50Us: median(latencies),
    p99Us: percentile(latencies, 99),
    maxUs: latencies.reduce((a, b) => Math.max(a, b), 0),
  }
}

childMain(main)
