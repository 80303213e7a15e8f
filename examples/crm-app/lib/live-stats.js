'use strict'
// What the dashboard shows. `PoolStats`: the tenant pool (tenants loaded, each
// one's figures, the loads and releases seen) and a `LiveStats` per loaded
// tenant. `LiveStats`: one tenant's consumer, beyond getMetrics() and health():
// the propagation latency from the Wrapper to this process, and the history of
// the connection state.
//
// Looking costs no tenant its place in the pool: these read getMetrics() and
// health(), which are not reads of the cache, and never call pool.peek() or
// pool.tenant() (which count as a use against `idleTenantMs`) except once when
// a tenant has just loaded. The canary is read from the cache, though (a
// critical hit, and a use): a tenant whose Wrapper publishes a canary is never
// idle.
//
// Propagation latency is measured with a canary: the Wrapper sets the active
// config `propagation-canary` to `{ sentAt, seq }` every second (the
// simulator's --canary-ms), and publishes it like any change. When the
// consumer reports the change, the time since `sentAt` is how long a change
// took to reach this process: Wrapper → Redis → the consumer's core → the JS
// replica → the 'change' event. Both clocks are this machine's; across hosts
// this needs synchronised clocks (NTP), like any one-way latency.

const { performance } = require('node:perf_hooks')

const nowMs = () => performance.timeOrigin + performance.now()

