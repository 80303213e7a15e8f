'use strict'
// The cost of tracing (SPEC §10): `node bench/tracing.js` (writes
// bench/RESULTS-tracing.md) or `node bench/tracing.js --smoke` (tiny sizes,
// printed only).
//
// The same loops run in three child processes (bench/child-tracing.js), one
// per side: without @opentelemetry/api, with the API and no SDK, and with the
// SDK registered (BatchSpanProcessor, spans dropped by the exporter). The sides
// run one after the other, in a rotating order, `reps` times; values are the
// medians over those runs. Redis is a private redis-server on a free port; the
// Wrapper is the simulator, in this process. Like bench/run.js it refuses a
// debug addon, and exits non-zero only when something breaks.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { execFileSync } = require('node:child_process')

const { startRedis } = require('../tools/test-helpers/index.js')
const { startWrapperSim } = require('../tools/wrapper-sim.js')
const { ROOT, median, runChild, sleep } = require('./lib/common.js')

const SMOKE = process.argv.includes('--smoke')
const OUT = path.join(__dirname, 'RESULTS-tracing.md')
const BINARY = path.join(ROOT, 'smart-crm-consumer.linux-x64-gnu.node')
const DEBUG_BUILD_BYTES = 30 * 1024 * 1024
const SIZES = SMOKE
  ? { hits: 2000, misses: 100, reps: 1, runs: 1 }
  : { hits: 50000, misses: 2000, reps: 3, runs: 5 }
const SIDES = ['none', 'api', 'sdk']
const LABEL = {
  none: 'no `@opentelemetry/api`',
  api: 'API, no SDK',
  sdk: 'SDK registered',
}

const log = (...a) => console.log('[bench:tracing]', ...a)

/** Share of CPU time the whole machine spent busy over `ms`. */
async function machineBusy(ms = 1000) {
  const read = () => {
    const n = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1)
    const v = n.map(Number)
    return { idle: v[3] + v[4], total: v.reduce((a, b) => a + b, 0) }
  }
  const a = read()
  await sleep(ms)
  const b = read()
  return 1 - (b.idle - a.idle) / (b.total - a.total)
}

function fmtNs(ns) {
  if (ns >= 10_000) return `${(ns / 1000).toFixed(1)} µs`
  if (ns >= 1000) return `${Math.round(ns).toLocaleString('en-US')} ns`
  return `${ns.toFixed(1)} ns`
}

function fmtDelta(ns) {
  const sign = ns >= 0 ? '+' : '−'
  return `${sign}${fmtNs(Math.abs(ns))}`
}

