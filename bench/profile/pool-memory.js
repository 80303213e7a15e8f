'use strict'
// Profiling aid for rows 8b and 8f: where a pool tenant's memory goes, and
// whether what a released tenant frees goes back to the OS. For each variant
// a child process (node --expose-gc, the simulator in this process) loads
// `tenants` small tenants one after the other after 20 warm-up ones, reads
// RSS / RssAnon / V8 heapUsed after full GCs, releases 80 % of the measured
// tenants, reads them again 1 s later and after GCs, and then once more after
// `malloc_trim(0)` called in it through gdb (when gdb is installed): memory
// that malloc_trim gives back was freed but kept by glibc's allocator; memory
// it does not give back is still allocated.
//
// Variants:
//   js       the pool as users get it (SmartCRMConsumer per tenant)
//   native   the core alone: NativePool tenants (`NativePool.tenant(id).take()` +
//            `waitReady()`) whose batches are dropped: no JS consumer, no replica
//   jemalloc `js` with LD_PRELOAD=libjemalloc.so.2 (when installed) and
//            MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0: an allocator that
//            gives freed pages back at once
//
//   node bench/profile/pool-memory.js [tenants=2000] [variants=js,native,jemalloc]
//   SMART_CRM_LIB=/tmp/prof-node/lib/index.js ...   (another build, e.g. unstripped)
//   HEAPTRACK=1 ...   runs each child under heaptrack (output files named in the log)
//
// It reaches into the pool's private members (`_native`), so it is an aid,
// not part of the bench.

const fs = require('node:fs')
const path = require('node:path')
const readline = require('node:readline')
const { spawn, execFileSync } = require('node:child_process')

const LIB = process.env.SMART_CRM_LIB || path.join(__dirname, '..', '..', 'lib', 'index.js')
const JEMALLOC = '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2'
const WARMUP = 20

function memory() {
  const status = fs.readFileSync('/proc/self/status', 'utf8')
  const kB = (name) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)[1]) * 1024
  return {
    rss: process.memoryUsage.rss(),
    rssAnon: kB('RssAnon'),
    heap: process.memoryUsage().heapUsed,
  }
}

async function gcs() {
  for (let i = 0; i < 4; i++) {
    global.gc()
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** The child: one variant. Prints `RESULT <json>`; `TRIM` and waits for a line before its last reading. */
async function child({ variant, tenants, redisUrl, wrapperUrl }) {
  const { poolOptions, tenantId } = require('../lib/tenants.js')
  const ids = Array.from({ length: tenants }, (_, i) => tenantId('pt', i))
  const opts = poolOptions({ wrapperUrl, redisUrl })
  let load
  let release
  let coreTenants
  if (variant === 'native') {
    const { NativePool } = require(path.join(path.dirname(LIB), '..', 'index.js'))
    const { readEnv, toJsonOptions } = require(path.join(path.dirname(LIB), 'options.js'))
    const { logger: _l, ...rest } = opts
    const np = new NativePool(toJsonOptions(rest, ''), readEnv())
    np.start(() => {})
    const held = new Map()
    load = async (id) => {
      const c = np.tenant(id).take()
      held.set(id, c)
      await c.waitReady()
    }
    release = async (id) => {
      await held.get(id).shutdown()
      held.delete(id) // the core's state goes when the JS object holding it is collected
    }
    coreTenants = () => np.status().tenants
  } else {
    const { createTenantPool } = require(LIB)
    const pool = createTenantPool(opts)
    load = (id) => pool.tenant(id)
    release = (id) => pool.release(id)
    coreTenants = () => pool._native.status().tenants
  }
  for (let i = 0; i < WARMUP; i++) await load(ids[i])
  await gcs()
  const before = memory()
  for (let i = WARMUP; i < tenants; i++) await load(ids[i])
  await new Promise((r) => setTimeout(r, 500))
  await gcs()
  const loaded = memory()
  const n = Math.floor((tenants - WARMUP) * 0.8)
  for (let i = 0; i < n; i += 100) {
    await Promise.all(ids.slice(WARMUP + i, WARMUP + Math.min(i + 100, n)).map(release))
  }
  await new Promise((r) => setTimeout(r, 1000))
  const releasedNoGc = memory()
  await gcs()
  const released = memory()
  const coreAfter = coreTenants()
  process.stdout.write(`TRIM ${process.pid}\n`)
  await new Promise((resolve) =>
    readline.createInterface({ input: process.stdin }).once('line', resolve),
  )
  await gcs()
  const trimmed = memory()
  process.stdout.write(
    `RESULT ${JSON.stringify({ variant, tenants, measured: tenants - WARMUP, releasedN: n, before, loaded, releasedNoGc, released, trimmed, coreAfter })}\n`,
  )
  process.exit(0)
}

function runVariant(variant, config) {
  return new Promise((resolve, reject) => {
    const env = { ...process.env }
    if (variant === 'jemalloc') {
      env.LD_PRELOAD = JEMALLOC
      env.MALLOC_CONF = 'dirty_decay_ms:0,muzzy_decay_ms:0' // give freed pages back at once
    }
    const nodeArgs = ['--expose-gc', __filename, '--child', JSON.stringify({ ...config, variant })]
    const out = process.env.HEAPTRACK ? `/tmp/heaptrack.pool-${variant}` : null
    const [cmd, args] = out
      ? ['heaptrack', ['-o', out, process.execPath, ...nodeArgs]]
      : [process.execPath, nodeArgs]
    const p = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'inherit'] })
    readline.createInterface({ input: p.stdout }).on('line', (line) => {
      if (line.startsWith('TRIM ')) {
        const pid = line.slice(5)
        try {
          execFileSync('gdb', ['-p', pid, '-batch', '-ex', 'call (int)malloc_trim(0)'], {
            stdio: 'ignore',
            timeout: 60000,
          })
        } catch {
          // no gdb (or no ptrace): the last reading is then just one more
        }
        p.stdin.write('go\n')
      } else if (line.startsWith('RESULT ')) resolve(JSON.parse(line.slice(7)))
      else console.log(`  [${variant}] ${line}`)
    })
    p.on('exit', (code) => (code ? reject(new Error(`${variant} exited ${code}`)) : null))
  })
}

