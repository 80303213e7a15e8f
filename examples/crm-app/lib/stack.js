'use strict'
// Everything the app needs around it, started for real: Redis (a private
// redis-server unless a URL is given: the package's test helper), one Wrapper simulator process per
// tenant (publishing signed change events), and one initialized consumer per
// tenant from the installed package. Used by server.js, the tests and the
// load runs.

const { randomBytes } = require('node:crypto')
const { SmartCRMConsumer } = require('smart-crm-consumer')
const { startRedis, quietLogger } = require('smart-crm-consumer/test-helpers')

const { startWrapper } = require('./wrapper.js')

/**
 * @param {object} [o]
 * @param {string[]} [o.tenants] default ['acme', 'globex']
 * @param {string} [o.redisUrl] use this Redis; default: start a private one
 * @param {string} [o.signingSecret] default: a random one
 * @param {number} [o.canaryMs] the Wrapper's propagation canary period
 * @param {object} [o.consumerOptions] more SmartCRMConsumer options
 * @param {boolean} [o.inheritStderr] show the simulators' stderr
 * @param {Function} [o.createConsumer] `(options) => consumer`, default `new SmartCRMConsumer`
 */
async function startStack({
  tenants = ['acme', 'globex'],
  redisUrl,
  signingSecret = randomBytes(32).toString('hex'),
  canaryMs,
  consumerOptions = {},
  inheritStderr = false,
  createConsumer = (options) => new SmartCRMConsumer(options),
} = {}) {
  const stoppers = []
  const stop = async () => {
    for (const fn of stoppers.reverse()) await fn().catch(() => {})
    stoppers.length = 0
  }
  try {
    let redis = null
    if (!redisUrl) {
      redis = await startRedis()
      stoppers.push(() => redis.stop())
    }
    const url = redisUrl ?? redis.url
    const wrappers = new Map()
    for (const tenantId of tenants) {
      const w = await startWrapper({
        tenantId,
        redisUrl: url,
        signingSecret,
        canaryMs,
        inheritStderr,
      })
      stoppers.push(() => w.stop())
      wrappers.set(tenantId, w)
    }
    const consumers = tenants.map((tenantId) =>
      createConsumer({
        tenantId,
        wrapperUrl: wrappers.get(tenantId).url,
        redisUrl: url,
        signingSecret,
        logger: quietLogger({ keep: ['error'] }),
        ...consumerOptions,
      }),
    )
    for (const c of consumers) stoppers.push(() => c.shutdown())
    await Promise.all(consumers.map((c) => c.initialize()))
    return { redis, redisUrl: url, signingSecret, wrappers, consumers, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

module.exports = { startStack }
