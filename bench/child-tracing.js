'use strict'
// Tracing rows (bench/tracing.js) for one side, in a process of its own:
//
//   none  @opentelemetry/api cannot be required (resolution fails, as in an app
//         that does not have it)
//   api   the API is there, no SDK registered (its no-op tracer answers)
//   sdk   the OpenTelemetry SDK is registered: BasicTracerProvider with a
//         BatchSpanProcessor and an exporter that drops the spans, and the
//         AsyncLocalStorage context manager (what an app's setup looks like,
//         without the network)
//
// Each call is awaited before the next. Reports ns per call (median of the
// repetitions within this process).

const fs = require('node:fs')
const path = require('node:path')
const Module = require('node:module')
const { childMain, median, consumerOptions } = require('./lib/common.js')

const config = JSON.parse(process.argv[2])

if (config.side === 'none') {
  const resolve = Module._resolveFilename
  Module._resolveFilename = function (request, ...rest) {
    if (request === '@opentelemetry/api' || request.startsWith('@opentelemetry/api/')) {
      const err = new Error(`Cannot find module '${request}'`)
      err.code = 'MODULE_NOT_FOUND'
      throw err
    }
    return resolve.call(this, request, ...rest)
  }
} else if (config.side === 'sdk') {
  const api = require('@opentelemetry/api')
  const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base')
  const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks')
  const dropping = {
    exported: 0,
    export(spans, done) {
      this.exported += spans.length
      done({ code: 0 })
    },
    shutdown: async () => {},
  }
  api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
  api.trace.setGlobalTracerProvider(
    new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(dropping)] }),
  )
}

const ROOT = path.join(__dirname, '..')
const { SmartCRMConsumer } = require(path.join(ROOT, 'lib', 'index.js'))
const tracing = require(path.join(ROOT, 'lib', 'tracing.js'))

async function perCall(n, fn) {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) await fn(i)
  return Number(process.hrtime.bigint() - t0) / n
}

/** ns per call with the package's tracing on and off, in alternating blocks of `block` calls. */
/** ns the main (JS) thread has been on a CPU (Linux schedstat), or NaN. */
function mainThreadNs() {
  try {
    const f = fs.readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8')
    return Number(f.split(' ')[0])
  } catch {
    return NaN
  }
}

async function paired(n, fn, block = 50) {
  const t = { on: 0, off: 0 }
  const cpu = { on: 0, off: 0 }
  const main = { on: 0, off: 0 }
  const calls = { on: 0, off: 0 }
  for (let b = 0; calls.on + calls.off < 2 * n; b++) {
    const side = b % 2 === 0 ? 'on' : 'off'
    if (side === 'off') tracing._disable()
    const c0 = process.cpuUsage()
    const m0 = mainThreadNs()
    t[side] += (await perCall(block, fn)) * block
    main[side] += mainThreadNs() - m0
    const c = process.cpuUsage(c0)
    cpu[side] += (c.user + c.system) * 1000 // µs → ns, every thread of the process
    calls[side] += block
    if (side === 'off') tracing._reset()
  }
  return {
    on: t.on / calls.on,
    off: t.off / calls.off,
    cpuOn: cpu.on / calls.on,
    cpuOff: cpu.off / calls.off,
    mainOn: main.on / calls.on,
    mainOff: main.off / calls.off,
  }
}

async function main({ tenantId, wrapperUrl, redisUrl, sizes }) {
  const consumer = new SmartCRMConsumer(
    consumerOptions({ tenantId, wrapperUrl, redisUrl, circuitBreaker: { failures: 1000 } }),
  )
  await consumer.initialize()
  const ids = ['u-alice', 'u-bob', 'u-carol']
  for (const id of ids) await consumer.getUserProfile(id)
  const rows = {
    hit: [],
    miss: [],
    credits: [],
    spanOnly: [],
    bare: [],
    missOff: [],
    creditsOff: [],
    missCpu: [],
    missCpuOff: [],
    creditsCpu: [],
    creditsCpuOff: [],
    missMain: [],
    missMainOff: [],
    creditsMain: [],
    creditsMainOff: [],
  }
  const one = Promise.resolve(1)
  const miss = (i) => {
    consumer.invalidate(`user:${ids[i % 3]}`)
    return consumer.getUserProfile(ids[i % 3])
  }
  const credits = () => consumer.getUserCredits('u-alice')
  for (let rep = 0; rep < sizes.reps; rep++) {
    rows.hit.push(await perCall(sizes.hits, (i) => consumer.getUserProfile(ids[i % 3])))
    if (config.side === 'sdk') {
      // On the SDK side the Wrapper rows run in alternating blocks with the
      // package's tracing on and off (as without the API) in this same
      // process: both halves see the same machine load, JIT state and
      // connections, which a comparison between processes cannot give.
      const m1 = await paired(sizes.misses, miss)
      rows.miss.push(m1.on)
      rows.missOff.push(m1.off)
      rows.missCpu.push(m1.cpuOn)
      rows.missCpuOff.push(m1.cpuOff)
      rows.missMain.push(m1.mainOn)
      rows.missMainOff.push(m1.mainOff)
      const c1 = await paired(sizes.misses, credits)
      rows.credits.push(c1.on)
      rows.creditsOff.push(c1.off)
      rows.creditsCpu.push(c1.cpuOn)
      rows.creditsCpuOff.push(c1.cpuOff)
      rows.creditsMain.push(c1.mainOn)
      rows.creditsMainOff.push(c1.mainOff)
    } else {
      rows.miss.push(await perCall(sizes.misses, miss))
      rows.credits.push(await perCall(sizes.misses, credits))
    }
    // The span alone: started and ended next to an already settled promise,
    // and the same await without it.
    rows.bare.push(await perCall(sizes.hits, () => one))
    rows.spanOnly.push(
      await perCall(sizes.hits, () => {
        tracing.end(tracing.startReferenceMiss('user', tenantId))
        return one
      }),
    )
  }
  // Every profile read from the cache after the loops: nothing was lost.
  for (const id of ids) if (!(await consumer.getUserProfile(id)).name) throw new Error('no profile')
  await consumer.shutdown()
  const m = {}
  for (const [k, v] of Object.entries(rows)) m[k] = v.length > 0 ? median(v) : null
  return {
    ...m,
    state: tracing._state(),
    loaded: Object.keys(require.cache).filter((k) => k.includes('@opentelemetry')).length,
  }
}

childMain(main)
