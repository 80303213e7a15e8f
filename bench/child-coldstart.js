'use strict'
// Row 7, cold start, for one side in its own process: the time `initialize()`
// takes against the parent's Wrapper simulator holding the big data set
// (paged lists), and this process's peak RSS (getrusage maxRSS). The floor
// downloads every page of the four lists as text, without parsing or keeping
// anything: the cost of the simulator and of HTTP alone.

const { childMain, makeSubject, fullGc, wallMs } = require('./lib/common.js')

const LISTS = ['/api/credits/configs', '/api/roles', '/api/users/access', '/api/configs/active']

/** Fetches every page of `path` as text; returns the bytes read. */
async function drain(wrapperUrl, tenantId, path) {
  let bytes = 0
  let cursor = null
  for (;;) {
    const url = `${wrapperUrl}${path}${cursor ? `?cursor=${encodeURIComponent(cursor)}` : ''}`
    const text = await (await fetch(url, { headers: { 'X-Tenant-Id': tenantId } })).text()
    bytes += text.length
    const m = /"nextCursor":(?:"([^"]*)"|null)\}\s*$/.exec(text.slice(-200))
    if (!m || !m[1]) return bytes
    cursor = m[1]
  }
}

async function main(config) {
  const { side, redisUrl, tenantId, wrapperUrl, expect } = config
  const rssStart = process.memoryUsage.rss() / 1048576
  let subject = null
  let bytes = 0
  let entries = 0
  const t0Wall = wallMs()
  const t0 = process.hrtime.bigint()
  if (side === 'floor') {
    const sizes = await Promise.all(LISTS.map((p) => drain(wrapperUrl, tenantId, p)))
    bytes = sizes.reduce((a, b) => a + b, 0)
  } else {
    subject = makeSubject(side, { tenantId, wrapperUrl, redisUrl })
    await subject.initialize()
  }
  const initMs = Number(process.hrtime.bigint() - t0) / 1e6
  const doneWall = wallMs()
  const peakRssMiB = process.resourceUsage().maxRSS / 1024
  if (subject) entries = subject.getMetrics().criticalCacheSize
  const complete = side === 'floor' || entries === expect
  // spot checks: a user's roles and an operation's cost are there
  let spotOk = true
  if (subject) {
    spotOk =
      subject.getUserStatus(config.spotUser) !== null &&
      subject.getCreditCost(config.spotOp) === config.spotCost
  }
  await fullGc()
  const rssAfterGcMiB = process.memoryUsage.rss() / 1048576
  if (subject) await subject.shutdown()
  return {
    side,
    initMs,
    t0Wall,
    doneWall,
    peakRssMiB,
    rssStart,
    rssAfterGcMiB,
    entries,
    complete,
    spotOk,
    bytes,
  }
}

childMain(main)
