'use strict'
// Row 7b, a full reload under reads, for the package in its own process:
// a consumer of a tenant with `users` users (paged, from the parent's Wrapper
// simulator) serves reads of users it has not read before (so the JS replica
// asks the core, `userAccess`) on a 1 ms timer, while the core does one full
// reload asked by `resync-required` on the control channel. Measures the
// event-loop delay (perf_hooks.monitorEventLoopDelay, 1 ms resolution) and the
// longest single read, from the publish until `tailMs` after the consumer
// emitted 'resync', and the same over a quiet window of about the same
// length before the trigger (the same reads, no reload: the floor).
//
// Only the public API is used, so the script runs on any version of the
// package: `resyncJitterMs: 0` is passed when the constructor accepts it
// (versions with a jittered resync), and left out when it refuses it.

const { monitorEventLoopDelay } = require('node:perf_hooks')
const { childMain, makeSubject, fullGc, sleep } = require('./lib/common.js')
const { connectRedis } = require('../__test__/helpers/resp.js')
const data = require('./lib/data.js')

const RESOLUTION_MS = 1
// k-th read → user (k * STRIDE + start) mod users: every user once per `users` reads
const STRIDE = 7919 // a prime: coprime with the bench's user counts (10^6, 5,000)

/** The package consumer, with `resyncJitterMs: 0` when this version knows the option. */
function makePackage(opts) {
  try {
    return { subject: makeSubject('package', { ...opts, resyncJitterMs: 0 }), jitterOption: true }
  } catch (err) {
    if (!(err instanceof TypeError) || !/resyncJitterMs/.test(String(err.message))) throw err
    return { subject: makeSubject('package', opts), jitterOption: false }
  }
}

const hrMs = (t0) => Number(process.hrtime.bigint() - t0) / 1e6

/**
 * Reads users on a 1 ms timer until stopped. `window()` starts a measurement
 * window (its own event-loop-delay histogram and read statistics); `end()`
 * closes it and returns the figures.
 */
function startReader(subject, { users, nRoles, readsPerTick, start }) {
  let k = 0
  let win = null
  const tick = () => {
    for (let i = 0; i < readsPerTick; i++) {
      const u = (k * STRIDE + start) % users
      const id = data.userId(u)
      const fresh = k < users
      k++
      let t0 = process.hrtime.bigint()
      const status = subject.getUserStatus(id) // a first read: the replica asks the core
      const statusMs = hrMs(t0)
      t0 = process.hrtime.bigint()
      const allowed = subject.checkPermission(id, `crm.r${u % nRoles}.e5.act`) // a replica hit
      const permMs = hrMs(t0)
      if (!win) continue
      const active = u % 50 !== 49
      win.reads += 2
      if (fresh) win.firstReads++
      if (status !== (active ? 'active' : 'suspended') || allowed !== active) win.wrong++
      for (const ms of [statusMs, permMs]) {
        if (ms > win.maxReadMs) win.maxReadMs = ms
        if (ms > 10) win.slowReads++
      }
    }
  }
  const timer = setInterval(tick, 1)
  return {
    window() {
      const eld = monitorEventLoopDelay({ resolution: RESOLUTION_MS })
      win = { eld, t0: process.hrtime.bigint(), reads: 0, firstReads: 0, wrong: 0, slowReads: 0 }
      win.maxReadMs = 0
      eld.enable()
    },
    end() {
      const w = win
      win = null
      w.eld.disable()
      return {
        ms: hrMs(w.t0),
        reads: w.reads,
        firstReads: w.firstReads,
        wrong: w.wrong,
        slowReads: w.slowReads,
        maxReadMs: w.maxReadMs,
        eldSamples: w.eld.count,
        eldP50Ms: w.eld.percentile(50) / 1e6,
        eldP99Ms: w.eld.percentile(99) / 1e6,
        eldMaxMs: w.eld.max / 1e6,
      }
    },
    stop() {
      clearInterval(timer)
    },
  }
}

async function main(config) {
  const { redisUrl, tenantId, wrapperUrl, users, nRoles, readsPerTick, tailMs } = config
  const { subject, jitterOption } = makePackage({ tenantId, wrapperUrl, redisUrl })
  const t0 = process.hrtime.bigint()
  await subject.initialize()
  const initMs = hrMs(t0)
  await fullGc()
  const resyncsBefore = subject.getMetrics().resyncs
  const pub = await connectRedis(redisUrl)

  const reader = startReader(subject, { users, nRoles, readsPerTick, start: 12345 % users })
  await sleep(config.warmupMs) // JIT warm-up, not measured

  // the floor: the same reads, no reload, for about as long as the reload will take
  const quietMs = Math.min(config.maxQuietMs, Math.max(config.minQuietMs, initMs)) + tailMs
  reader.window()
  await sleep(quietMs)
  const quiet = reader.end()

  // the reload: from the publish until tailMs after 'resync'
  const resynced = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no 'resync' within ${config.timeoutMs} ms`)),
      config.timeoutMs,
    )
    subject.on('resync', (e) => {
      if (e.reason !== 'resync-required') return
      clearTimeout(timer)
      resolve(e)
    })
  })
  const event = {
    eventId: `bench-reload-${Date.now()}`,
    eventType: 'resync-required',
    tenantId,
    timestamp: new Date().toISOString(),
    data: {},
  }
  reader.window()
  const tTrigger = process.hrtime.bigint()
  const receivers = await pub.publish(`crm:${tenantId}:control`, JSON.stringify(event))
  await resynced
  const reloadMs = hrMs(tTrigger)
  await sleep(tailMs)
  const reload = reader.end()
  reader.stop()

  const resyncs = subject.getMetrics().resyncs - resyncsBefore
  pub.destroy()
  await subject.shutdown()
  return {
    side: config.side,
    users,
    jitterOption,
    initMs,
    receivers,
    reloadMs,
    resyncs,
    quiet,
    reload,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
  }
}

childMain(main)
