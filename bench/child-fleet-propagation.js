'use strict'
// Group `fleet`, row F5, for one mode in its own process: publish → visible
// (getCreditCost shows the new value) at a fixed rate, as row 3
// (child-propagation.js) does it, with the consumer in `transport: 'pubsub'`
// or `'stream'` mode. The publisher is a raw RESP connection of this same
// process (one hrtime clock) sending exactly what the package's
// createPublisher sends for that transport:
//
//   pubsub       PUBLISH crm:{tenant}:credit-configs <msg>
//   stream       EVAL <PUBLISH_SCRIPT> 2 <stream> <epoch> <maxlen> credit-configs <msg>
//                <live channel> '' <epoch candidate>   (transport 'stream')
//   stream-both  the same EVAL with the topic channel as ARGV[5] (transport 'both',
//                the publisher's default: one more PUBLISH inside the script)
//   paired       the 'both' EVAL, with two consumers in this process, one of each
//                transport, timed on the same events in the same polling loop (row
//                F5b): the machine's noise falls on both alike, so their p99s compare
//
// PUBLISH_SCRIPT is read from crates/core/src/stream.rs, so the bench follows
// the layout the core defines.

const fs = require('node:fs')
const path = require('node:path')
const crypto = require('node:crypto')
const { connectRedis } = require('../__test__/helpers/resp.js')
const { childMain, percentile, median, sleep } = require('./lib/common.js')
const { setupSide } = require('./lib/fixture.js')
const data = require('./lib/data.js')

const KEYS = 100
const STREAM_MAX_LEN = 100000 // createPublisher's default streamMaxLen

function publishScript() {
  const src = fs.readFileSync(
    path.join(__dirname, '..', 'crates', 'core', 'src', 'stream.rs'),
    'utf8',
  )
  const m = /pub const PUBLISH_SCRIPT: &str = r#"([\s\S]*?)"#;/.exec(src)
  if (!m) throw new Error('PUBLISH_SCRIPT not found in crates/core/src/stream.rs')
  return m[1]
}

async function main(config) {
  const { mode, redisUrl, tenantId, rate, events, warmup } = config
  const transport = mode === 'pubsub' ? 'pubsub' : 'stream'
  const { subject, close } = await setupSide({
    side: 'package',
    redisUrl,
    tenantId,
    ops: 1000,
    extra: { transport },
  })
  // paired: a pub/sub consumer of the same tenant next to the stream one
  const second =
    mode === 'paired'
      ? await setupSide({
          side: 'package',
          redisUrl,
          tenantId,
          ops: 1000,
          extra: { transport: 'pubsub' },
        })
      : null
  const pub = await connectRedis(redisUrl)
  const topicChannel = `crm:${tenantId}:credit-configs`
  const script = publishScript()
  const streamKey = `crm:{${tenantId}}:stream`
  const epochKey = `crm:{${tenantId}}:epoch`
  const live = `crm:${tenantId}:stream`
  const send =
    mode === 'pubsub'
      ? (msg) => pub.command('PUBLISH', topicChannel, msg)
      : (msg) =>
          pub.command(
            'EVAL',
            script,
            '2',
            streamKey,
            epochKey,
            String(STREAM_MAX_LEN),
            'credit-configs',
            msg,
            live,
            mode === 'stream-both' || mode === 'paired' ? topicChannel : '',
            crypto.randomUUID().replaceAll('-', ''),
          )
  const total = warmup + events
  const messages = []
  for (let i = 1; i <= total; i++) {
    messages.push(data.creditEvent(tenantId, data.opCode((i - 1) % KEYS), i))
  }
  const shows = (s, i) => {
    const v = s.getCreditCost(data.opCode((i - 1) % KEYS))
    return v !== null && v >= i
  }
  const visible = (i) => shows(subject, i)
  await sleep(100)

  const sentAt = new Array(total + 1)
  const latencies = []
  // paired: the pub/sub consumer's latencies, and its own head
  const latencies2 = []
  let head2 = 1
  const errors = []
  const periodNs = BigInt(Math.round(1e9 / rate))
  await new Promise((resolve, reject) => {
    let sent = 0
    let head = 1
    let nextAt = process.hrtime.bigint()
    const deadline = Date.now() + 60_000 + (total / rate) * 1000
    const tick = () => {
      let now = process.hrtime.bigint()
      while (sent < total && now >= nextAt) {
        sent++
        sentAt[sent] = process.hrtime.bigint()
        send(messages[sent - 1]).catch((e) => errors.push(String(e)))
        nextAt += periodNs
        now = process.hrtime.bigint()
      }
      // the two consumers are polled in turn, neither always first
      const order = second && (head + head2) % 2 ? [1, 0] : [0, 1]
      for (const which of order) {
        if (which === 0) {
          while (head <= sent && visible(head)) {
            const t = process.hrtime.bigint()
            if (head > warmup) latencies.push(Number(t - sentAt[head]) / 1e3)
            head++
          }
        } else if (second) {
          while (head2 <= sent && shows(second.subject, head2)) {
            const t = process.hrtime.bigint()
            if (head2 > warmup) latencies2.push(Number(t - sentAt[head2]) / 1e3)
            head2++
          }
        }
      }
      if (head > total && (!second || head2 > total)) resolve()
      else if (errors.length || Date.now() > deadline)
        reject(new Error(`event ${head} never visible; ${errors[0] || 'no publish error'}`))
      else setImmediate(tick)
    }
    setImmediate(tick)
  })
  const m = subject.getMetrics()
  const streamLen = mode === 'pubsub' ? 0 : Number(await pub.command('XLEN', streamKey))
  pub.destroy()
  await close()
  let paired = null
  if (second) {
    const m2 = second.subject.getMetrics()
    await second.close()
    paired = {
      events: latencies2.length,
      p50Us: median(latencies2),
      p90Us: percentile(latencies2, 90),
      p99Us: percentile(latencies2, 99),
      resyncs: m2.resyncs,
    }
  }
  return {
    paired,
    mode,
    rate,
    events: latencies.length,
    p50Us: median(latencies),
    p90Us: percentile(latencies, 90),
    p99Us: percentile(latencies, 99),
    maxUs: latencies.reduce((a, b) => Math.max(a, b), 0),
    eventsApplied: m.eventsApplied,
    resyncs: m.resyncs,
    streamLen,
  }
}

childMain(main)