async function main() {
  const started = Date.now()
  const stat = fs.statSync(BINARY)
  if (stat.size > DEBUG_BUILD_BYTES && !SMOKE) {
    throw new Error(
      `${path.basename(BINARY)} is a debug build (${(stat.size / 1048576).toFixed(0)} MiB): run \`npm run build\` first`,
    )
  }
  const busyBefore = await machineBusy()
  const redis = await startRedis()
  const tenantId = 'bench-tracing'
  const sim = await startWrapperSim({ tenantId })
  const runs = Object.fromEntries(SIDES.map((s) => [s, []]))
  try {
    for (let r = 0; r < SIZES.runs; r++) {
      const order = SIDES.map((_, i) => SIDES[(i + r) % SIDES.length])
      for (const side of order) {
        log(`run ${r + 1}/${SIZES.runs}: ${side}`)
        runs[side].push(
          await runChild('child-tracing.js', {
            side,
            tenantId,
            wrapperUrl: sim.url,
            redisUrl: redis.url,
            sizes: SIZES,
          }),
        )
      }
    }
  } finally {
    await sim.stop()
    await redis.stop()
  }
  const busyAfter = await machineBusy()
  const m = {}
  for (const side of SIDES) {
    m[side] = {}
    for (const k of [
      'hit',
      'miss',
      'credits',
      'spanOnly',
      'bare',
      'missOff',
      'creditsOff',
      'missCpu',
      'missCpuOff',
      'creditsCpu',
      'creditsCpuOff',
      'missMain',
      'missMainOff',
      'creditsMain',
      'creditsMainOff',
    ])
      m[side][k] = median(runs[side].map((x) => x[k]))
    m[side].state = runs[side].map((x) => x.state)
    m[side].loaded = runs[side].map((x) => x.loaded)
  }
  if (m.none.state.some((s) => s !== false) || m.none.loaded.some((n) => n !== 0))
    throw new Error('the "none" side loaded @opentelemetry/api')
  if (m.sdk.state.some((s) => s !== true)) throw new Error('the "sdk" side did not load the API')

  const rows = [
    ['T1', 'Reference hit, awaited (`getUserProfile`, cached)', 'hit'],
    [
      'T2',
      'Reference miss, awaited (invalidate, then `getUserProfile`: one Wrapper request)',
      'miss',
    ],
    ['T3', '`getUserCredits`, awaited (one Wrapper request)', 'credits'],
    [
      'T4',
      'The span alone: `lib/tracing.js` starts and ends one, next to an awaited settled promise, minus the bare `await`',
      'span',
    ],
  ]
  const value = (side, key) => (key === 'span' ? m[side].spanOnly - m[side].bare : m[side][key])
  // The SDK side's Wrapper rows, with the package's tracing off in the same process.
  const off = (key) =>
    key === 'miss' ? m.sdk.missOff : key === 'credits' ? m.sdk.creditsOff : null
  const pairedDelta = (key) =>
    key === 'miss' || key === 'credits'
      ? fmtDelta(median(runs.sdk.map((x) => x[key] - (key === 'miss' ? x.missOff : x.creditsOff))))
      : '—'
  const table = [
    `| #   | measure | ${SIDES.map((s) => LABEL[s]).join(' | ')} | SDK registered, the package's tracing off | SDK − none | on − off (same process) |`,
    `| --- | --- | ${SIDES.map(() => '---:').join(' | ')} | ---: | ---: | ---: |`,
    ...rows.map(
      ([n, what, key]) =>
        `| ${n} | ${what} | ${SIDES.map((s) => fmtNs(value(s, key))).join(' | ')} | ${off(key) === null ? '—' : fmtNs(off(key))} | ${fmtDelta(value('sdk', key) - value('none', key))} | ${pairedDelta(key)} |`,
    ),
  ]
  const perRun = rows
    .map(
      ([n, , key]) =>
        `${n}: ${SIDES.map(
          (side) =>
            `${side} ${runs[side]
              .map((x) => fmtNs(key === 'span' ? x.spanOnly - x.bare : x[key]))
              .join(' / ')}`,
        ).join('; ')}`,
    )
    .join('. ')
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
  let redisVersion = 'unknown'
  try {
    redisVersion = /v=(\S+)/.exec(
      execFileSync('redis-server', ['--version'], { encoding: 'utf8' }),
    )[1]
  } catch {
    // not found: startRedis would have failed first
  }
  const doc = `# Tracing cost (SPEC §10)

- Command: \`node bench/tracing.js\`${SMOKE ? ' --smoke' : ''}
- Date: ${new Date(started).toISOString()} (took ${Math.round((Date.now() - started) / 1000)} s)
- Machine: ${cpu}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 1073741824)} GiB RAM; Node ${process.version}; redis-server ${redisVersion} (private, loopback)
- Package: addon \`${path.basename(BINARY)}\` (${(stat.size / 1048576).toFixed(1)} MiB, built ${stat.mtime.toISOString()})
- Machine load: ${Math.round(busyBefore * 100)} % of all CPU busy in the second before the run, ${Math.round(busyAfter * 100)} % in the second after.

Columns: the same loops in three processes: **${LABEL.none}** (resolving it fails, as in an app
that does not have it: the package looks for it once and never loads it); **${LABEL.api}** (the
API's no-op tracer answers); **${LABEL.sdk}** (\`BasicTracerProvider\` with a
\`BatchSpanProcessor\` whose exporter drops the spans, and the AsyncLocalStorage context
manager: an app's setup without the network). ns per call, each call awaited before the next;
median of ${SIZES.runs} runs per side (sides in rotating order), each run the median of
${SIZES.reps} repetitions of ${SIZES.hits.toLocaleString('en-US')} hits / ${SIZES.misses.toLocaleString('en-US')} Wrapper calls.

${table.join('\n')}

CPU time per call in the SDK process, traced / not traced, same blocks: the JS thread
(schedstat) reference miss ${fmtNs(m.sdk.missMain)} / ${fmtNs(m.sdk.missMainOff)} (${fmtDelta(m.sdk.missMain - m.sdk.missMainOff)}),
\`getUserCredits\` ${fmtNs(m.sdk.creditsMain)} / ${fmtNs(m.sdk.creditsMainOff)} (${fmtDelta(m.sdk.creditsMain - m.sdk.creditsMainOff)});
the whole process (every thread, the core's included) reference miss ${fmtNs(m.sdk.missCpu)} / ${fmtNs(m.sdk.missCpuOff)} (${fmtDelta(m.sdk.missCpu - m.sdk.missCpuOff)}),
\`getUserCredits\` ${fmtNs(m.sdk.creditsCpu)} / ${fmtNs(m.sdk.creditsCpuOff)} (${fmtDelta(m.sdk.creditsCpu - m.sdk.creditsCpuOff)}).

Per run (in the order they ran: ${perRun}).

- **T1** makes no span on any side: a hit never touches the tracing code.
- **T2, T3**: one span per call on the SDK side (a reference miss: \`smart-crm-consumer
  getUserProfile\`; credits: \`GET /api/users/{id}/credits\`), against a Wrapper request over
  loopback HTTP to the simulator in the parent process. The request dominates, and the
  run-to-run spread of a side (above) is larger than a span, so the columns of separate
  processes differ mostly by noise. The SDK process therefore runs these loops in alternating
  blocks of 50 calls with the package's tracing on and off (\`_disable()\` of
  \`lib/tracing.js\`: no span, as without the API), both halves under the same load: the
  **SDK registered** column is the traced half, the next one the other, and **on − off** the
  median of the runs' differences.
- **T4** isolates what a span costs, without the request's noise: \`startReferenceMiss()\`
  and \`end()\` of \`lib/tracing.js\` next to an already settled promise, minus the same
  \`await\` without them. A traced call adds no promise: the span ends in the continuation
  the call has anyway.
`
  console.log(`\n${table.join('\n')}\n`)
  if (!SMOKE) {
    fs.writeFileSync(OUT, doc)
    log(`wrote ${path.relative(ROOT, OUT)}`)
  }
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
