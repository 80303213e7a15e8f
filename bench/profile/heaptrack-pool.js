'use strict'
// Profiling aid for row 8b: groups the peak heap of a heaptrack recording of
// bench/profile/pool-memory.js (variant `native`: the core alone) by what the
// allocation belongs to, per tenant. Needs an unstripped release build (see
// bench/PROFILE.md) so that heaptrack can name the Rust frames:
//
//   HEAPTRACK=1 SMART_CRM_LIB=/tmp/prof-node/lib/index.js \
//     node bench/profile/pool-memory.js 1000 native
//   heaptrack_print -f /tmp/heaptrack.pool-native.zst --print-peaks 0 --print-allocators 0 \
//     --print-leaks 0 --print-temporary 0 -F /tmp/pool-native.folded --flamegraph-cost-type peak
//   node bench/profile/heaptrack-pool.js /tmp/pool-native.folded 1000
//
// The categories match frames (function@file) anywhere in a stack, first match wins.

const fs = require('node:fs')

const CATEGORIES = [
  [
    'reference cache: moka op channels (crossbeam bounded)',
    /bounded<>@channel\.rs.*new@reference\.rs|new@reference\.rs.*bounded<>@channel\.rs/,
  ],
  ['reference cache: the rest (moka cht segments, Inner, inflight DashMap)', /new@reference\.rs/],
  [
    'critical store: hash tables (CriticalStore::from_snapshot)',
    /with_capacity<>@critical\.rs|from_snapshot@critical\.rs/,
  ],
  ['critical store: parsed rows (Strings, Vecs)', /model\.rs|push_rows|parse_object/],
  ['Pool::tenant: spawned tasks', /spawn<>@spawn\.rs.*tenant@pool\.rs|tenant@pool\.rs.*spawn/],
  [
    'Pool::tenant: mpsc and watch channels',
    /(bounded\.rs|watch\.rs).*tenant@pool\.rs|tenant@pool\.rs.*(bounded\.rs|watch\.rs)/,
  ],
  [
    'Tenant::shared / Pool::tenant: the rest (Tenant, Config clone, outbox, metrics)',
    /shared@tenant\.rs|tenant@pool\.rs/,
  ],
  ['redis subscription tracking', /subscription_tracker|multiplexed_connection/],
  ['napi wrappers', /class\.rs|value_ref|deferred\.rs/],
]
const GENERIC = new Set(
  'alloc.rs mod.rs unix.rs raw_vec.rs boxed.rs option.rs result.rs iterator.rs panicking.rs panic.rs unwind_safe.rs spec_from_iter.rs spec_from_iter_nested.rs iter.rs function.rs ops.rs'.split(
    ' ',
  ),
)

function main() {
  const [file, tenantsArg] = process.argv.slice(2)
  const tenants = Number(tenantsArg || 1000)
  const totals = new Map()
  let all = 0
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const cut = line.lastIndexOf(' ')
    const cost = Number(line.slice(cut + 1))
    if (!line || !Number.isFinite(cost)) continue
    const frames = []
    for (const f of line.slice(0, cut).split(';')) {
      const m = /^(.*) \(([\w-]+\.rs)\)$/.exec(f)
      if (m && !GENERIC.has(m[2])) frames.push(`${m[1]}@${m[2]}`)
    }
    const key = frames.join(' < ')
    const cat = (CATEGORIES.find(([, re]) => re.test(key)) || ['(other, incl. fixed)'])[0]
    totals.set(cat, (totals.get(cat) || 0) + cost)
    all += cost
  }
  for (const [cat, bytes] of [...totals].sort((a, b) => b[1] - a[1])) {
    console.log(`${(bytes / tenants / 1024).toFixed(1).padStart(7)} KB/tenant  ${cat}`)
  }
  console.log(`${(all / tenants / 1024).toFixed(1).padStart(7)} KB/tenant  peak heap in all`)
}

main()
