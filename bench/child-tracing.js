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

async function main({ tenantId, wrapperUrl, redisUrl, sizes }) {
  const consumer = new SmartCRMConsumer(
    consumerOptions({ tenantId, wrapperUrl, redisUrl, circuitBreaker: { failures: 1000 } }),
  )
  await consumer.initialize()
  const ids = ['u-alice', 'u-bob', 'u-carol']
  for (const id of ids) await consumer.getUserProfile(id)
  const rows = { hit: [], miss: [], credits: [], spanOnly: [], bare: [] }
  const one = Promise.resolve(1)
  for (let rep = 0; rep < sizes.reps; rep++) {
    rows.hit.push(await perCall(sizes.hits, (i) => consumer.getUserProfile(ids[i % 3])))
    rows.miss.push(
      await perCall(sizes.misses, (i) => {
        consumer.invalidate(`user:${ids[i % 3]}`)
        return consumer.getUserProfile(ids[i % 3])
      }),
    )
    rows.credits.push(await perCall(sizes.misses, () => consumer.getUserCredits('u-alice')))
    // The span alone: the same helper around an already settled promise, and
    // the same await without it.
    rows.bare.push(await perCall(sizes.hits, () => one))
    rows.spanOnly.push(
      await perCall(sizes.hits, () => tracing.referenceMiss('user', tenantId, () => one)),
    )
  }
  // Every profile read from the cache after the loops: nothing was lost.
  for (const id of ids) if (!(await consumer.getUserProfile(id)).name) throw new Error('no profile')
  await consumer.shutdown()
  const m = {}
  for (const [k, v] of Object.entries(rows)) m[k] = median(v)
  return {
    ...m,
    state: tracing._state(),
    loaded: Object.keys(require.cache).filter((k) => k.includes('@opentelemetry')).length,
  }
}

childMain(main)
