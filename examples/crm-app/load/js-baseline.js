'use strict'
// The same app on the pure-JS baseline, for the load comparison only.
//
// bench/baselines/js-consumer.js is the consumer the design documents tell
// users to write by hand (Maps, node-redis, JSON.parse on the main thread,
// fetch). It has the read methods of SmartCRMConsumer; this adapter adds what
// the app also calls, written the way the design writes them:
// getUserCredits/deductCredits as one plain fetch each (no retries), health()
// and metricsText() from its own fields, and 'change' events after each
// handled message (so the SSE stream and the propagation canary work on it).
// Methods the baseline gains later are used as they are.
//
// The app runs on a tenant pool; `createBaselinePool` is the part of the pool's
// API the app uses (tenant, peek, tenants, release, getMetrics, metricsText,
// health, the 'tenantLoaded'/'tenantReleased' events, shutdown), written the
// plain way: one baseline consumer per tenant, each with its own Redis
// connections, loaded on first use. No limits (maxTenants, idleTenantMs).

const path = require('node:path')
const { EventEmitter } = require('node:events')

const BASELINE = path.join(__dirname, '..', '..', '..', 'bench', 'baselines', 'js-consumer.js')

const KEY_OF = {
  'credit-config-changed': (d) => `credit:${d.operationCode}`,
  'role-changed': (d) => `role:${d.roleId}`,
  'user-status-changed': (d) => `access:${d.userId}`,
  'user-changed': (d) => `user:${d.userId}`,
  'hierarchy-changed': (d) => `hierarchy:${d.entityId}`,
  'config-changed': (d) => `config:${d.configId}`,
}

function codeError(code, message) {
  return Object.assign(new Error(message), { code })
}

/** Takes SmartCRMConsumer options; ignores what the baseline has no notion of (signing, logger). */
function createBaselineConsumer({ tenantId, wrapperUrl, redisUrl, channelPrefix, ttl }) {
  const { JsConsumer } = require(BASELINE)
  const base = new JsConsumer({ tenantId, wrapperUrl, redisUrl, channelPrefix, ttl })
  const events = new EventEmitter()
  const headers = { 'X-Tenant-Id': tenantId, 'Content-Type': 'application/json' }
  let ready = false
  let lastSyncAt = null

  const handle = base.handleMessage.bind(base)
  base.handleMessage = async (channel, event) => {
    await handle(channel, event)
    const keyOf = KEY_OF[event && event.eventType]
    if (keyOf && event.data)
      events.emit('change', { eventType: event.eventType, keys: [keyOf(event.data)] })
  }

  async function wrapper(method, urlPath, body) {
    const res = await fetch(wrapperUrl + urlPath, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    }).catch((err) => {
      throw codeError('WRAPPER_UNAVAILABLE', err.message)
    })
    const json = await res.json().catch(() => null)
    if (res.status === 404) throw codeError('NOT_FOUND', `not found: ${urlPath}`)
    if (res.status === 402) throw codeError('INSUFFICIENT_CREDITS', 'insufficient credits')
    if (!res.ok) throw codeError('WRAPPER_UNAVAILABLE', `Wrapper answered ${res.status}`)
    return json
  }

  const adapter = Object.assign(Object.create(base), {
    tenantId,
    async initialize() {
      await base.initialize()
      ready = true
      lastSyncAt = Date.now()
    },
    async getUserProfile(userId) {
      try {
        return await base.getUserProfile(userId)
      } catch (err) {
        if (err.status === 404) throw codeError('NOT_FOUND', err.message)
        throw err
      }
    },
    async getUserCredits(userId) {
      if (typeof base.getUserCredits === 'function') return base.getUserCredits(userId)
      const { available } = await wrapper('GET', `/api/users/${encodeURIComponent(userId)}/credits`)
      return available
    },
    async checkCredits(operationCode, userId) {
      const cost = base.getCreditCost(operationCode)
      return cost !== null && (await adapter.getUserCredits(userId)) >= cost
    },
    async deductCredits(userId, amount, { operationCode, idempotencyKey } = {}) {
      if (typeof base.deductCredits === 'function') {
        return base.deductCredits(userId, amount, { operationCode, idempotencyKey })
      }
      const { remaining } = await wrapper(
        'POST',
        `/api/users/${encodeURIComponent(userId)}/credits/deduct`,
        { amount, operationCode, idempotencyKey },
      )
      return { remaining, idempotencyKey }
    },
    health() {
      return {
        ready,
        connected: base.isConnected,
        degraded: !base.isConnected,
        lastEventAt: null,
        lastSyncAt,
        reason: base.isConnected ? null : 'redis-disconnected',
      }
    },
    getMetrics() {
      const m = base.getMetrics()
      const rate = (h, x) => (h + x === 0 ? 0 : h / (h + x))
      return {
        ...m,
        criticalHitRate: rate(m.criticalHits, m.criticalMisses),
        referenceHitRate: rate(m.referenceHits, m.referenceMisses),
        overallHitRate: rate(
          m.criticalHits + m.referenceHits,
          m.criticalMisses + m.referenceMisses,
        ),
        cacheSize: m.criticalCacheSize + m.referenceCacheSize,
        eventsRejected: {},
        connected: base.isConnected,
      }
    },
    metricsText() {
      const m = adapter.getMetrics()
      const lines = []
      for (const [k, v] of Object.entries(m)) {
        if (typeof v === 'number') lines.push(`js_baseline_${k}{tenant="${tenantId}"} ${v}`)
      }
      return lines.join('\n') + '\n'
    },
    on: (e, l) => (events.on(e, l), adapter),
    off: (e, l) => (events.off(e, l), adapter),
    shutdown: () => base.shutdown(),
  })
  Object.defineProperty(adapter, 'isConnected', { get: () => base.isConnected })
  return adapter
}

