'use strict'
// createPublisher: the publishing side of SPEC §3, for a Wrapper written in
// Node. Messages get `eventId`, `timestamp` and `tenantId`, and a signature
// when `signingSecret` is set; the signing itself happens in the Rust core,
// the same code the consumer verifies with.

const { connectPublisher } = require('../index.js')
const errors = require('./errors.js')

/**
 * Connects a publisher: `{ redisUrl, tenantId, channelPrefix = 'crm', signingSecret }`.
 * Resolves to `{ publish(topic, eventType, data = {}, { version }), close() }`.
 */
async function createPublisher(options = {}) {
  if (options === null || typeof options !== 'object')
    throw errors.typeError('options must be an object')
  const {
    redisUrl = process.env.REDIS_URL || 'redis://127.0.0.1:6379',
    tenantId,
    channelPrefix = 'crm',
    signingSecret,
  } = options
  for (const [name, v] of Object.entries({ redisUrl, tenantId, channelPrefix })) {
    if (typeof v !== 'string') throw errors.typeError(`option \`${name}\` must be a string`)
  }
  if (signingSecret !== undefined && signingSecret !== null && typeof signingSecret !== 'string') {
    throw errors.typeError('option `signingSecret` must be a string')
  }
  const native = await connectPublisher(
    redisUrl,
    tenantId,
    channelPrefix,
    signingSecret ?? null,
  ).catch(errors.rethrow)
  return {
    /** Publishes one event; resolves to the number of receivers. */
    async publish(topic, eventType, data = {}, { version } = {}) {
      if (typeof topic !== 'string') throw errors.typeError('topic must be a string')
      if (typeof eventType !== 'string') throw errors.typeError('eventType must be a string')
      if (data === null || typeof data !== 'object' || Array.isArray(data)) {
        throw errors.typeError('data must be an object')
      }
      if (version !== undefined && !(Number.isSafeInteger(version) && version >= 0)) {
        throw errors.rangeError('version must be a non-negative safe integer')
      }
      return native.publish(topic, eventType, data, version ?? null).catch(errors.rethrow)
    },
    /** Closes the connection. */
    async close() {
      native.close()
    },
  }
}

module.exports = { createPublisher }
