'use strict'
// The tenant pool (SPEC §8): thousands of tenants in one process over one
// Redis connection, one HTTP connection pool and one native runtime.
//
// The core (crates/core/src/pool.rs) shares the link and routes each tenant's
// events to its own state; every tenant's replica batches arrive here through
// one callback, tagged with the tenant's slot (a number never reused, so a
// late batch of a released tenant cannot reach a later load of the same id).
// This file decides which tenants are loaded: it shares concurrent first
// loads, forgets failed ones, and releases tenants that have not been read for
// `idleTenantMs` or, beyond `maxTenants`, the least recently used. Reads are
// seen through a flag each read sets on its consumer (`_touched`), which a
// sweeper turns into a last-use time: a read costs one property store, not a
// clock read.

const { EventEmitter } = require('node:events')

const { NativePool } = require('../index.js')
const { SmartCRMConsumer, POOLED, checkLogger, rate } = require('./consumer.js')
const { families, renderFamilies, mergeFamilies } = require('./prometheus.js')
const errors = require('./errors.js')
const { readEnv, toJsonOptions } = require('./options.js')

/** The longest pause between two idleness sweeps. */
const MAX_SWEEP_MS = 60_000

/** The `getMetrics()` fields that are summed into the pool's totals. */
const SUMMED = [
  'criticalHits',
  'criticalMisses',
  'referenceHits',
  'referenceMisses',
  'totalRequests',
  'cacheSize',
  'criticalCacheSize',
  'referenceCacheSize',
  'referenceCacheBytes',
  'wrapperRequests',
  'wrapperErrors',
  'coalescedRequests',
  'staleServed',
  'sharedHits',
  'sharedMisses',
  'eventsReceived',
  'eventsApplied',
  'reconnects',
  'resyncs',
  'queueOverflows',
  'resumes',
  'snapshotRejected',
]

/**
 * The sum of several tenants' `getMetrics()`, with the rates of the sums;
 * `connected` when every tenant is (with none: when the link is).
 */
function sumMetrics(list, linkConnected) {
  const t = {}
  for (const f of SUMMED) t[f] = 0
  t.eventsRejected = {}
  t.snapshotLoads = { wrapper: 0, redis: 0 }
  let connected = list.length > 0 || linkConnected
  for (const m of list) {
    for (const f of SUMMED) t[f] += m[f]
    t.snapshotLoads.wrapper += m.snapshotLoads.wrapper
    t.snapshotLoads.redis += m.snapshotLoads.redis
    for (const [reason, n] of Object.entries(m.eventsRejected))
      t.eventsRejected[reason] = (t.eventsRejected[reason] ?? 0) + n
    connected = connected && m.connected
  }
  t.criticalHitRate = rate(t.criticalHits, t.criticalMisses)
  t.referenceHitRate = rate(t.referenceHits, t.referenceMisses)
  t.overallHitRate = rate(t.criticalHits + t.referenceHits, t.criticalMisses + t.referenceMisses)
  t.connected = connected
  return t
}

class TenantPool extends EventEmitter {
  /**
   * Validates `options` synchronously (every consumer option except
   * `tenantId`, plus `maxTenants`, `idleTenantMs`, `maxConcurrentLoads`) and
   * connects the shared link.
   */
  constructor(options) {
    super()
    if (options === null || typeof options !== 'object') {
      throw errors.optionError(TypeError, 'options must be an object')
    }
    const { logger, ...rest } = options
    this._logger = checkLogger(logger)
    this._native = new NativePool(toJsonOptions(rest, ''), readEnv())
    const o = this._native.options()
    this._maxTenants = o.maxTenants
    this._idleMs = o.idleTenantMs
    /** id -> { consumer, slot, lastUsed (tick), lastUsedAt (ms) } of loaded tenants */
    this._loaded = new Map()
    /** id -> promise of a first load in progress */
    this._loading = new Map()
    /** slot -> consumer, for batches */
    this._bySlot = new Map()
    /** Ticks of recency: a sweep stamps the tenants read since the last one. */
    this._useClock = 0
    this._closed = false
    this._connected = false
    this._shutdownPromise = null
    this._native.start((slot, json) => this._onBatch(slot, json))
    this._sweeper = null
    if (this._idleMs > 0) {
      const every = Math.min(Math.max(Math.floor(this._idleMs / 4), 10), MAX_SWEEP_MS)
      this._sweeper = setInterval(() => this._sweep(), every)
      this._sweeper.unref()
    }
  }

