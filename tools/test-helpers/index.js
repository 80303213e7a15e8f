'use strict'
// Development and test helpers, shipped as `smart-crm-consumer/test-helpers`
// so that one copy serves the package's specs (__test__/), bench/, scripts/ and
// demo/, and an app installed from the tarball (examples/crm-app):
//
//   startRedis, stopAllRedis, freePort   a private redis-server (redis-server.js)
//   startSentinel, startCluster,         production topologies of SPEC §6: a
//   makeCerts, startTlsRedis             primary + replica + 3 sentinels, a 6-node
//                                        cluster, test certificates and a TLS-only
//                                        server (topologies.js)
//   connectRedis, redisCommand           a minimal RESP client (resp.js)
//   waitFor                              polls until a condition holds
//   quietLogger                          a `logger` option that drops lines
//
// Not part of the consumer's API: startRedis needs `redis-server` on PATH
// (`redis-cli` for startCluster, `openssl` for makeCerts).
// Types: index.d.ts.

const { startRedis, stopAllRedis, freePort } = require('./redis-server.js')
const { connectRedis } = require('./resp.js')
const {
  startSentinel,
  startCluster,
  makeCerts,
  startTlsRedis,
  keyslot,
  redisCommand,
} = require('./topologies.js')

/**
 * Polls `fn` (sync or async) every `interval` ms until it returns a truthy
 * value, which is returned; throws after `timeout` ms, naming `message`. This
 * is how tests await background effects.
 */
async function waitFor(fn, { timeout = 10_000, interval = 5, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeout} ms waiting for ${message}`)
    await new Promise((r) => setTimeout(r, interval))
  }
}

const LEVELS = ['debug', 'info', 'warn', 'error']

/**
 * A logger (debug, info, warn, error) that drops every line, except those of
 * the levels in `keep`, which go to `console[level]` (warn and error: stderr).
 *
 * @param {{ keep?: Array<'debug' | 'info' | 'warn' | 'error'> }} [options]
 */
function quietLogger({ keep = [] } = {}) {
  for (const level of keep) {
    if (!LEVELS.includes(level)) throw new TypeError(`quietLogger: unknown level ${level}`)
  }
  const logger = {}
  for (const level of LEVELS) {
    logger[level] = keep.includes(level) ? (...args) => console[level](...args) : () => {}
  }
  return logger
}

module.exports = {
  startRedis,
  stopAllRedis,
  freePort,
  startSentinel,
  startCluster,
  makeCerts,
  startTlsRedis,
  keyslot,
  connectRedis,
  redisCommand,
  waitFor,
  quietLogger,
}
