'use strict'
// One instance of a fleet (group `fleet`, SPEC §7), in its own OS process: a
// SmartCRMConsumer (release addon) built from the JSON options in argv[2], with
// a quiet logger. It is driven over IPC by bench/lib/fleet.js:
//
//   → { cmd: 'go' }     initialize() (the parent sends it to every instance at
//                       once, so that the row times the loads, not Node's start)
//   → { cmd: 'state' }  answers { type: 'state', state }
//   → { cmd: 'exit' }   shuts the consumer down and exits
//   ← { type: 'constructed' } once the consumer exists (modules loaded)
//   ← { type: 'ready', ok, initMs, cpuMs, state } or { type: 'ready', ok: false, code, message, … }
//
// `state` is what the rows read: the §7 metrics, health().source, the cost of
// the watched operation (argv[3]) and this process's RSS and peak RSS.

const path = require('node:path')
const { SmartCRMConsumer } = require(path.join(__dirname, '..', 'lib', 'index.js'))

// The package requires the optional @opentelemetry/api on the first span, i.e.
// inside initialize(): 25–50 ms and ~8 MiB on this machine when it is installed
// (it is, as a dev dependency). An app that traces has loaded it long before its
// consumer starts, so it is loaded here, before the timed part, when present.
let tracingApi = false
try {
  require('@opentelemetry/api')
  tracingApi = true
} catch {
  // not installed: the package finds that out in ~1 ms
}

const options = JSON.parse(process.argv[2])
const watch = process.argv[3] || null
const quiet = { debug() {}, info() {}, warn() {}, error() {} }
const consumer = new SmartCRMConsumer({ ...options, logger: quiet })
consumer.on('error', () => {})

function state() {
  const m = consumer.getMetrics()
  let cost = null
  if (watch) {
    try {
      cost = consumer.getCreditCost(watch)
    } catch {
      cost = 'unavailable'
    }
  }
  const h = consumer.health()
  return {
    connected: m.connected,
    ready: h.ready,
    source: h.source,
    resyncs: m.resyncs,
    resumes: m.resumes,
    reconnects: m.reconnects,
    snapshotLoads: m.snapshotLoads,
    snapshotRejected: m.snapshotRejected,
    wrapperRequests: m.wrapperRequests,
    eventsApplied: m.eventsApplied,
    criticalCacheSize: m.criticalCacheSize,
    cost,
    rssMiB: process.memoryUsage.rss() / 1048576,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
  }
}

const send = (msg) => {
  if (process.connected) process.send(msg)
}

process.on('message', async (msg) => {
  if (!msg || typeof msg !== 'object') return
  if (msg.cmd === 'go') {
    const t0 = process.hrtime.bigint()
    const cpu0 = process.cpuUsage()
    try {
      await consumer.initialize()
      const initMs = Number(process.hrtime.bigint() - t0) / 1e6
      const cpu = process.cpuUsage(cpu0)
      // CPU time of the whole process (every thread) during initialize()
      const cpuMs = (cpu.user + cpu.system) / 1000
      send({ type: 'ready', ok: true, initMs, cpuMs, state: state() })
    } catch (err) {
      const initMs = Number(process.hrtime.bigint() - t0) / 1e6
      send({
        type: 'ready',
        ok: false,
        code: err.code,
        message: err.message,
        initMs,
        state: state(),
      })
    }
  } else if (msg.cmd === 'state') {
    send({ type: 'state', state: state() })
  } else if (msg.cmd === 'exit') {
    await consumer.shutdown().catch(() => {})
    process.exit(0)
  }
})
// The parent gone (killed, crashed): do not linger.
process.on('disconnect', () => process.exit(0))

send({ type: 'constructed', tracingApi })
