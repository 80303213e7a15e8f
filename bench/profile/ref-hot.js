'use strict'
// Row 5 with and without the JS hot tier (bench/PROFILE.md, "Row 5: the hot
// tier"): the same 256 cached profiles read through a consumer with the
// default `referenceHotEntries` and through one with it 0 (every hit a native
// call), against the pure-JS fresh-copy path and `JSON.parse` of the same
// texts, interleaved, median of 7. Release addon only.
// `node bench/profile/ref-hot.js`
const { startRedis } = require('../../tools/test-helpers/index.js')
const { startWrapperSim } = require('../../tools/wrapper-sim.js')
const { SmartCRMConsumer } = require('../../lib/index.js')
const data = require('../lib/data.js')
const { smallData } = require('../lib/fixture.js')

async function main() {
  const redis = await startRedis()
  const tenantId = 'prof-hot'
  const profiles = new Map()
  for (let i = 0; i < 256; i++) profiles.set(data.userId(i), data.profile(i))
  const sim = await startWrapperSim({ tenantId, data: { ...smallData(), profiles } })
  const make = (extra) =>
    new SmartCRMConsumer({
      tenantId,
      wrapperUrl: sim.url,
      redisUrl: redis.url,
      refreshIntervalMs: 0,
      ...extra,
    })
  const hot = make({})
  const cold = make({ referenceHotEntries: 0 })
  await hot.initialize()
  await cold.initialize()
  const ids = [...profiles.keys()]
  for (const id of ids) {
    await hot.getUserProfile(id)
    await cold.getUserProfile(id)
  }
  const texts = ids.map((id) => JSON.stringify(profiles.get(id)))
  const kept = new Map(ids.map((id, i) => [id, texts[i]]))
  const fresh = {
    async getUserProfile(id) {
      return JSON.parse(kept.get(id))
    },
  }
  const m = ids.length - 1
  const N = 20000
  const time = async (f) => {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < N; i++) await f(i)
    return Number(process.hrtime.bigint() - t0) / N
  }
  const cases = {
    hot: (i) => hot.getUserProfile(ids[i & m]),
    native: (i) => cold.getUserProfile(ids[i & m]),
    freshCopy: (i) => fresh.getUserProfile(ids[i & m]),
    parse: (i) => JSON.parse(texts[i & m]),
  }
  const res = Object.fromEntries(Object.keys(cases).map((k) => [k, []]))
  for (let r = 0; r < 8; r++) {
    for (const [k, f] of Object.entries(cases)) {
      const ns = await time(f)
      if (r > 0) res[k].push(ns) // the first round warms up
    }
  }
  const med = (a) => a.sort((x, y) => x - y)[a.length >> 1]
  const x = Object.fromEntries(Object.entries(res).map(([k, v]) => [k, med(v)]))
  console.log(
    `hot ${x.hot.toFixed(0)} ns, native ${x.native.toFixed(0)} ns, fresh copy ${x.freshCopy.toFixed(0)} ns, ` +
      `JSON.parse ${x.parse.toFixed(0)} ns; hot/parse ${(x.hot / x.parse).toFixed(2)}x, ` +
      `native/parse ${(x.native / x.parse).toFixed(2)}x, hot/fresh copy ${(x.hot / x.freshCopy).toFixed(2)}x`,
  )
  await hot.shutdown()
  await cold.shutdown()
  await sim.stop()
  await redis.stop()
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
