'use strict'
// smart-crm-consumer/testing (SPEC §9): createTestConsumer, a SmartCRMConsumer
// whose Wrapper and Redis are memory, for testing an app's handlers.
//
// It is the real class (lib/consumer.js) over a different native half: the
// binding's NativeTestConsumer, with the methods a NativeConsumer has, over
// the core's testing.rs. So options, ids, amounts and idempotency keys are
// validated by the core as for any consumer, errors are built by the binding's
// one mapping, and an applied event goes through the core's event parser and
// critical store (versions, tombstones, validation) and reaches the JS replica
// as an ordinary batch, before apply() returns. Nothing here re-implements a
// rule: this file checks JS types, turns values into JSON text, and adds the
// double's own methods (apply, setReference, failNext, deductions) to the
// instance. No socket, task, timer or threadsafe function exists, so nothing
// keeps Node alive.

const { EventEmitter } = require('node:events')

const { NativeTestConsumer, checkId } = require('../index.js')
const { TenantPool, sumMetrics } = require('./pool.js')
const { renderFamilies } = require('./prometheus.js')
const { SmartCRMConsumer, TEST_DOUBLE, checkLogger } = require('./consumer.js')
const errors = require('./errors.js')
const { toJsonOptions } = require('./options.js')

/** The members of apply()'s options: envelope fields of the event. */
const APPLY_OPTIONS = ['version', 'eventId', 'timestamp']

function checkString(name, value) {
  if (typeof value !== 'string')
    throw errors.typeError(`${name} must be a string, got ${typeof value}`)
}

/** JSON text of `value` (a TypeError for what JSON cannot hold: BigInt, cycles). */
function jsonOf(name, value) {
  let text
  try {
    text = JSON.stringify(value)
  } catch (err) {
    throw errors.typeError(`${name} cannot be sent as JSON: ${err.message}`)
  }
  if (text === undefined) throw errors.typeError(`${name} cannot be sent as JSON`)
  return text
}

/**
 * A SmartCRMConsumer whose Wrapper and Redis are memory (SPEC §9).
 *
 * `options`: every consumer option (validated as the constructor validates
 * them; `wrapperUrl` may be left out, the environment is not read), plus the
 * seed: `credits` ({ operationCode: cost | null }), `roles` ({ roleId:
 * [permission] }), `users` ({ userId: { status, roles } }), `configs`
 * ({ configId: value }), `reference` ({ cacheKey: object | null }) and
 * `balances` ({ userId: number }). Call initialize() as with any consumer: it
 * resolves at once.
 */
function createTestConsumer(options) {
  if (typeof options === 'string') options = { tenantId: options }
  if (options === null || typeof options !== 'object') {
    throw errors.optionError(
      TypeError,
      'options must be a tenant id or an object with at least `tenantId`',
    )
  }
  const { logger, ...rest } = options
  const checkedLogger = checkLogger(logger)
  const native = new NativeTestConsumer(toJsonOptions(rest, ''))
  const crm = new SmartCRMConsumer(undefined, {
    key: TEST_DOUBLE,
    native,
    tenantId: native.tenantId,
    logger: checkedLogger,
  })

  /**
   * Applies one event as if it had arrived from Redis: the SPEC §3 message
   * (eventId, tenantId, timestamp, data, version; signed when a signingSecret
   * is set) goes through the consumer's event rules. Returns its change
   * `{ eventType, keys }`; reads right after see it. A rejected event throws a
   * RangeError naming the reason (`err.reason`: 'stale', 'malformed', ...).
   */
  function apply(eventType, data = {}, opts = {}) {
    checkString('eventType', eventType)
    const text = jsonOf('data', data)
    if (opts === null || typeof opts !== 'object')
      throw errors.typeError('options must be an object')
    for (const k of Object.keys(opts)) {
      if (!APPLY_OPTIONS.includes(k))
        throw errors.typeError(
          `unknown apply() option \`${k}\` (known: ${APPLY_OPTIONS.join(', ')})`,
        )
    }
    let { version, eventId, timestamp } = opts
    if (version !== undefined && version !== null) {
      if (typeof version !== 'number')
        throw errors.typeError(`version must be a number, got ${typeof version}`)
      if (!Number.isFinite(version)) throw errors.rangeError('version must be a finite number')
    }
    if (eventId !== undefined && eventId !== null) checkString('eventId', eventId)
    if (timestamp instanceof Date) timestamp = timestamp.toISOString()
    if (timestamp !== undefined && timestamp !== null) checkString('timestamp', timestamp)
    const keys = native.apply(eventType, text, version ?? null, eventId ?? null, timestamp ?? null)
    return { eventType, keys }
  }

  /** What the Wrapper answers for a reference key from now on (null = 404). */
  function setReference(key, value) {
    checkString('key', key)
    if (value === undefined || typeof value !== 'object')
      throw errors.typeError('value must be an object, or null (the Wrapper answers 404)')
    native.setReference(key, value === null ? null : jsonOf('value', value))
  }

  /** The next call of `method` rejects (throws) with an error of `code`. */
  function failNext(method, code) {
    checkString('method', method)
    checkString('code', code)
    native.failNext(method, code)
  }

  Object.defineProperties(crm, {
    apply: { value: apply },
    setReference: { value: setReference },
    failNext: { value: failNext },
    deductions: { get: () => native.deductions() },
  })
  return crm
}