function percentile(sorted, p) {
  if (sorted.length === 0) return null
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

class LiveStats {
  /**
   * @param {import('smart-crm-consumer').SmartCRMConsumer} consumer
   * @param {{ canaryConfigId?: string, maxSamples?: number }} [options]
   */
  constructor(consumer, { canaryConfigId = 'propagation-canary', maxSamples = 300 } = {}) {
    this.consumer = consumer
    this.canaryKey = `config:${canaryConfigId}`
    this.canaryConfigId = canaryConfigId
    this.maxSamples = maxSamples
    /** `[epoch ms, latency ms]`, oldest first. */
    this.samples = []
    /** `{ at, connected }`, oldest first (at most 50). */
    this.connectionLog = [{ at: Date.now(), connected: consumer.isConnected }]
    this.loadedAt = Date.now()
    this._lastSeq = null
    this._onChange = (e) => {
      if (e.keys.includes(this.canaryKey)) this._canary()
    }
    this._onConnection = (e) => {
      this.connectionLog.push({ at: Date.now(), connected: e.connected })
      if (this.connectionLog.length > 50) this.connectionLog.shift()
    }
    consumer.on('change', this._onChange)
    consumer.on('connection', this._onConnection)
  }

  _canary() {
    const value = this.consumer.getActiveConfig(this.canaryConfigId)
    if (!value || typeof value.sentAt !== 'number' || value.seq === this._lastSeq) return
    this._lastSeq = value.seq
    const latency = nowMs() - value.sentAt
    this.samples.push([Date.now(), Math.max(0, Math.round(latency * 1000) / 1000)])
    if (this.samples.length > this.maxSamples)
      this.samples.splice(0, this.samples.length - this.maxSamples)
  }

  /** Latency summary over the kept samples (ms), or nulls before the first one. */
  latency() {
    const sorted = this.samples.map((s) => s[1]).sort((a, b) => a - b)
    return {
      count: sorted.length,
      last: this.samples.length ? this.samples[this.samples.length - 1][1] : null,
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      max: sorted.length ? sorted[sorted.length - 1] : null,
    }
  }

  /** Everything the dashboard draws, as JSON. */
  snapshot() {
    return {
      tenantId: this.consumer.tenantId,
      at: Date.now(),
      loadedAt: this.loadedAt,
      health: this.consumer.health(),
      metrics: this.consumer.getMetrics(),
      latency: { ...this.latency(), samples: this.samples },
      connectionLog: this.connectionLog,
    }
  }

  close() {
    this.consumer.off('change', this._onChange)
    this.consumer.off('connection', this._onConnection)
  }
}

const rejectedTotal = (m) => Object.values(m.eventsRejected || {}).reduce((a, b) => a + b, 0)

class PoolStats {
  /**
   * Follows `pool` ('tenantLoaded', 'tenantReleased', 'connection'): a
   * LiveStats for each loaded tenant, and the recent loads and releases.
   *
   * @param {import('smart-crm-consumer').TenantPool} pool
   * @param {{ canaryConfigId?: string, maxLog?: number }} [options]
   */
  constructor(pool, { canaryConfigId = 'propagation-canary', maxLog = 50 } = {}) {
    this.pool = pool
    this.canaryConfigId = canaryConfigId
    this.maxLog = maxLog
    /** tenant id → LiveStats of the loaded tenants */
    this.tenants = new Map()
    /** tenant id → open event streams (kept across a release and a reload) */
    this.sseClients = new Map()
    /** `{ at, event: 'loaded' | 'released', tenantId, reason? }`, oldest first. */
    this.log = []
    this.loads = 0
    this.releases = 0
    /** The pool's Redis link: `{ at, connected }`, oldest first (at most 50). */
    this.connectionLog = [{ at: Date.now(), connected: pool.health().connected }]
    this._onLoaded = ({ tenantId }) => {
      this.loads++
      this._note({ event: 'loaded', tenantId })
      this._attach(tenantId)
    }
    this._onReleased = ({ tenantId, reason }) => {
      this.releases++
      this._note({ event: 'released', tenantId, reason })
      this._detach(tenantId)
    }
    this._onConnection = (e) => {
      this.connectionLog.push({ at: Date.now(), connected: e.connected })
      if (this.connectionLog.length > 50) this.connectionLog.shift()
    }
    pool.on('tenantLoaded', this._onLoaded)
    pool.on('tenantReleased', this._onReleased)
    pool.on('connection', this._onConnection)
    for (const id of pool.tenants()) this._attach(id)
  }

  _note(entry) {
    this.log.push({ at: Date.now(), ...entry })
    if (this.log.length > this.maxLog) this.log.shift()
  }

  _attach(tenantId) {
    this._detach(tenantId)
    const consumer = this.pool.peek(tenantId)
    if (consumer) {
      this.tenants.set(tenantId, new LiveStats(consumer, { canaryConfigId: this.canaryConfigId }))
    }
  }

  _detach(tenantId) {
    const s = this.tenants.get(tenantId)
    if (s) s.close()
    this.tenants.delete(tenantId)
  }

  /** An event stream of `tenantId` opened (+1) or closed (-1). */
  sse(tenantId, delta) {
    const n = (this.sseClients.get(tenantId) ?? 0) + delta
    if (n === 0) this.sseClients.delete(tenantId)
    else this.sseClients.set(tenantId, n)
  }

  /** The dashboard's figures of one loaded tenant, or null when it is not loaded. */
  snapshot(tenantId) {
    const s = this.tenants.get(tenantId)
    if (!s) return null
    return { ...s.snapshot(), sseClients: this.sseClients.get(tenantId) ?? 0 }
  }

  /** The pool view: the link, the totals, one row per loaded tenant, the recent loads and releases. */
  overview() {
    const m = this.pool.getMetrics()
    const h = this.pool.health()
    const tenants = []
    for (const [tenantId, tm] of Object.entries(m.perTenant)) {
      const s = this.tenants.get(tenantId)
      const th = s ? s.consumer.health() : null
      const lat = s ? s.latency() : null
      tenants.push({
        tenantId,
        loadedAt: s ? s.loadedAt : null,
        ready: th ? th.ready : null,
        connected: tm.connected,
        degraded: h.degradedTenants.includes(tenantId),
        reason: th ? th.reason : null,
        criticalHitRate: tm.criticalHitRate,
        referenceHitRate: tm.referenceHitRate,
        overallHitRate: tm.overallHitRate,
        criticalReads: tm.criticalHits + tm.criticalMisses,
        referenceReads: tm.referenceHits + tm.referenceMisses,
        totalRequests: tm.totalRequests,
        cacheSize: tm.cacheSize,
        eventsReceived: tm.eventsReceived,
        eventsApplied: tm.eventsApplied,
        eventsRejected: rejectedTotal(tm),
        wrapperRequests: tm.wrapperRequests,
        latencyP50: lat ? lat.p50 : null,
        sseClients: this.sseClients.get(tenantId) ?? 0,
      })
    }
    tenants.sort((a, b) => (a.tenantId < b.tenantId ? -1 : a.tenantId > b.tenantId ? 1 : 0))
    const { eventsRejected, ...totals } = m.totals
    return {
      at: Date.now(),
      pool: {
        ...m.pool,
        tenants: m.tenants,
        degradedTenants: h.degradedTenants,
        loads: this.loads,
        releases: this.releases,
      },
      totals: { ...totals, eventsRejected: rejectedTotal(m.totals) },
      tenants,
      log: this.log,
      connectionLog: this.connectionLog,
    }
  }

  close() {
    this.pool.off('tenantLoaded', this._onLoaded)
    this.pool.off('tenantReleased', this._onReleased)
    this.pool.off('connection', this._onConnection)
    for (const id of [...this.tenants.keys()]) this._detach(id)
  }
}

module.exports = { LiveStats, PoolStats, percentile }