  /**
   * The tenant's `SmartCRMConsumer`, loaded on first use (concurrent calls
   * share one load). Rejects with a TypeError/RangeError for an invalid id and
   * with the codes of `initialize()` when it cannot be loaded (`WRAPPER_AUTH`
   * at once when the Wrapper refuses the tenant); a failed load is not kept.
   */
  tenant(tenantId) {
    try {
      if (this._closed) throw errors.shutdownError()
      if (typeof tenantId !== 'string')
        throw errors.typeError(`tenantId must be a string, got ${typeof tenantId}`)
      const held = this._loaded.get(tenantId)
      if (held !== undefined) {
        held.consumer._touched = true
        return Promise.resolve(held.consumer)
      }
      const loading = this._loading.get(tenantId)
      if (loading !== undefined) return loading
      return this._load(tenantId)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  _load(tenantId) {
    const nt = this._native.tenant(tenantId) // throws a RangeError for an invalid id
    const slot = nt.slot
    const entry = { consumer: null, slot, lastUsed: 0, lastUsedAt: 0 }
    const consumer = new SmartCRMConsumer(undefined, {
      key: POOLED,
      native: nt.take(),
      tenantId,
      logger: this._logger,
      released: (c) => this._forget(tenantId, c, entry, 'release'),
      unhandledError: (err) => this._tenantError(tenantId, consumer, err),
    })
    entry.consumer = consumer
    this._bySlot.set(slot, consumer)
    const promise = consumer.initialize().then(
      () => {
        this._loading.delete(tenantId)
        if (consumer._closed) throw errors.shutdownError()
        this._makeRoom()
        consumer._touched = false
        entry.lastUsed = ++this._useClock
        entry.lastUsedAt = Date.now()
        this._loaded.set(tenantId, entry)
        this.emit('tenantLoaded', { tenantId, consumer })
        return consumer
      },
      (err) => {
        this._loading.delete(tenantId)
        consumer.shutdown()
        throw err
      },
    )
    this._loading.set(tenantId, promise)
    return promise
  }

  /**
   * Releases least recently used tenants until one more fits in `maxTenants`.
   * Recency is as of the reads seen by the latest stamping (tenants read
   * since then share one tick): O(tenants) per release, which only runs when
   * the pool is full.
   */
  _makeRoom() {
    if (this._loaded.size < this._maxTenants) return
    this._stampUse(Date.now())
    const byAge = [...this._loaded].sort((a, b) => a[1].lastUsed - b[1].lastUsed)
    for (const [id] of byAge.slice(0, this._loaded.size - this._maxTenants + 1)) {
      this._release(id, 'maxTenants')
    }
  }

  /** Turns the read flags set since the last call into one recency tick and time. */
  _stampUse(now) {
    const tick = ++this._useClock
    for (const e of this._loaded.values()) {
      if (e.consumer._touched) {
        e.consumer._touched = false
        e.lastUsed = tick
        e.lastUsedAt = now
      }
    }
  }

  /** Releases the tenants not read for `idleTenantMs`. */
  _sweep() {
    const now = Date.now()
    this._stampUse(now)
    for (const [id, e] of this._loaded) {
      if (now - e.lastUsedAt >= this._idleMs) this._release(id, 'idle')
    }
  }

  /** The loaded tenant's consumer, or null: synchronous, loads nothing. */
  peek(tenantId) {
    const held = this._loaded.get(tenantId)
    if (held === undefined) return null
    held.consumer._touched = true
    return held.consumer
  }

  /** Ids of the loaded tenants. */
  tenants() {
    return [...this._loaded.keys()]
  }

  /**
   * Unsubscribes and frees the tenant (a loading one too); its consumer
   * answers SHUTDOWN afterwards. Resolves when its tasks have stopped.
   */
  release(tenantId) {
    return this._release(tenantId, 'release')
  }

  _release(tenantId, reason) {
    const e = this._loaded.get(tenantId)
    if (e !== undefined) {
      // Forgotten first, so 'tenantReleased' carries this reason.
      this._forget(tenantId, e.consumer, e, reason)
      return e.consumer.shutdown()
    }
    const loading = this._loading.get(tenantId)
    if (loading === undefined) return Promise.resolve()
    for (const c of this._bySlot.values()) {
      if (c.tenantId === tenantId && !c._closed) return c.shutdown()
    }
    return Promise.resolve()
  }

  /** Drops a consumer that closed (or is being released) from the pool's maps. */
  _forget(tenantId, consumer, entry, reason) {
    this._bySlot.delete(entry.slot)
    if (this._loaded.get(tenantId) === entry) {
      this._loaded.delete(tenantId)
      this.emit('tenantReleased', { tenantId, reason })
    }
  }

  /**
   * A tenant's background error that its consumer has no listener for goes
   * to the pool's 'error'. While the tenant is still loading it is only
   * logged at debug level: tenant() rejects with it.
   */
  _tenantError(tenantId, consumer, err) {
    err.tenantId = tenantId
    if (this._loaded.get(tenantId)?.consumer === consumer) this._emitError(err)
    else
      this._logger.debug(
        `[smart-crm-consumer] ${err.code}: ${err.message} (tenant ${tenantId}, loading)`,
      )
  }

  _emitError(err) {
    if (this.listenerCount('error') > 0) this.emit('error', err)
    else {
      const who = err.tenantId === undefined ? '' : ` (tenant ${err.tenantId})`
      this._logger.error(`[smart-crm-consumer] ${err.code}: ${err.message}${who}`)
    }
  }

  /** A batch of the tenant in `slot`, or (slot 0) the pool's own notices. */
  _onBatch(slot, json) {
    if (slot !== 0) {
      const c = this._bySlot.get(slot)
      if (c !== undefined) c._onBatch(json)
      return
    }
    for (const n of JSON.parse(json).notices) {
      try {
        if (n.kind === 'log') this._logger[n.level](`[smart-crm-consumer] ${n.msg}`)
        else if (n.kind === 'connection') {
          this._connected = n.connected
          this.emit('connection', { connected: n.connected })
        } else if (n.kind === 'error') {
          const err = new Error(n.message)
          err.code = n.code
          this._emitError(err)
        }
      } catch (err) {
        this._logger.error(
          `[smart-crm-consumer] a pool '${n.kind}' listener threw: ${err && err.stack}`,
        )
      }
    }
  }

  /**
   * `{ tenants, totals, perTenant }`: `totals` has every field of a consumer's
   * getMetrics() summed (rates of the sums); `perTenant` each tenant's own,
   * unless `{ perTenant: false }`. Plus the shared link's figures as `pool`.
   */
  getMetrics(opts = {}) {
    const perTenant = {}
    const list = []
    for (const [id, e] of this._loaded) {
      const m = e.consumer.getMetrics()
      list.push(m)
      if (opts.perTenant !== false) perTenant[id] = m
    }
    const s = this._native.status()
    return {
      tenants: this._loaded.size,
      totals: sumMetrics(list, s.connected),
      perTenant,
      pool: {
        connected: s.connected,
        reconnects: s.reconnects,
        queueOverflows: s.queueOverflows,
        loadsInFlight: s.loadsInFlight,
        commandConnections: s.commandConnections,
      },
    }
  }

  /**
   * One Prometheus exposition: each family's HELP/TYPE once, a series per
   * tenant with a `tenant` label, and the pool's own gauges. With
   * `{ perTenant: false }` (very large pools) the tenants' series are
   * replaced by their sums, without a `tenant` label.
   */
  metricsText(opts = {}) {
    return renderFamilies(this._families(opts))
  }

  /** The metric families of metricsText() (shared with the prom-client collectors). */
  _families(opts = {}) {
    const perTenant = opts.perTenant !== false
    const m = this.getMetrics({ perTenant })
    const tenantFamilies = perTenant
      ? mergeFamilies(
          Object.entries(m.perTenant).map(([id, tm]) => families(tm, { tenant: id })),
          families(m.totals, {}),
        )
      : families(m.totals, {})
    const gauge = (name, help, value) => ({
      name: `smart_crm_consumer_pool_${name}`,
      help,
      type: 'gauge',
      values: [{ labels: {}, value }],
    })
    return [
      ...tenantFamilies,
      gauge('tenants', 'Tenants loaded in the pool.', m.tenants),
      gauge(
        'link_connected',
        "The pool's Redis link is up (1) or not (0).",
        m.pool.connected ? 1 : 0,
      ),
      {
        name: 'smart_crm_consumer_pool_reconnects_total',
        help: "Reconnections of the pool's Redis link.",
        type: 'counter',
        values: [{ labels: {}, value: m.pool.reconnects }],
      },
    ]
  }

  /** `{ connected, tenants, degradedTenants }`: the link, and tenants whose health is degraded. */
  health() {
    const degradedTenants = []
    for (const [id, e] of this._loaded) if (e.consumer.health().degraded) degradedTenants.push(id)
    return {
      connected: this._native.status().connected && !this._closed,
      tenants: this._loaded.size,
      degradedTenants,
    }
  }

  /** Releases every tenant and closes the shared link. Idempotent. */
  shutdown() {
    if (!this._shutdownPromise) {
      this._closed = true
      if (this._sweeper !== null) clearInterval(this._sweeper)
      const releases = []
      for (const id of [...this._loaded.keys()]) releases.push(this._release(id, 'shutdown'))
      for (const c of [...this._bySlot.values()]) releases.push(c.shutdown())
      this._shutdownPromise = Promise.allSettled(releases).then(() => this._native.shutdown())
    }
    return this._shutdownPromise
  }
}

/** A tenant pool (SPEC §8). */
function createTenantPool(options) {
  return new TenantPool(options)
}

module.exports = { createTenantPool, TenantPool, sumMetrics }
