'use strict'
// Row 8d for one tenant count in its own process: a tenant pool (side 'pool';
// side 'separate': as many separate SmartCRMConsumers, for comparison) holding
// `tenants` small tenants (loaded from the parent's simulator) while another
// process publishes `events` credit-config-changed events at `rate` per
// second, round-robin over the tenants' channels (bench/lib/tenants.js,
// poolEvent). Measures the CPU time of this whole process
// (process.cpuUsage: the JS thread, the tokio workers, everything) from the
// 'go' until every tenant shows its last event, per event; the same over an
// idle window of the same nominal length just before (what holding the
// tenants costs with no events); the CPU per thread; and whether every event
// was applied (the tenants' own counters, and every operation's last value).

const { childMain, sleep, spawnHelper, wallMs } = require('./lib/common.js')
const { tenantId, holder, poolEvent } = require('./lib/tenants.js')
const { threadStats, diffStats } = require('./lib/threads.js')

const cpuMs = (u) => (u.user + u.system) / 1000

async function main(config) {
  const { holds, redisUrl, wrapperUrl, prefix, tenants, rate, events, timeoutMs } = config
  const h = holder(holds, { wrapperUrl, redisUrl })
  const ids = Array.from({ length: tenants }, (_, i) => tenantId(prefix, i))
  const consumers = new Map()
  // load 32 at a time (the pool itself downloads at most maxConcurrentLoads at once)
  for (let i = 0; i < tenants; i += 32) {
    const batch = ids.slice(i, i + 32)
    const cs = await Promise.all(batch.map((id) => h.load(id)))
    batch.forEach((id, k) => consumers.set(id, cs[k]))
  }

  // what each tenant must show at the end: every operation's last value
  const expected = new Map() // tenant -> Map(op -> value)
  const last = new Map() // tenant -> { op, value } of its last event
  for (let i = 0; i < events; i++) {
    const e = poolEvent({ prefix, tenants }, i)
    if (!expected.has(e.tenant)) expected.set(e.tenant, new Map())
    expected.get(e.tenant).set(e.op, e.value)
    last.set(e.tenant, { op: e.op, value: e.value })
  }
  const totals = () => {
    if (h.pool) return h.pool.getMetrics({ perTenant: false }).totals
    const t = { eventsApplied: 0, eventsRejected: {} }
    for (const c of consumers.values()) {
      const m = c.getMetrics()
      t.eventsApplied += m.eventsApplied
      for (const [k, n] of Object.entries(m.eventsRejected))
        t.eventsRejected[k] = (t.eventsRejected[k] || 0) + n
    }
    return t
  }
  const appliedBefore = totals().eventsApplied

  const pub = spawnHelper('child-pool-publisher.js', { redisUrl, prefix, tenants, rate, events })
  await pub.next('ready')
  await sleep(500)

  // idle: the same process holding the same tenants, no events
  const idleMsNominal = (events / rate) * 1000
  const idle0 = process.cpuUsage()
  const idleT0 = performance.now()
  await sleep(idleMsNominal)
  const idleCpuMs = cpuMs(process.cpuUsage(idle0))
  const idleMs = performance.now() - idleT0

  // the stream
  const published = pub.next('published')
  let publishedMsg = null
  published.then((m) => (publishedMsg = m))
  const stats0 = threadStats()
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  pub.child.send({ type: 'go' })
  let pending = [...last.keys()]
  let timedOut = false
  for (;;) {
    await sleep(5)
    if (publishedMsg === null) continue
    pending = pending.filter((id) => {
      const l = last.get(id)
      return consumers.get(id).getCreditCost(l.op) !== l.value
    })
    if (pending.length === 0) break
    if (performance.now() - t0 > timeoutMs) {
      timedOut = true
      break
    }
  }
  const doneWall = wallMs()
  const streamCpuMs = cpuMs(process.cpuUsage(cpu0))
  const streamMs = performance.now() - t0
  const stats = diffStats(stats0, threadStats())
  const p = await published

  // every event applied: the counters, and every operation's last value
  await sleep(200)
  const t = totals()
  const applied = t.eventsApplied - appliedBefore
  let wrongValues = 0
  for (const [id, ops] of expected) {
    const c = consumers.get(id)
    for (const [op, value] of ops) if (c.getCreditCost(op) !== value) wrongValues++
  }
  await h.close()
  return {
    tenants,
    events,
    rate,
    applied,
    holds,
    rejected: t.eventsRejected,
    wrongValues,
    timedOut,
    pendingTenants: pending.length,
    receivers: p.receivers,
    publishMs: p.endWall - p.startWall,
    lastVisibleAfterPublishMs: doneWall - p.endWall,
    streamMs,
    streamCpuMs,
    cpuPerEventUs: (streamCpuMs * 1000) / events,
    idleMs,
    idleCpuMs,
    idleCpuPerSecMs: (idleCpuMs * 1000) / idleMs,
    // the stream's CPU less what the idle window's rate predicts for its length
    netCpuPerEventUs: ((streamCpuMs - (idleCpuMs * streamMs) / idleMs) * 1000) / events,
    ...stats,
  }
}

childMain(main)
