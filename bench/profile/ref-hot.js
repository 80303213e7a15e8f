'use strict'
// Row 5 with and without the JS hot tier (bench/PROFILE.md, "Row 5: the hot
// tier"): the same 256 cached profiles read through a consumer with the
// default `referenceHotEntries` and through one with it 0 (every hit a native
// call), against the pure-JS fresh-copy path (over the texts JSON.stringify
// made, and over the very strings the hot tier holds) and `JSON.parse`.
// Rounds of every case in a shuffled order; medians of the cases and of the
// per-round ratios. Release addon only.
// `node bench/profile/ref-hot.js [rounds]`
const { startProfiles, timeAwaited, median, run } = require('./ref-setup.js')

run(async () => {
  const rounds = Number(process.argv[2] ?? 15)
  const env = await startProfiles('prof-hot', 256)
  const hot = await env.consumer()
  const cold = await env.consumer({ referenceHotEntries: 0 })
  const { ids, profiles } = env
  // a miss, then a native hit that admits it to the tier
  for (let k = 0; k < 2; k++) {
    for (const id of ids) {
      await hot.getUserProfile(id)
      await cold.getUserProfile(id)
    }
  }
  if (hot._hot[0].size !== ids.length) throw new Error('the hot tier did not admit every profile')
  const texts = ids.map((id) => JSON.stringify(profiles.get(id)))
  const freshCopy = (kept) => ({
    async getUserProfile(id) {
      return JSON.parse(kept.get(id))
    },
  })
  const stringified = freshCopy(new Map(ids.map((id, i) => [id, texts[i]])))
  const native = freshCopy(new Map(ids.map((id) => [id, hot._hot[0].get(id).text])))
  const m = ids.length - 1
  const N = 10000
  const cases = {
    hot: (i) => hot.getUserProfile(ids[i & m]),
    native: (i) => cold.getUserProfile(ids[i & m]),
    freshCopy: (i) => stringified.getUserProfile(ids[i & m]),
    freshCopyOfNative: (i) => native.getUserProfile(ids[i & m]),
    parse: (i) => JSON.parse(texts[i & m]),
  }
  const names = Object.keys(cases)
  const res = Object.fromEntries(names.map((k) => [k, []]))
  const ratio = { hotParse: [], hotFresh: [] }
  for (let r = 0; r <= rounds; r++) {
    const order = [...names].sort(() => Math.random() - 0.5)
    const got = {}
    for (const k of order) got[k] = await timeAwaited(cases[k], N)
    if (r === 0) continue // warm-up
    for (const k of names) res[k].push(got[k])
    ratio.hotParse.push(got.hot / got.parse)
    ratio.hotFresh.push(got.hot / got.freshCopy)
  }
  const x = Object.fromEntries(names.map((k) => [k, median(res[k])]))
  console.log(
    `hot ${x.hot.toFixed(0)} ns, native ${x.native.toFixed(0)} ns, fresh copy ${x.freshCopy.toFixed(0)} ns ` +
      `(of the tier's own strings ${x.freshCopyOfNative.toFixed(0)} ns), JSON.parse ${x.parse.toFixed(0)} ns; ` +
      `median per-round ratios: hot/parse ${median(ratio.hotParse).toFixed(2)}x, ` +
      `hot/fresh copy ${median(ratio.hotFresh).toFixed(2)}x ` +
      `(range ${Math.min(...ratio.hotFresh).toFixed(2)}–${Math.max(...ratio.hotFresh).toFixed(2)}); ` +
      `${rounds} rounds`,
  )
  await env.stop()
})
