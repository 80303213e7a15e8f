'use strict'
// Shared bench helpers: statistics, the two subjects (package and baseline)
// built from one set of options, child processes that report one JSON result
// over IPC, and a small wall clock that agrees across processes.

const path = require('node:path')
const { fork } = require('node:child_process')
const { quietLogger } = require('../../tools/test-helpers/index.js')

const ROOT = path.join(__dirname, '..', '..')

/** Median of numbers (NaN for none). */
function median(xs) {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** The p-th percentile (0..100) of numbers, nearest rank. */
function percentile(xs, p) {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))
  return s[rank]
}

/** Epoch milliseconds with sub-ms resolution, comparable between processes. */
const wallMs = () => performance.timeOrigin + performance.now()

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Consumer options shared by both subjects. */
function consumerOptions({ tenantId, wrapperUrl, redisUrl, ...extra }) {
  return {
    tenantId,
    wrapperUrl,
    redisUrl,
    refreshIntervalMs: 0,
    initTimeoutMs: 600000,
    requestTimeoutMs: 30000,
    logger: quietLogger({ keep: ['error'] }),
    ...extra,
  }
}

/**
 * A subject: `'package'` (SmartCRMConsumer, release addon) or `'baseline'`
 * (bench/baselines/js-consumer.js), constructed from the same options.
 */
function makeSubject(side, opts) {
  if (side === 'package') {
    const { SmartCRMConsumer } = require(path.join(ROOT, 'lib', 'index.js'))
    return new SmartCRMConsumer(consumerOptions(opts))
  }
  if (side === 'baseline') {
    const { JsConsumer } = require('../baselines/js-consumer.js')
    return new JsConsumer(opts)
  }
  throw new Error(`unknown side ${side}`)
}

/** Events the subject has applied so far (its own counter). */
function eventsApplied(subject) {
  return subject.getMetrics().eventsApplied
}

/**
 * Runs `bench/<script>` in a child process with `config` (JSON) and resolves to
 * the one result it sends with `process.send`. Rejects when the child fails.
 */
function runChild(script, config, { execArgv = [], timeoutMs = 600000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, '..', script), [JSON.stringify(config)], {
      execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    let result = null
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`${script} ${config.side}: no result within ${timeoutMs} ms`))
    }, timeoutMs)
    child.on('message', (msg) => {
      if (msg && msg.type === 'result') result = msg.result
      else if (msg && msg.type === 'error') result = { error: msg.error }
    })
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      if (result && result.error) reject(new Error(`${script} ${config.side}: ${result.error}`))
      else if (result) resolve(result)
      else
        reject(new Error(`${script} ${config.side}: exited (${code ?? signal}) without a result`))
    })
  })
}

/**
 * The body of a child script: reads its config from argv, runs `main(config)`,
 * sends the result (or the error) to the parent and exits.
 */
function childMain(main) {
  const config = JSON.parse(process.argv[2])
  main(config).then(
    (result) => process.send({ type: 'result', result }, () => process.exit(0)),
    (err) => {
      console.error(err)
      process.send({ type: 'error', error: String((err && err.stack) || err) }, () =>
        process.exit(1),
      )
    },
  )
}

/**
 * A helper process `bench/<script>` that talks over IPC while it runs:
 * `next(type)` resolves to its next message of that type (rejects on a
 * 'failed' message or when it exits first). For publishers and sinks that a
 * measured child starts beside itself.
 */
function spawnHelper(script, config) {
  const child = fork(path.join(__dirname, '..', script), [JSON.stringify(config)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const next = (type) =>
    new Promise((resolve, reject) => {
      const onMessage = (msg) => {
        if (msg.type === type) {
          child.off('message', onMessage)
          resolve(msg)
        } else if (msg.type === 'failed') reject(new Error(msg.error))
      }
      child.on('message', onMessage)
      child.once('exit', (code) => reject(new Error(`${script} exited (${code})`)))
    })
  return { child, next }
}

/** Resident set size in MiB. */
const rssMiB = () => process.memoryUsage.rss() / 1048576

/** Full GCs (needs --expose-gc), with turns of the loop between them. */
async function fullGc() {
  if (typeof global.gc !== 'function') return
  for (let i = 0; i < 4; i++) {
    global.gc()
    await sleep(20)
  }
}

module.exports = {
  ROOT,
  median,
  percentile,
  wallMs,
  sleep,
  consumerOptions,
  makeSubject,
  eventsApplied,
  runChild,
  spawnHelper,
  childMain,
  rssMiB,
  fullGc,
}
