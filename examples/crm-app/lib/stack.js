'use strict'
// Everything the app needs around it, started for real: Redis (a private
// redis-server unless a URL is given: the package's test helper), one
// multi-tenant Wrapper simulator process (publishing signed change events),
// and a tenant pool from the installed package, with the tenants loaded up
// front. Used by server.js, the tests and the load runs.

const { randomBytes } = require('node:crypto')
const { createTenantPool } = require('smart-crm-consumer')
const { startRedis, quietLogger } = require('smart-crm-consumer/test-helpers')

const { startWrapper } = require('./wrapper.js')

/**
 * @param {object} [o]
 * @param {string[]} [o.tenants] the tenants the Wrapper serves; default: every tenant of seed.json
 * @param {string[]} [o.preload] tenants loaded before it resolves (default: every served
 *   tenant); the others load on their first request
 * @param {string} [o.redisUrl] use this Redis; default: start a private one
 * @param {string} [o.signingSecret] default: a random one
 * @param {number} [o.canaryMs] the Wrapper's propagation canary period
 * @param {object} [o.poolOptions] more createTenantPool options (maxTenants, idleTenantMs, …)
 * @param {boolean} [o.inheritStderr] show the simulator's stderr
 * @param {Function} [o.createPool] `(options) => pool`, default `createTenantPool`
 */
async function startStack({
  tenants,
  preload,
  redisUrl,
  signingSecret = randomBytes(32).toString('hex'),
  canaryMs,
  poolOptions = {},
  inheritStderr = false,
  createPool = createTenantPool,
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
    const wrapper = await startWrapper({
      tenants,
      redisUrl: url,
      signingSecret,
      canaryMs,
      inheritStderr,
    })
    stoppers.push(() => wrapper.stop())
    const pool = createPool({
      wrapperUrl: wrapper.url,
      redisUrl: url,
      signingSecret,
      logger: quietLogger({ keep: ['error'] }),
      ...poolOptions,
    })
    stoppers.push(() => pool.shutdown())
    await Promise.all((preload ?? wrapper.tenants).map((id) => pool.tenant(id)))
    return { redis, redisUrl: url, signingSecret, wrapper, pool, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

module.exports = { startStack }