async function main() {
  const tenants = Number(process.argv[2] || 2000)
  const variants = (process.argv[3] || 'js,native,jemalloc')
    .split(',')
    .filter((v) => v !== 'jemalloc' || fs.existsSync(JEMALLOC))
  const { startRedis } = require('../../tools/test-helpers/index.js')
  const { startMultiTenantSim } = require('../../tools/wrapper-sim.js')
  const { smallTenant, tenantId } = require('../lib/tenants.js')
  const redis = await startRedis()
  const one = smallTenant()
  const all = {}
  for (let i = 0; i < tenants; i++) all[tenantId('pt', i)] = one
  const sim = await startMultiTenantSim({ tenants: all })
  const kb = (x) => `${(x / 1024).toFixed(1)} KB`
  const mib = (x) => `${(x / 1048576).toFixed(1)} MiB`
  try {
    console.log(`${tenants} small tenants (${WARMUP} warm-up), lib ${LIB}`)
    for (const v of variants) {
      const r = await runVariant(v, { tenants, redisUrl: redis.url, wrapperUrl: sim.url })
      const g = (at, k) => r[at][k] - r.before[k]
      console.log(
        `${v.padEnd(8)} per tenant: RSS ${kb(g('loaded', 'rss') / r.measured)}, RssAnon ` +
          `${kb(g('loaded', 'rssAnon') / r.measured)}, V8 heap ${kb(g('loaded', 'heap') / r.measured)}` +
          ` | released ${r.releasedN} (core still holds ${r.coreAfter} tenants): growth RSS ` +
          `${mib(g('loaded', 'rss'))} -> ${mib(g('releasedNoGc', 'rss'))} (no GC) -> ` +
          `${mib(g('released', 'rss'))} after GC -> ` +
          `${mib(g('trimmed', 'rss'))} after malloc_trim; heap ${mib(g('loaded', 'heap'))} -> ` +
          `${mib(g('released', 'heap'))}`,
      )
    }
  } finally {
    await sim.stop()
    await redis.stop()
  }
}

if (process.argv[2] === '--child') child(JSON.parse(process.argv[3]))
else
  main().then(
    () => process.exit(0),
    (err) => {
      console.error(err)
      process.exit(1)
    },
  )
