'use strict'
// What stands in the way of each target when it is missed: the explanation
// RESULTS.md prints under a missed row. Figures come from the row measured in
// the same run; the profiles they cite are in bench/PROFILE.md.

const { median, percentile: pctl } = require('./common.js')

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
    const f = r.raw.floor
    const perEventUs = (cpu(p, 'tokio-rt-worker') * 1000) / p[0].events
    const runs = (list) => list.map((x) => ms(x.eldP99Ms)).join(', ')
    return (
      `One fifth of the baseline is ${ms(r.base / 5)}; the floor (plain Maps, the events going ` +
      `to another process, so applying them costs this thread nothing) already has a p99 of ` +
      `${ms(r.floor)} (runs: ${runs(f)}), because during the storm the publisher and ` +
      'redis-server each take most of one of the 2 cores and every thread of the measured ' +
      'process is preempted. The target leaves the package ' +
      `${ms(Math.max(0, r.base / 5 - r.floor))} above that floor; it is ${ms(r.pkg - r.floor)} ` +
      `above it (runs: ${runs(p)}). The package's own JS work is small (bench/profile/` +
      'storm-batches.js: replica batches of a few KB to ~135 KB, nearly all applied in under ' +
      '2 ms), but its tokio workers compete for the same 2 cores: ' +
      `${int(cpu(p, 'tokio-rt-worker'))} ms of CPU for ${int(p[0].events)} events ` +
      `(${perEventUs.toFixed(1)} µs per event; the baseline's whole main thread used ` +
      `${int(cpu(b, 'main'))} ms), and the JS thread was switched out involuntarily ` +
      `${int(med(p, 'mainInvoluntarySwitches'))} times (baseline ${int(med(b, 'mainInvoluntarySwitches'))}); ` +
      'its long loop gaps come in scheduler time slices (~4 ms), not in batch callbacks. With ' +
      'headroom on the JS thread (row 2a, paced lookups) the same storm meets the target. What ' +
      'would lower it further: less CPU per event in the core. The envelope is now parsed by a ' +
      'typed, borrowing parser (protocol.rs; about a third less worker CPU, bench/PROFILE.md); ' +
      'of the worker CPU that remains, redis-rs parsing each push message is 29 %, our parse ' +
      'of the envelope 25 %, applying it 20 %, the kernel 11 %, the channel hand-off 1.4 % and ' +
      'malloc 0.2 % (bench/PROFILE.md, "Row 2b: where the worker CPU goes"; one worker thread ' +
      'is no cheaper than two). A RESP3 push reader of our own would replace only the first ' +
      'share; the 1 µs target needs every one of the first three at about a third of its cost.'
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
      `${int(med(f, 'p50Us'))} µs; the p99s of all three are within noise of each other on ` +
      'this machine (an earlier quiet run, of the build before the replay-window change, measured package 730 µs, baseline ' +
      '845 µs, floor 840 µs: met). An event now takes two thread hops in the package: the ' +
      'redis-rs connection task hands the message to the subscriber task (a channel), which ' +
      'applies it, serialises the batch and wakes the JS thread through a ThreadsafeFunction ' +
      '(the outbox delivers inline when idle; the flusher hop is gone). The baseline is woken ' +
      'once, by its own socket. What would remove the last hop: reading the socket in the ' +
      "subscriber task itself instead of through redis-rs's spawned pub/sub driver" +
      (r.floor > 1000
        ? ` (the bare subscriber alone has a p99 of ${int(r.floor)} µs in this run, so the ` +
          'machine itself was not quiet)'
        : '') +
      '.'
    )
  },

  5: (r) => {
    const fresh = r.freshCopy
    const verdict =
      r.pkg <= 1.5 * r.floor
        ? `The ≤ 1.5× \`JSON.parse\` half is met (${(r.pkg / r.floor).toFixed(2)}×); `
        : `The ≤ 1.5× \`JSON.parse\` half is missed (${(r.pkg / r.floor).toFixed(2)}×); `
    return (
      verdict +
      `the pure-JS fresh-copy path took ${ns(fresh)} (package / fresh copy ` +
      `${(r.pkg / fresh).toFixed(2)}×). A hit of the hot tier (\`referenceHotEntries\`, ` +
      "lib/consumer.js) is a `Map.get`, a read of the cache's generation counter (shared " +
      "memory), a `performance.now()` against the entry's end (~100 ns on this VM) and the " +
      '`JSON.parse`, returned through `Promise.resolve`; timed alone that adds 200–350 ns to the ' +
      'parse, and bench/profile/ref-hot.js puts the hot path at 1.07–1.15× the fresh-copy path ' +
      '(bench/PROFILE.md). Not explained yet: the larger gap in this loop, where the fresh-copy ' +
      (fresh < r.floor
        ? `path ran faster than \`JSON.parse\` alone (${ns(fresh)} against ${ns(r.floor)}), ` +
          'so how the loop shape lets V8 parse (or collect) is part of the difference. '
        : 'path is a plain async method. ') +
      `The baseline, which returns its cached object without parsing, takes ${ns(r.base)}.`
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
    const f = r.raw.floor
    return (
      `The package is at ${(med(p, 'initMs') / med(f, 'initMs')).toFixed(2)}× the floor, which is only ` +
      `downloading the pages (${ms(med(f, 'initMs'))}); half the baseline (${ms(med(b, 'initMs') / 2)}) ` +
      'is at or below what the download alone takes on this machine, so no consumer that ' +
      'must read every page can meet the target here. The package asked for its last page of ' +
      `users ${ms(med(p, 'lastPageMs'))} after the start (floor ${ms(med(f, 'lastPageMs'))}, ` +
      `baseline ${ms(med(b, 'lastPageMs'))}); what follows takes it ${ms(med(p, 'afterLastPageMs'))} ` +
      `(baseline ${ms(med(b, 'afterLastPageMs'))}): the last page's rows and the swap of the ` +
      'new tables. How it got here from 6.2 s (first run, bench/PROFILE.md): the first load ' +
      'no longer mirrors users into JS (the replica reads a user from the core on first ' +
      'access, once), the next page downloads while the current one is parsed, and the ' +
      'tables use foldhash. What remains above the floor is parsing a million rows in Rust ' +
      `(one core, while the download runs). Peak RSS is ${int(med(p, 'peakRssMiB'))} MiB ` +
      `against ${int(med(b, 'peakRssMiB'))} MiB: the core keeps every parsed row until the ` +
      'swap and the previous tables during it; loading straight into the new tables page ' +
      'by page would lower it.'
    )
  },

  '7b': (r) => {
    const p = r.raw.package
    const win = (key) => median(p.map((x) => x.reload[key]))
    const maxRead = win('maxReadMs')
    const eldMax = win('eldMaxMs')
    const reloadMs = med(p, 'reloadMs')
    if (maxRead >= 0.5 * eldMax) {
      return (
        `The longest single read took ${ms(maxRead)} of the ${ms(eldMax)} maximum delay ` +
        `(reads over 10 ms: ${int(win('slowReads'))}; the reload took ${ms(reloadMs)}): the JS ` +
        'thread waits inside a first read of a user. `getUserStatus` on a user the replica has ' +
        'not seen calls the native `userAccess` (lib/replica.js), which takes the store lock; ' +
        'the reload holds that lock in `finish_reload` (crates/core/src/subscriber.rs) while ' +
        '`CriticalStore::replace` (critical.rs) builds the four tables from the parsed ' +
        'snapshot, diffs the million users against the old table for the replica and drops ' +
        'the old tables. What would fix it: build the new tables and the diff off the lock and ' +
        'swap them in under it in O(1), dropping the old ones after the lock is released.'
      )
    }
    return (
      `The longest single read took only ${ms(maxRead)} against a maximum delay of ${ms(eldMax)} ` +
      `(reload ${ms(reloadMs)}), so the JS thread is not waiting on the store lock in a read; ` +
      'measured with schedstat (bench/PROFILE.md, "Row 7b on a quiet machine"), the JS thread ' +
      'does about the same work in both windows but waits longer on the runqueue during the ' +
      'reload: its 1 ms timer wakes it while the simulator in the parent (serving the pages, at ' +
      "normal priority; in production the Wrapper is another machine) and the reload's " +
      '`SCHED_IDLE` thread hold the 2 cores, and some GC pauses are longer ' +
      `(quiet window on the same process: p99 ${ms(r.floor)}).`
    )
  },

  // ---- the tenant pool (RESULTS-pool.md) -----------------------------------

  '8a': (r) => {
    const p = r.raw.pool
    return (
      `The pool's process held ${p.map((x) => x.connections).join(', ')} connection(s) per run ` +
      `with ${int(med(p, 'subscriptions'))} channels subscribed. The pool opens one subscription ` +
      "link (run_link in crates/core/src/pool.rs) and subscribes every tenant's 7 channels on " +
      'it; a tenant opens none of its own. More than 2 means something else in the process ' +
      'connects per tenant (a command connection, a publisher): CLIENT LIST in the child ' +
      '(bench/child-pool.js) names them (`name=`, `cmd=`).'
    )
  },

  '8b': (r) => {
    const p = r.raw.pool
    const kb = (list, key) => med(list, key) / 1024
    return (
      `A pool tenant costs ${int(r.pkg)} KB of RSS, of which ${int(kb(p, 'heapPerTenant'))} KB ` +
      'is V8 heap. bench/profile/pool-memory.js splits it (bench/PROFILE.md, 2,000 tenants): ' +
      'the core alone (NativePool tenants, no JS consumer) takes ~51 KB per tenant and the JS ' +
      'side ~35 KB. heaptrack of the core alone (1,000 tenants, an unstripped release build), ' +
      'per tenant: **~28 KB is the critical store** of 50 operations, 10 roles × 20 permissions ' +
      'and 50 users: the parsed rows (17 KB, ~520 small `String`s and `Vec`s: every ' +
      "permission, and every user's status and role ids as owned Strings, " +
      'crates/core/src/model.rs `Access`) and the hash tables `CriticalStore::from_snapshot` ' +
      'builds (11 KB); **~10 KB is the shell of a tenant**: the mpsc queue of `Pool::tenant` ' +
      '(tokio allocates its first block of 32 slots at once, 2 KB), the `Tenant` with its ' +
      '`Config` clone (2.5 KB), what remains of the reference cache before its first store ' +
      '(the `inflight` DashMap shards and `Inner`, 2 KB), the two tasks (1.5 KB), the watch ' +
      "channels and the outbox; **~10 KB is malloc's overhead** on those ~600 small " +
      'allocations (under jemalloc the same pool takes ~78 KB per tenant). The JS side was the ' +
      "replica's second copy of the data (bench/profile/pool-heap.js: ~26 KB, 14 hash tables, " +
      "~270 strings, the roles' permission arrays); since ab90048 the replica holds only what " +
      'was read (a tenant that has read nothing: ~3.5 KB of V8 heap; one that has read every ' +
      'key and checked every user: ~123 KB, mostly compiled user access; bench/PROFILE.md). ' +
      '(The empty moka cache that cost ~34 KB per tenant is gone since ceb5f4b.) What would ' +
      'reach 40 KB of RSS, together and not one alone: the lazy replica (done); intern the ' +
      "store's strings in a " +
      'pool-wide table (permission names, role ids and statuses repeat within a tenant and ' +
      'across tenants) and keep user roles as indices into the role table (most of the 17 KB ' +
      "of rows, smaller table entries, and fewer allocations for malloc's overhead); and build " +
      "the rest of the reference cache's shell and the queue's first block on first use."
    )
  },

  '8c': (r) => {
    const p = r.raw.pool
    const s = r.raw.separate
    const pc = (list, q) => median(list.map((x) => pctl(x.loadMs, q)))
    return (
      `p50 ${ms(pc(p, 50))}, p99 ${ms(pc(p, 99))} (separate consumers: ${ms(pc(s, 50))} / ` +
      `${ms(pc(s, 99))}). A cold load is a round trip of the link task (its SUBSCRIBE is ` +
      'batched with up to 1,000 others, pool.rs `run_commands`), a full load of four lists ' +
      'that waits for one of `maxConcurrentLoads` permits, the store swap and the first ' +
      "replica batch through the pool's one threadsafe function; the loads here are awaited " +
      'one by one, so no permit is contended. A p99 far above the p50 with a quiet p50 points ' +
      'at the machine (the simulator, redis-server and the child share 2 cores) or at GC in ' +
      'the child; compare the separate side, which pays its own connection per load.'
    )
  },

  '8d': (r) => {
    const m = r.raw.many
    const f = r.raw.few
    return (
      `CPU per event ${r.pkg.toFixed(1)} µs over ${m[0].tenants} tenants against ` +
      `${r.base.toFixed(1)} µs over ${f[0].tenants}; idle CPU ` +
      `${med(m, 'idleCpuPerSecMs').toFixed(2)} and ${med(f, 'idleCpuPerSecMs').toFixed(2)} ms/s. ` +
      `Per thread: ${m[0].tenants} tenants tokio ${int(cpu(m, 'tokio-rt-worker'))} ms, main ` +
      `${int(cpu(m, 'main'))} ms; ${f[0].tenants} tenants tokio ` +
      `${int(cpu(f, 'tokio-rt-worker'))} ms, main ${int(cpu(f, 'main'))} ms. Whatever the ` +
      "count, an event is routed by its channel to its tenant's queue (pool.rs " +
      '`route_message`: one HashMap lookup among the loaded tenants), applied by that ' +
      "tenant's session task and handed to JS as a replica batch through the pool's one " +
      "threadsafe function (lib/pool.js `_onBatch` → that consumer's replica); round-robin " +
      'sends consecutive events to different tenants in both runs, so none are batched ' +
      'together. The tenant count should only show through cache misses (at 5,000 tenants ' +
      'each event touches state that is cold): where the CPU grew says which side pays it, ' +
      'the tokio workers (routing, apply) or the main thread (the JS side).'
    )
  },

  '8e': (r) =>
    `Pool ${r.cells.pkg} against standalone ${r.cells.base}. A pool tenant is a ` +
    '`SmartCRMConsumer` of the same class and shape as a standalone one (lib/consumer.js; ' +
    'only `_pooled` differs), and the reads run the same code on its own JS replica, so a ' +
    'gap means the measurement moved (the machine, or JIT state: the loop functions are ' +
    'fresh per case, the callee is shared) rather than the pool: run ' +
    '`node bench/run.js --only=pool` again on a quiet machine.',

  '8f': (r) => {
    const p = r.raw.pool
    const at = (x, k, m) => (x[k][m] - x.before[m]) / 1048576
    const mm = (k, m) => median(p.map((x) => at(x, k, m)))
    const kept = median(p.map((x) => at(x, 'releasedGc', 'rss') / at(x, 'loaded', 'rss')))
    const left = (p[0].measured - p[0].release) / p[0].measured
    return (
      `After releasing, the pool's process kept ${Math.round(kept * 100)} % of its RSS growth ` +
      `after GCs, with ${Math.round(left * 100)} % of the tenants still loaded. The tenants are released: ` +
      "the core's route table holds only the remaining ones, and since 4238c5a `shutdown()` " +
      "drops a tenant's store and reference cache at once (crates/core/src/consumer.rs), not " +
      'when V8 collects its wrapper. What keeps the RSS is the allocator. V8 gave its share ' +
      `back at the GC (heapUsed ${mm('loaded', 'heapUsed').toFixed(0)} → ` +
      `${mm('releasedGc', 'heapUsed').toFixed(0)} MiB over the empty reading); the native part ` +
      `did not (RssAnon ${mm('loaded', 'rssAnon').toFixed(0)} → ` +
      `${mm('releasedGc', 'rssAnon').toFixed(0)} MiB). It is freed, not leaked: ` +
      'bench/profile/pool-memory.js (bench/PROFILE.md, 2,000 tenants, 80 % released) calls ' +
      '`malloc_trim(0)` in the process through gdb after the release and the growth falls from ' +
      '~131 to ~68 MiB (the core alone: ~100 → ~38 MiB); under jemalloc with immediate decay ' +
      'the release alone brings it from ~149 to ~120 MiB before any GC and the GC to ~74 MiB. ' +
      "glibc keeps the chunks: the tenants' allocations are made on the tokio worker threads " +
      "(their own arenas) and interleaved with the surviving tenants', so no arena top is free " +
      'to trim, and glibc gives back free pages inside an arena only on `malloc_trim`. What ' +
      'would give it back: `malloc_trim(0)` after releases (debounced and off the JS thread, ' +
      'e.g. once after a sweep or a burst of `release()`s, with a bound on how often), or an ' +
      "allocator that returns freed pages (jemalloc or mimalloc as the addon's " +
      '`#[global_allocator]`); fewer, larger per-tenant allocations (row 8b) also fragment less.'
    )
  },
}

/** The explanation for a missed row (`row` as built by run.js). */
function whyMissed(row, smoke) {
  if (smoke) {
    const real = row.group === 'pool' ? 'RESULTS-pool.md' : 'RESULTS.md'
    return `Smoke sizes: not a measurement; see ${real} for the real run.`
  }
  const note = NOTES[row.id] || NOTES[row.id.replace(/[ab]$/, '')]
  if (!note) return 'Not analysed yet.'
  try {
    return note(row)
  } catch (err) {
    return `(the explanation could not be built: ${err.message})`
  }
}

module.exports = { whyMissed }
