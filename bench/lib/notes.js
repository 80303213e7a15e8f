'use strict'
// What stands in the way of each target when it is missed: the explanation
// RESULTS.md prints under a missed row. Figures come from the row measured in
// the same run; the profiles they cite are in bench/PROFILE.md.

const { median } = require('./common.js')

const ms = (x) => `${x < 10 ? x.toFixed(2) : Math.round(x)} ms`
const ns = (x) => `${x < 100 ? x.toFixed(1) : Math.round(x).toLocaleString('en')} ns`
const int = (x) => Math.round(x).toLocaleString('en')
const med = (list, key) => median(list.map((x) => x[key]))
const cpu = (list, thread) => median(list.map((x) => x.cpuMs[thread] || 0))

const NOTES = {
  '1a': (r) =>
    `The package's read is \`SmartCRMConsumer.getCreditCost\` (lib/consumer.js): a \`_closed\` ` +
    'check, a `typeof` check, `Map.get` on the replica and a hit/miss counter increment, ' +
    `${ns(r.pkg - r.floor)} over the bare \`Map.get\` here. The counter store and the two checks ` +
    'are the cost; keeping the counters in a separate small object (or counting only misses and ' +
    'deriving hits from a cheaper per-read increment of a local) would bring it nearer the floor.',

  '1b': (r) => {
    const k = r.kindNs || {}
    return (
      'Where the time goes, per kind of query: exact hits ' +
      `${ns(k['exact hit'])}, prefix hits ${ns(k['prefix hit'])}, denied ${ns(k.denied)} ` +
      `against the floor's ${ns(r.floor)}. Exact hits are one \`Set.has\` on the user's compiled ` +
      'permissions, as fast as the floor; but `grants()` in lib/replica.js then scans the ' +
      "user's `prefix.*` patterns linearly with `startsWith` (25 here: 5 roles × 5), so a prefix " +
      'hit pays part of the scan and a denial pays all of it, ' +
      `${ns((k.denied - k['exact hit']) / 25)} per pattern. The fix: ` +
      'memoise the answer per compiled access (a bounded `Map` permission → boolean on the ' +
      'compiled object, which the replica already replaces whenever the user or a role changes). ' +
      'A prototype of exactly that (bench/profile/permission-kinds.js) costs about what an exact ' +
      'hit costs for every kind of query (bench/PROFILE.md), within 2× of the floor. The ' +
      'package already meets the other half of the target: it is far more than 5× faster than ' +
      'the baseline.'
    )
  },

  2: (r) => {
    const p = r.raw.package
    const b = r.raw.baseline
    const perEventUs = (cpu(p, 'tokio-rt-worker') * 1000) / p[0].events
    return (
      `The floor (plain Maps, the events going to another process) already sees a p99 of ` +
      `${ms(r.floor)} on this 2-core machine: during the storm the publisher and redis-server ` +
      'each take most of a core, so every thread of the measured process is preempted. The ' +
      'package adds threads of its own to that contest: its tokio workers used ' +
      `${int(cpu(p, 'tokio-rt-worker'))} ms of CPU for ${int(p[0].events)} events ` +
      `(${perEventUs.toFixed(1)} µs per event; the baseline's whole main thread used ` +
      `${int(cpu(b, 'main'))} ms), and its main thread was switched out involuntarily ` +
      `${int(med(p, 'mainInvoluntarySwitches'))} times (baseline ${int(med(b, 'mainInvoluntarySwitches'))}). ` +
      "The package's own JS work is small: its replica batches took at most 2.6 ms each in the " +
      'profile. Gaps of ~4 ms between loop turns, the scheduler time slice, dominate its p99. ' +
      'What would fix it: less CPU per event in the core (perf: parsing each message into a ' +
      '`serde_json::Value` with `BTreeMap`s, malloc/free, rehashing of the moka-based replay ' +
      'window, and ~13 % of the worker time in context switches between tokio tasks), i.e. a ' +
      'typed borrow-parse of the envelope, a cheaper replay set, and applying events in the task ' +
      'that reads them; and at most one worker thread for a 2-core host.'
    )
  },

  3: (r) => {
    const p = r.raw.package
    const b = r.raw.baseline
    const f = r.raw.floor
    const pP50 = med(p, 'p50Us')
    const bP50 = med(b, 'p50Us')
    return (
      `Typical latency: package p50 ${int(pP50)} µs, baseline ${int(bP50)} µs, bare subscriber ` +
      `${int(med(f, 'p50Us'))} µs. In the package an event crosses the redis-rs connection ` +
      'task, the subscriber session (a channel), the outbox flusher (a `Notify`) and a ' +
      'ThreadsafeFunction that wakes the JS thread, which parses the batch JSON; the baseline is ' +
      'woken once, by its socket. Each hop is a cross-thread wake-up, and on 2 busy cores each ' +
      'can wait for a time slice, which is what the p99 shows' +
      (r.floor > 1000
        ? ` (the bare subscriber alone has a p99 of ${int(r.floor)} µs in this run, so the ` +
          'machine itself was not quiet)'
        : '') +
      '. What would fix it: when the outbox is idle, serialise and deliver from the subscriber ' +
      'task itself (no flusher hop), and read, apply and deliver on one task so one event costs ' +
      'one wake-up of a Rust thread and one of the JS thread.'
    )
  },

  6: (r) => {
    const p = r.raw.package
    const b = r.raw.baseline
    const per = (list) => (med(list, 'rssGrowthMiB') * 1048576) / list[0].profiles
    return (
      `Per profile: package ${int(per(p))} B, baseline ${int(per(b))} B, for ~1,010 B of JSON. ` +
      `The package's V8 heap grew ${med(p, 'heapGrowthMiB').toFixed(1)} MiB: its growth is ` +
      'native memory in the Rust reference cache, the text itself plus ~650 B per entry (the ' +
      "key, the `Arc<str>`, moka's entry, timer-wheel and frequency-sketch metadata, allocator " +
      'slack; `MALLOC_ARENA_MAX=1` changed nothing, so it is not arena fragmentation). Half the ' +
      `baseline is ${int(per(b) / 2)} B: less than the raw text plus 200 B, so keeping JSON text ` +
      'cannot meet it. What would: store entries compressed with a shared dictionary (deflate ' +
      'with a dictionary took these profiles from 1,016 B to 215 B; real profiles vary more ' +
      'than these, and the decompression must stay inside row 5’s 2× `JSON.parse` budget) and ' +
      'a leaner entry than moka’s.'
    )
  },

  7: (r) => {
    const p = r.raw.package
    const b = r.raw.baseline
    return (
      `Fetching is not the bottleneck: the package asked for its last page of users ` +
      `${ms(med(p, 'lastPageMs'))} after the start, the baseline after ${ms(med(b, 'lastPageMs'))}. ` +
      `What follows takes the package ${ms(med(p, 'afterLastPageMs'))} and the baseline ` +
      `${ms(med(b, 'afterLastPageMs'))}. After the last page the core builds its store (a million ` +
      '`HashMap` inserts with SipHash), diffs it against the empty store into a `Delta` that ' +
      "clones every user's id, status and roles, serialises that into one replica batch of " +
      '~50 MB of JSON, and the JS thread parses the batch and builds its Maps in one callback ' +
      '(1.5–2.2 s measured: also the longest event-loop stall the package causes). So the JS ' +
      'thread does about the parsing work the baseline does, after the core has done it once. ' +
      `Peak RSS is ${int(med(p, 'peakRssMiB'))} MiB against ${int(med(b, 'peakRssMiB'))} MiB ` +
      'for the same reason (pages, store, delta, batch text and parsed batch alive at once). ' +
      'What would fix it: do not mirror a million users into JS at start, but fill the JS ' +
      "replica's user entries from the core on first access (one napi call per user, once); " +
      'ship what must be mirrored in page-sized batches while the next page downloads; move ' +
      'instead of cloning on a full load; a faster hasher.'
    )
  },
}

/** The explanation for a missed row (`row` as built by run.js). */
function whyMissed(row, smoke) {
  if (smoke) return 'Smoke sizes: not a measurement; see RESULTS.md for the real run.'
  const note = NOTES[row.id] || NOTES[row.id.replace(/[ab]$/, '')]
  if (!note) return 'Not analysed yet.'
  try {
    return note(row)
  } catch (err) {
    return `(the explanation could not be built: ${err.message})`
  }
}

module.exports = { whyMissed }