/**
 * A tenant pool (SPEC §8) whose tenants are test doubles, for apps built on
 * `createTenantPool`: the same surface (`tenant`, `peek`, `tenants`, `release`,
 * `getMetrics`, `metricsText`, `health`, `shutdown`, the events), so the
 * Express `tenant(pool)` middleware and the guards work on it unchanged.
 * `tenants` maps each tenant the memory Wrapper serves to its seed
 * (createTestConsumer's options without `tenantId`; `common` options apply to
 * all); any other valid id is refused with WRAPPER_AUTH, as a Wrapper refuses
 * a tenant it does not serve, and an id outside the rule is a RangeError.
 * Each tenant's double is created on its first `tenant(id)`, and is an
 * ordinary test double (`apply`, `failNext`, `deductions`, ...).
 */
function createTestPool({ tenants = {}, logger, ...common } = {}) {
  if (tenants === null || typeof tenants !== 'object')
    throw errors.optionError(TypeError, 'option `tenants` must be an object of tenant seeds')
  return new TestTenantPool(tenants, common, checkLogger(logger))
}

class TestTenantPool extends EventEmitter {
  constructor(seeds, common, logger) {
    super()
    this._seeds = seeds
    this._common = common
    this._logger = logger
    /** id -> loaded double */
    this._loaded = new Map()
    this._closed = false
  }

  async tenant(tenantId) {
    if (this._closed) throw errors.shutdownError()
    if (typeof tenantId !== 'string')
      throw errors.typeError(`tenantId must be a string, got ${typeof tenantId}`)
    const held = this._loaded.get(tenantId)
    if (held !== undefined) return held
    checkId('tenantId', tenantId)
    const seed = Object.prototype.hasOwnProperty.call(this._seeds, tenantId)
      ? this._seeds[tenantId]
      : undefined
    const crm = createTestConsumer({ ...this._common, ...seed, tenantId, logger: this._logger })
    if (seed === undefined) {
      const err = new Error('wrapper refused the credentials (HTTP 403)')
      err.code = 'WRAPPER_AUTH'
      throw err
    }
    await crm.initialize()
    const shutdown = crm.shutdown.bind(crm)
    crm.shutdown = () => {
      if (this._loaded.get(tenantId) === crm) {
        this._loaded.delete(tenantId)
        this.emit('tenantReleased', { tenantId, reason: this._closed ? 'shutdown' : 'release' })
      }
      return shutdown()
    }
    this._loaded.set(tenantId, crm)
    this.emit('tenantLoaded', { tenantId, consumer: crm })
    return crm
  }

  peek(tenantId) {
    return this._loaded.get(tenantId) ?? null
  }

  tenants() {
    return [...this._loaded.keys()]
  }

  release(tenantId) {
    const crm = this._loaded.get(tenantId)
    return crm === undefined ? Promise.resolve() : crm.shutdown()
  }

  getMetrics(opts = {}) {
    const perTenant = {}
    const list = []
    for (const [id, c] of this._loaded) {
      const m = c.getMetrics()
      list.push(m)
      if (opts.perTenant !== false) perTenant[id] = m
    }
    return {
      tenants: this._loaded.size,
      totals: sumMetrics(list, !this._closed),
      perTenant,
      pool: { connected: !this._closed, reconnects: 0, queueOverflows: 0, loadsInFlight: 0 },
    }
  }

  metricsText(opts = {}) {
    return renderFamilies(TenantPool.prototype._families.call(this, opts))
  }

  _families(opts = {}) {
    return TenantPool.prototype._families.call(this, opts)
  }

  health() {
    const degradedTenants = []
    for (const [id, c] of this._loaded) if (c.health().degraded) degradedTenants.push(id)
    return { connected: !this._closed, tenants: this._loaded.size, degradedTenants }
  }

  async shutdown() {
    this._closed = true
    await Promise.all([...this._loaded.values()].map((c) => c.shutdown()))
  }
}

module.exports = { createTestConsumer, createTestPool }
