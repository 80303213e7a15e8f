'use strict'
// Row 2, the event storm, for one side in its own process: while the main
// thread serves lookups, another process publishes `events`
// credit-config-changed events as fast as Redis takes them. Measures the
// event-loop delay (perf_hooks.monitorEventLoopDelay, 1 ms resolution), the
// time from the first publish until the last event is visible in JS, the
// lookups served meanwhile, whether every event was applied, and the CPU time
// of each thread of this process (from /proc) with the main thread's
// involuntary context switches.
//
// Load models: 'paced' serves 100 lookups on a 1 ms timer (a service with
// headroom); 'saturated' serves 100 lookups per turn of a setImmediate loop
// (a main thread that never sleeps). The floor ('floor' side) serves the same
// lookups from a plain Map while the events go to a bare subscriber in
// another process: what the lookup thread would see if applying events cost
// it nothing.

const { monitorEventLoopDelay } = require('node:perf_hooks')
const {
  childMain,
  wallMs,
  percentile,
  eventsApplied,
  sleep,
  spawnHelper,
} = require('./lib/common.js')
const { setupSide } = require('./lib/fixture.js')
const data = require('./lib/data.js')
const { threadStats, diffStats } = require('./lib/threads.js')

const RESOLUTION_MS = 1

async function main(config) {
  const { side, redisUrl, tenantId, events, ops, timeoutMs, load } = config
  const channel = `crm:${tenantId}:credit-configs`
  const { subject, close } = await setupSide({
    side: side === 'floor' ? 'none' : side,
    redisUrl,
    tenantId,
    ops,
  })
  const lastOp = data.opCode((events - 1) % ops)

  // the lookups served meanwhile: credit costs and permission checks, all hits
  const opKeys = Array.from({ length: 256 }, (_, i) => data.opCode((i * 37) % ops))
  const userKeys = Array.from({ length: 64 }, (_, i) => data.userId(i))
  const permKeys = Array.from({ length: 64 }, (_, i) => `crm.r${i % 40}.e${10 + (i % 40)}.act`)
  const floorCosts = new Map(data.credits(ops).map((c) => [c.operationCode, c.creditCost]))
  const floorPerms = new Map(userKeys.map((u) => [u, new Set(permKeys)]))

  let sink = null
  if (side === 'floor') {
    sink = spawnHelper('child-sink.js', { redisUrl, channel, events })
    await sink.next('ready')
  }
  const before = subject ? eventsApplied(subject) : 0
  const pub = spawnHelper('child-publisher.js', { redisUrl, channel, tenantId, events, ops })
  await pub.next('ready')
  await sleep(200)

  const eld = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
  const gaps = []
  let lookups = 0
  let hits = 0
  const published = pub.next('published')
  const sinkDone = sink ? sink.next('done') : null
  let floorDone = false
  if (sinkDone) sinkDone.then(() => (floorDone = true))
  const stats0 = threadStats()
  const result = await new Promise((resolve) => {
    const deadline = wallMs() + timeoutMs
    const paced = load === 'paced'
    let interval = null
    let last = process.hrtime.bigint()
    const tick = () => {
      const now = process.hrtime.bigint()
      gaps.push(Number(now - last) / 1e6)
      last = now
      for (let i = 0; i < 50; i++) {
        const k = (lookups + i) & 255
        if (subject) {
          if (subject.getCreditCost(opKeys[k]) !== null) hits++
          if (subject.checkPermission(userKeys[k & 63], permKeys[k & 63])) hits++
        } else {
          if (floorCosts.get(opKeys[k]) !== undefined) hits++
          if (floorPerms.get(userKeys[k & 63]).has(permKeys[k & 63])) hits++
        }
      }
      lookups += 100
      const done = subject ? subject.getCreditCost(lastOp) === events : floorDone
      if (done || wallMs() > deadline) {
        const doneWall = wallMs()
        eld.disable()
        if (interval) clearInterval(interval)
        resolve({ timedOut: !done, doneWall })
        return
      }
      if (!paced) setImmediate(tick)
    }
    eld.enable()
    pub.child.send({ type: 'go' })
    if (paced) interval = setInterval(tick, 1)
    else setImmediate(tick)
  })
  const stats = diffStats(stats0, threadStats())
  const pubResult = await published
  const doneWall = sinkDone ? (await sinkDone).doneWall : result.doneWall
  await sleep(100)
  const applied = subject ? eventsApplied(subject) - before : events
  let finalOk = true
  if (subject) {
    // every operation must show the value of its last event
    for (let j = 0; j < Math.min(ops, events); j++) {
      const lastSeq = events - ((events - 1 - j) % ops)
      if (subject.getCreditCost(data.opCode(j)) !== lastSeq) finalOk = false
    }
  }
  await close()
  const spanMs = result.doneWall - pubResult.startWall
  return {
    side,
    load,
    events,
    applied,
    finalOk,
    timedOut: result.timedOut,
    receivers: pubResult.receivers,
    publishMs: pubResult.endWall - pubResult.startWall,
    applyMs: doneWall - pubResult.startWall,
    eldSamples: eld.count,
    eldP50Ms: eld.percentile(50) / 1e6,
    eldP99Ms: eld.percentile(99) / 1e6,
    eldMaxMs: eld.max / 1e6,
    gapP99Ms: percentile(gaps, 99),
    gapMaxMs: gaps.reduce((a, b) => Math.max(a, b), 0),
    lookups,
    lookupsPerSec: lookups / (spanMs / 1000),
    hits,
    ...stats,
  }
}

childMain(main)
