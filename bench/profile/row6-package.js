'use strict'
// Row 6 for the package side alone (bench/PROFILE.md, "Row 6: memory (after the table and
// the dictionaries)"): the bench's own child-memory.js, N runs, without the baseline and floor
// sides. Release addon only. `node bench/profile/row6-package.js 3`
const path = '../'
const { runChild } = require(path + 'lib/common.js')
const { startRedis } = require('../../tools/test-helpers/index.js')
const { startWrapperSim } = require('../../tools/wrapper-sim.js')
const data = require(path + 'lib/data.js')
const { smallData } = require(path + 'lib/fixture.js')
async function main() {
  const redis = await startRedis()
  const tenantId = 'bench-memory'
  const profiles = new Map()
  const N = 100000
  for (let i = 0; i < N + 200; i++) profiles.set(data.userId(i), data.profile(i))
  const sim = await startWrapperSim({ tenantId, data: { ...smallData({ ops: 100 }), profiles } })
  const env = process.env
  for (let r = 0; r < Number(process.argv[2] || 3); r++) {
    const res = await runChild(
      'child-memory.js',
      {
        side: 'package',
        redisUrl: redis.url,
        tenantId,
        wrapperUrl: sim.url,
        profiles: N,
        concurrency: 64,
      },
      { execArgv: ['--expose-gc'] },
    )
    console.log(
      `rss growth ${res.rssGrowthMiB.toFixed(1)} MiB = ${Math.round((res.rssGrowthMiB * 1048576) / N)} B/profile, heap ${res.heapGrowthMiB.toFixed(1)} MiB, cached ${res.cached}, fill ${Math.round(res.fillMs)} ms, MALLOC_ARENA_MAX=${env.MALLOC_ARENA_MAX || '-'}`,
    )
  }
  await sim.stop()
  await redis.stop()
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
