'use strict'
// Row 5's hit, split by how the entry is stored (bench/PROFILE.md, "Row 6:
// memory (after the table and the dictionaries)"): the bench's 256 profiles
// are the kind's first 256 values, stored raw before the dictionary is
// trained from them; this times hits on profiles fetched after training
// (packed) against hits on the first ones (raw) and `JSON.parse` of the same
// texts, interleaved. Release addon only. `node bench/profile/ref-hit-packed.js`
const { startProfiles, timeAwaited, median, run } = require('./ref-setup.js')

run(async () => {
  const env = await startProfiles('prof-ref', 1024)
  // the tier off: every hit is the native lookup this profile is about
  const c = await env.consumer({ referenceHotEntries: 0 })
  const { ids, profiles } = env
  for (const id of ids) await c.getUserProfile(id)
  const raw = ids.slice(0, 255)
  const packed = ids.slice(512, 767)
  const texts = packed.map((id) => JSON.stringify(profiles.get(id)))
  const N = 20000
  const res = { raw: [], packed: [], parse: [] }
  for (let r = 0; r < 7; r++) {
    res.raw.push(await timeAwaited((i) => c.getUserProfile(raw[i % raw.length]), N))
    res.packed.push(await timeAwaited((i) => c.getUserProfile(packed[i % packed.length]), N))
    res.parse.push(await timeAwaited((i) => JSON.parse(texts[i % texts.length]), N))
  }
  const m = { raw: median(res.raw), packed: median(res.packed), parse: median(res.parse) }
  const metrics = c.getMetrics()
  console.log(
    `hit raw ${m.raw.toFixed(0)} ns, hit packed ${m.packed.toFixed(0)} ns, JSON.parse ${m.parse.toFixed(0)} ns;` +
      ` packed/parse ${(m.packed / m.parse).toFixed(2)}x, raw/parse ${(m.raw / m.parse).toFixed(2)}x;` +
      ` ${metrics.referenceCacheSize ?? ''} entries, ${metrics.referenceCacheBytes ?? ''} bytes counted`,
  )
  await env.stop()
})
