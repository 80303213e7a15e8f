'use strict'
// Row 6, memory, for one side in its own process (run with --expose-gc):
// the growth of this process's RSS while `profiles` ~1 KB user profiles are
// fetched (through the subject, `concurrency` at a time) and kept in its
// reference cache. The Wrapper simulator runs in the parent, so its memory is
// not counted. The floor holds the same profiles' JSON texts in a plain Map:
// the raw bytes, with no structure at all.

const { childMain, fullGc, rssMiB } = require('./lib/common.js')
const { setupSide } = require('./lib/fixture.js')
const data = require('./lib/data.js')

function snapshot() {
  const m = process.memoryUsage()
  return { rss: m.rss / 1048576, heapUsed: m.heapUsed / 1048576, external: m.external / 1048576 }
}

async function main(config) {
  const { side, redisUrl, tenantId, wrapperUrl, profiles, concurrency } = config
  const ids = Array.from({ length: profiles }, (_, i) => data.userId(i))
  const { subject, close } = await setupSide({
    side: side === 'floor' ? 'none' : side,
    redisUrl,
    tenantId,
    wrapperUrl,
    extra: { maxReferenceBytes: 4 * 1024 * 1024 * 1024 },
  })
  let held = null
  // warm up the fetch path on ids outside the measured set, then drop them
  if (subject) {
    for (let i = 0; i < 200; i++) await subject.getUserProfile(data.userId(profiles + i))
    for (let i = 0; i < 200; i++) subject.invalidate(`user:${data.userId(profiles + i)}`)
  }
  await fullGc()
  const before = snapshot()
  const t0 = process.hrtime.bigint()
  if (subject) {
    let next = 0
    const worker = async () => {
      while (next < ids.length) {
        const id = ids[next++]
        const p = await subject.getUserProfile(id)
        if (p.userId !== id) throw new Error(`wrong profile for ${id}`)
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
  } else {
    held = new Map()
    for (const id of ids) held.set(`user:${id}`, JSON.stringify(data.profile(Number(id.slice(5)))))
  }
  const fillMs = Number(process.hrtime.bigint() - t0) / 1e6
  await fullGc()
  const after = snapshot()
  const cached = subject
    ? (subject.getMetrics().referenceCacheSize ?? subject.referenceCache.size)
    : held.size
  const result = {
    side,
    profiles,
    cached,
    fillMs,
    rssBeforeMiB: before.rss,
    rssAfterMiB: after.rss,
    rssGrowthMiB: after.rss - before.rss,
    heapGrowthMiB: after.heapUsed - before.heapUsed,
    externalGrowthMiB: after.external - before.external,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    rssNowMiB: rssMiB(),
  }
  if (held) held.clear()
  await close()
  return result
}

childMain(main)
