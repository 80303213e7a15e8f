'use strict'
// createPublisher: the publishing side of SPEC §3, for a Wrapper written in
// Node. Messages get `eventId`, `timestamp` and `tenantId`, and a signature
// (with the first secret) when `signingSecret` is set; the signing itself
// happens in the Rust core, the same code the consumer verifies with.
//
// The factory is synchronous: it validates (TypeError/RangeError naming the
// option) and returns the publisher; the Rust core connects on the first
// publish, reconnects by itself after a lost connection or a Redis restart, and
// makes a publish wait up to `connectTimeoutMs` for an unreachable Redis before
// it rejects with REDIS_UNAVAILABLE.

const { createPublisher: createNativePublisher } = require('../index.js')
const errors = require('./errors.js')
const { readEnv, toJsonOptions } = require('./options.js')

function closedError() {
  const e = new Error('the publisher has been closed')
  e.code = 'SHUTDOWN'
  return e
}

/**
 * Creates a publisher: `{ redisUrl = REDIS_URL || 'redis://127.0.0.1:6379',
 * tenantId, channelPrefix = 'crm', signingSecret, connectTimeoutMs = 5000 }`.
 * `signingSecret` is a string or a non-empty array of strings (it signs with
 * the first). Returns `{ publish(topic, eventType, data = {}, { version }),
 * close() }` at once; it connects on first use. Not a thenable, so
 * `await createPublisher(...)` yields the publisher too.
 */
function createPublisher(options = {}) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw errors.typeError('options must be an object with at least `tenantId`')
  }
  const json = {}
  for (const [name, value] of Object.entries(options)) {
    if (value !== undefined) json[name] = toJsonOptions(value, name)
  }
  const native = createNativePublisher(json, readEnv())
  let closed = false
  return {
    /**
     * Publishes one event; resolves to the number of receivers. While Redis is
     * unreachable it waits up to `connectTimeoutMs`, then rejects with code
     * REDIS_UNAVAILABLE; after close() it rejects with code SHUTDOWN.
     */
    async publish(topic, eventType, data = {}, { version } = {}) {
      if (closed) throw closedError()
      if (typeof topic !== 'string') throw errors.typeError('topic must be a string')
      if (typeof eventType !== 'string') throw errors.typeError('eventType must be a string')
      if (data === null || typeof data !== 'object' || Array.isArray(data)) {
        throw errors.typeError('data must be an object')
      }
      if (version !== undefined && !(Number.isSafeInteger(version) && version >= 0)) {
        throw errors.rangeError('version must be a non-negative safe integer')
      }
      try {
        return await native.publish(topic, eventType, data, version ?? null)
      } catch (err) {
        throw err && err.code === 'SHUTDOWN' ? closedError() : err
      }
    },
    /** Closes the publisher: pending and later publishes reject with SHUTDOWN. Idempotent. */
    async close() {
      closed = true
      native.close()
    },
  }
}

module.exports = { createPublisher }