/** The tenant pool API the app uses, over one baseline consumer per tenant. */
function createBaselinePool(options) {
  const pool = new EventEmitter()
  const loaded = new Map()
  const loading = new Map()
  pool.tenant = (tenantId) => {
    if (loaded.has(tenantId)) return Promise.resolve(loaded.get(tenantId))
    if (loading.has(tenantId)) return loading.get(tenantId)
    const c = createBaselineConsumer({ ...options, tenantId })
    const p = c.initialize().then(
      () => {
        loading.delete(tenantId)
        loaded.set(tenantId, c)
        pool.emit('tenantLoaded', { tenantId })
        return c
      },
      async (err) => {
        loading.delete(tenantId)
        await Promise.resolve(c.shutdown()).catch(() => {})
        // the baseline's own errors: a refused tenant is the pool's WRAPPER_AUTH (403)
        if (/\b40[13]\b/.test(String(err && err.message))) err.code = 'WRAPPER_AUTH'
        throw err
      },
    )
    loading.set(tenantId, p)
    return p
  }
  pool.peek = (tenantId) => loaded.get(tenantId) ?? null
  pool.tenants = () => [...loaded.keys()]
  const release = async (tenantId, reason) => {
    const c = loaded.get(tenantId)
    if (!c) return
    loaded.delete(tenantId)
    pool.emit('tenantReleased', { tenantId, reason })
    await c.shutdown()
  }
  pool.release = (tenantId) => release(tenantId, 'release')
  pool.getMetrics = () => {
    const perTenant = {}
    const totals = {}
    for (const [id, c] of loaded) {
      const m = c.getMetrics()
      perTenant[id] = m
      for (const [k, v] of Object.entries(m))
        if (typeof v === 'number') totals[k] = (totals[k] ?? 0) + v
    }
    const rate = (h, x) => (h + x === 0 ? 0 : h / (h + x))
    totals.criticalHitRate = rate(totals.criticalHits ?? 0, totals.criticalMisses ?? 0)
    totals.referenceHitRate = rate(totals.referenceHits ?? 0, totals.referenceMisses ?? 0)
    totals.overallHitRate = rate(
      (totals.criticalHits ?? 0) + (totals.referenceHits ?? 0),
      (totals.criticalMisses ?? 0) + (totals.referenceMisses ?? 0),
    )
    totals.eventsRejected = {}
    const connected = [...loaded.values()].every((c) => c.isConnected)
    return {
      tenants: loaded.size,
      totals,
      perTenant,
      pool: { connected, reconnects: 0, queueOverflows: 0, loadsInFlight: loading.size },
    }
  }
  pool.metricsText = () => [...loaded.values()].map((c) => c.metricsText()).join('')
  pool.health = () => ({
    connected: [...loaded.values()].every((c) => c.isConnected),
    tenants: loaded.size,
    degradedTenants: [...loaded].filter(([, c]) => c.health().degraded).map(([id]) => id),
  })
  pool.shutdown = async () => {
    await Promise.all(pool.tenants().map((id) => release(id, 'shutdown')))
  }
  return pool
}

module.exports = { createBaselineConsumer, createBaselinePool, BASELINE }
