'use strict'
// Row 5's hit, split by how the entry is stored (bench/PROFILE.md, "Row 6:
// memory (after the table and the dictionaries)"): the bench's 256 profiles
// are the kind's first 256 values, stored raw before the dictionary is
// trained from them; this times hits on profiles fetched after training
// (packed) against hits on the first ones (raw) and `JSON.parse` of the same
// texts, interleaved. Release addon only. `node bench/profile/ref-hit-packed.js`
const { startRedis } = require('../../tools/test-helpers/index.js')
const { startWrapperSim } = require('../../tools/wrapper-sim.js')
const { SmartCRMConsumer } = require('../../lib/index.js')
const data = require('../lib/data.js')
const { smallData } = require('../lib/fixture.js')

async function main() {
  const redis = await startRedis()
  const tenantId = 'prof-ref'
  const profiles = new Map()
  for (let i = 0; i < 1024; i++) profiles.set(data.userId(i), data.profile(i))
  const sim = await startWrapperSim({ tenantId, data: { ...smallData(), profiles } })
  const c = new SmartCRMConsumer({
    tenantId,
    wrapperUrl: sim.url,
    redisUrl: redis.url,
    refreshIntervalMs: 0,
  })
  await c.initialize()
  const ids = [...profiles.keys()]
  for (const id of ids) await c.getUserProfile(id)
  const raw = ids.slice(0, 255)
  const packed = ids.slice(512, 767)
  const texts = packed.map((id) => JSON.stringify(profiles.get(id)))
  const N = 20000
  const time = async (f) => {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < N; i++) await f(i)
    return Number(process.hrtime.bigint() - t0) / N
  }
  const res = { raw: [], packed: [], parse: [] }
  for (let r = 0; r < 7; r++) {
    res.raw.push(await time((i) => c.getUserProfile(raw[i % raw.length])))
    res.packed.push(await time((i) => c.getUserProfile(packed[i % packed.length])))
    res.parse.push(await time((i) => JSON.parse(texts[i % texts.length])))
  }
  const med = (a) => a.sort((x, y) => x - y)[a.length >> 1]
  const m = { raw: med(res.raw), packed: med(res.packed), parse: med(res.parse) }
  const metrics = c.getMetrics()
  console.log(
    `hit raw ${m.raw.toFixed(0)} ns, hit packed ${m.packed.toFixed(0)} ns, JSON.parse ${m.parse.toFixed(0)} ns;` +
      ` packed/parse ${(m.packed / m.parse).toFixed(2)}x, raw/parse ${(m.raw / m.parse).toFixed(2)}x;` +
      ` ${metrics.referenceCacheSize ?? ''} entries, ${metrics.referenceCacheBytes ?? ''} bytes counted`,
  )
  await c.shutdown()
  await sim.stop()
  await redis.stop()
}
main().catch((e) => {
  console.error(e)
  process.exit(1)
})
