'use strict'
// Test fixture: a private redis-server, a Wrapper simulator over real HTTP and a
// consumer wired to both, torn down (by PID) when the test ends.

const { spawn } = require('node:child_process')
const path = require('node:path')

const { startRedis, waitFor, quietLogger } = require('../../tools/test-helpers/index.js')
const { connectRedis } = require('./resp.js')
const { startWrapperSim, defaultSeed } = require('../../tools/wrapper-sim.js')
const { SmartCRMConsumer } = require('../../lib/index.js')

let seq = 0

/** A logger that keeps every line, for assertions (and secret checks). */
function captureLogger() {
  const lines = []
  const logger = {}
  for (const level of ['debug', 'info', 'warn', 'error']) {
    logger[level] = (...args) => lines.push({ level, msg: args.map(String).join(' ') })
  }
  return { logger, lines }
}

/**
 * Resolves with the first `name` event of `emitter` for which `filter` is true;
 * rejects after `timeout` ms. Create it before the action that causes the event.
 */
function nextEvent(emitter, name, { filter = () => true, timeout = 15_000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(name, on)
      reject(new Error(`no '${name}' event within ${timeout} ms`))
    }, timeout)
    const on = (e) => {
      if (!filter(e)) return
      clearTimeout(timer)
      emitter.off(name, on)
      resolve(e)
    }
    emitter.on(name, on)
  })
}

/**
 * Starts redis + simulator (+ consumer, initialized unless `init: false`).
 * `sim` options go to startWrapperSim, `consumer` options to the constructor.
 */
async function setup(t, { sim: simOpts = {}, consumer: consumerOpts = {}, init = true } = {}) {
  const tenantId = `t${process.pid}-${++seq}`
  const redis = await startRedis()
  const sim = await startWrapperSim({ tenantId, data: defaultSeed(), ...simOpts })
  const { logger, lines: logs } = captureLogger()
  const consumer = new SmartCRMConsumer({
    tenantId,
    wrapperUrl: sim.url,
    redisUrl: redis.url,
    heartbeatMs: 500,
    // No jitter unless a test asks for it: a resync-required reloads at once.
    resyncJitterMs: 0,
    logger,
    ...consumerOpts,
  })
  const pub = await connectRedis(redis.url)
  t.teardown(async () => {
    await consumer.shutdown()
    pub.destroy()
    await sim.stop()
    await redis.stop()
  })
  if (init) await consumer.initialize()

  const channel = (topic) => `crm:${tenantId}:${topic}`
  /** Publishes a raw message (object → JSON) on a topic of this tenant. */
  const publish = (topic, msg) =>
    pub.publish(
      channel(topic),
      typeof msg === 'string' || Buffer.isBuffer(msg) ? msg : JSON.stringify(msg),
    )
  /** A well-formed event envelope. */
  const event = (eventType, data, extra = {}) => ({
    eventId: `e-${++seq}-${Math.random().toString(36).slice(2)}`,
    eventType,
    tenantId,
    timestamp: new Date().toISOString(),
    data,
    ...extra,
  })
  /**
   * Publishes a marker event after whatever was published before and waits
   * until the consumer shows it: everything published earlier has then been
   * processed (events are handled in order).
   */
  const settle = async () => {
    const marker = `marker-${++seq}`
    // The replica reads a key it does not hold from the core, which may be a
    // batch ahead of it: the marker is held (as absent) first, so that only
    // the replica's own batch can make it true (lib/replica.js).
    const configs = () => consumer._replica.configs.map
    await waitFor(() => consumer.getActiveConfig(marker) === null && configs().has(marker), {
      message: 'the marker held',
    })
    await publish('configs', event('config-changed', { configId: marker, config: true }))
    await waitFor(() => configs().get(marker) === 'true', { message: 'the marker event' })
  }
  return { tenantId, redis, sim, consumer, pub, publish, event, settle, logs, channel }
}

// waitFor and quietLogger are the shared ones (tools/test-helpers), re-exported.
/** Runs `code` in a child Node with exactly `env` (plus PATH); resolves to its stdout. */
function runNode(env, code) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', code], {
      env: { PATH: process.env.PATH, ...env },
      cwd: path.join(__dirname, '..', '..'),
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      if (code === 0) resolve(out.trim())
      else reject(new Error(`child exited with ${code}: ${err}`))
    })
  })
}

module.exports = { setup, waitFor, quietLogger, captureLogger, nextEvent, runNode }

/**
 * Starts `n` fleet instances (OS processes, __test__/helpers/fleet-child.js),
 * each a consumer with `options`; `ops` are the operation codes whose costs
 * `state()` reports. Each instance: `{ ready (promise of its first line),
 * state() (promise), exit() }`; all are killed when the test ends.
 */
function startFleet(t, n, options, ops = []) {
  const child = path.join(__dirname, 'fleet-child.js')
  const instances = []
  for (let i = 0; i < n; i++) {
    const proc = spawn(process.execPath, [child, JSON.stringify(options), JSON.stringify(ops)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    })
    const waiting = []
    let buf = ''
    proc.stdout.on('data', (d) => {
      buf += d
      let nl
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl)
        buf = buf.slice(nl + 1)
        const w = waiting.shift()
        if (w) w(JSON.parse(line))
      }
    })
    const next = () => new Promise((resolve) => waiting.push(resolve))
    const ready = next()
    instances.push({
      proc,
      ready,
      state: async () => {
        const p = next()
        proc.stdin.write('state\n')
        return p
      },
      exit: () => proc.stdin.write('exit\n'),
    })
  }
  t.teardown(() => {
    for (const i of instances) i.proc.kill('SIGKILL')
  })
  return instances
}

module.exports.startFleet = startFleet
