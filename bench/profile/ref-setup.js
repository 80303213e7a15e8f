'use strict'
// The setup the row 5 profiles share (ref-hot.js, ref-hit-packed.js): a Redis,
// a Wrapper simulator serving `count` bench profiles, consumers of it, a
// timer of awaited calls (and bench/lib/common.js's median, re-exported).
const { startRedis } = require('../../tools/test-helpers/index.js')
const { startWrapperSim } = require('../../tools/wrapper-sim.js')
const { SmartCRMConsumer } = require('../../lib/index.js')
const data = require('../lib/data.js')
const { smallData } = require('../lib/fixture.js')
const { median } = require('../lib/common.js')

/** Starts Redis and a simulator of `count` profiles for `tenantId`. */
async function startProfiles(tenantId, count) {
  const redis = await startRedis()
  const profiles = new Map()
  for (let i = 0; i < count; i++) profiles.set(data.userId(i), data.profile(i))
  const sim = await startWrapperSim({ tenantId, data: { ...smallData(), profiles } })
  const consumers = []
  return {
    profiles,
    ids: [...profiles.keys()],
    /** An initialised consumer of the simulator, with `extra` options. */
    async consumer(extra = {}) {
      const c = new SmartCRMConsumer({
        tenantId,
        wrapperUrl: sim.url,
        redisUrl: redis.url,
        refreshIntervalMs: 0,
        ...extra,
      })
      consumers.push(c)
      await c.initialize()
      return c
    },
    async stop() {
      for (const c of consumers) await c.shutdown()
      await sim.stop()
      await redis.stop()
    },
  }
}

/** Mean ns per call of `n` awaited calls `f(i)`. */
async function timeAwaited(f, n) {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) await f(i)
  return Number(process.hrtime.bigint() - t0) / n
}

/** Runs `main`, exiting non-zero on failure. */
function run(main) {
  main().catch((e) => {
    console.error(e)
    process.exit(1)
  })
}

module.exports = { startProfiles, timeAwaited, median, run }
