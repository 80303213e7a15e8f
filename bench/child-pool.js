'use strict'
// Rows 8a, 8b, 8c and 8f for one side in its own process (run with
// --expose-gc): `tenants` small tenants (bench/lib/tenants.js) loaded one
// after the other, either through one tenant pool (side 'pool') or as
// separate SmartCRMConsumers (side 'separate', today's way), from the
// parent's multi-tenant Wrapper simulator (so its memory is not counted).
//
// Measures the time of each cold load (`pool.tenant(id)`, or `new
// SmartCRMConsumer` + `initialize()`), the Redis connections and channel
// subscriptions this process holds (CLIENT LIST on the private redis-server,
// less the counting connection), the RSS and V8 heap growth per tenant, and
// the RSS after releasing `release` of them, before and after full GCs. The
// first `warmup` tenants are loaded before the first reading, so that what is
// paid once (the runtime, the link, the HTTP connection, code) is not counted
// per tenant; their loads are not timed.

const fs = require('node:fs')
const { connectRedis } = require('../tools/test-helpers/index.js')
const { childMain, fullGc, sleep } = require('./lib/common.js')
const { SMALL, tenantId, holder, countClients } = require('./lib/tenants.js')
const data = require('./lib/data.js')

/** RSS and heap figures in bytes; RssAnon from /proc (RSS without file-backed pages). */
function snapshot() {
  const m = process.memoryUsage()
  const status = fs.readFileSync('/proc/self/status', 'utf8')
  const kB = (name) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)[1]) * 1024
  return {
    rss: m.rss,
    rssAnon: kB('RssAnon'),
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    threads: Number(/Threads:\s+(\d+)/.exec(status)[1]),
  }
}

const diff = (a, b) => Object.fromEntries(Object.keys(a).map((k) => [k, b[k] - a[k]]))

/** Every tenant answers from its own data (cost of operation 7 is 7.5, see data.credits). */
function spotCheck(consumer) {
  return (
    consumer.getCreditCost(data.opCode(7)) === 7.5 &&
    consumer.getCreditCost(data.opCode(SMALL.ops)) === null &&
    consumer.checkPermission(data.userId(0), 'crm.r0.e10.act') === true
  )
}

async function main(config) {
  const { side, redisUrl, wrapperUrl, prefix, tenants, warmup, release } = config
  const rc = await connectRedis(redisUrl)
  const self = await rc.command('CLIENT', 'ID')
  const clientsBefore = await countClients(rc, self)
  const h = holder(side, { wrapperUrl, redisUrl })
  const ids = Array.from({ length: tenants }, (_, i) => tenantId(prefix, i))
  let wrong = 0

  for (let i = 0; i < warmup; i++) {
    if (!spotCheck(await h.load(ids[i]))) wrong++
  }
  await sleep(200)
  await fullGc()
  const before = snapshot()

  const loadMs = []
  const t0 = process.hrtime.bigint()
  for (let i = warmup; i < tenants; i++) {
    const t = process.hrtime.bigint()
    const c = await h.load(ids[i])
    loadMs.push(Number(process.hrtime.bigint() - t) / 1e6)
    if (!spotCheck(c)) wrong++
  }
  const loadAllMs = Number(process.hrtime.bigint() - t0) / 1e6
  await sleep(500)
  const clientsLoaded = await countClients(rc, self)
  const loadedNoGc = snapshot()
  await fullGc()
  const loaded = snapshot()
  const loadedCount = h.loaded()
  const metrics = h.pool ? h.pool.getMetrics({ perTenant: false }) : null

  // release `release` of the measured tenants (not the warm-up ones), 100 at a time
  const t1 = process.hrtime.bigint()
  for (let i = 0; i < release; i += 100) {
    const chunk = ids.slice(warmup + i, warmup + Math.min(i + 100, release))
    await Promise.all(chunk.map((id) => h.release(id)))
  }
  const releaseMs = Number(process.hrtime.bigint() - t1) / 1e6
  // the pool trims 1 s after a burst of releases (TRIM_DEBOUNCE in pool.rs)
  await sleep(2000)
  const released = snapshot()
  await fullGc()
  // and again 1 s after the GC finalised the released consumers
  await sleep(2000)
  const releasedGc = snapshot()
  const clientsReleased = await countClients(rc, self)
  const remainingCount = h.loaded()

  await h.close()
  rc.destroy()
  const measured = tenants - warmup
  return {
    side,
    tenants,
    warmup,
    measured,
    release,
    wrong,
    loadedCount,
    remainingCount,
    poolConnected: metrics ? metrics.pool.connected : null,
    poolTenants: metrics ? metrics.tenants : null,
    clientsBefore,
    clientsLoaded,
    clientsReleased,
    connections: clientsLoaded.connections - clientsBefore.connections,
    subscriptions: clientsLoaded.subscriptions - clientsBefore.subscriptions,
    connectionsAfterRelease: clientsReleased.connections - clientsBefore.connections,
    loadMs,
    loadAllMs,
    releaseMs,
    before,
    loadedNoGc,
    loaded,
    released,
    releasedGc,
    growth: diff(before, loaded),
    rssPerTenant: (loaded.rss - before.rss) / measured,
    rssAnonPerTenant: (loaded.rssAnon - before.rssAnon) / measured,
    heapPerTenant: (loaded.heapUsed - before.heapUsed) / measured,
    peakRss: process.resourceUsage().maxRSS * 1024,
  }
}

childMain(main)
