'use strict'
// The baseline: a pure-JS consumer written the way the design documents
// (shared/design/001 and 003) tell users to write it by hand.
//
// - critical data in `Map`s, loaded from the Wrapper's four lists at start
//   (following `nextCursor` pages, so it can load a million users);
// - a node-redis subscriber (`createClient().duplicate()`) that runs
//   `JSON.parse` and an async handler for every message on the main thread;
// - `checkPermission` as a linear scan over every permission of every role of
//   the user (`flatMap(...).some(...)`, the design's `includes` loop plus the
//   `prefix.*` and `*` patterns of SPEC §2);
// - reference data in a `Map` with a TTL map beside it, fetched with `fetch`
//   on a miss, with no single-flight: N concurrent misses make N requests, and
//   a hit returns the cached object itself (the design's shared mutable value).
//
// Deliberately left out, so that the comparison is about data structures and
// threading rather than noise: the design's per-call `console.log` lines, and
// the `async` on critical reads (they are synchronous here, like ours). The
// public method names match `SmartCRMConsumer`, so one driver runs both.

const { createClient } = require('redis')

const TOPICS = ['credit-configs', 'roles', 'users', 'hierarchy', 'configs']

/** The design's `WrapperApiClient`: `get(endpoint)` resolves to `{ data }`. */
class WrapperApiClient {
  constructor(baseUrl, tenantId) {
    this.baseUrl = baseUrl
    this.headers = { 'X-Tenant-Id': tenantId, Accept: 'application/json' }
  }

  async get(endpoint) {
    const res = await fetch(this.baseUrl + endpoint, { headers: this.headers })
    if (!res.ok) {
      await res.arrayBuffer()
      const err = new Error(`Wrapper answered ${res.status} for ${endpoint}`)
      err.status = res.status
      throw err
    }
    return { data: await res.json() }
  }
}

class JsConsumer {
  constructor({ tenantId, wrapperUrl, redisUrl, channelPrefix = 'crm', ttl = {} }) {
    this.tenantId = tenantId
    this.channelPrefix = channelPrefix
    this.redisUrl = redisUrl
    this.redisClient = null
    this.subscriber = null
    this.isConnected = false
    this.ttl = { userProfiles: 5 * 60 * 1000, hierarchy: 15 * 60 * 1000, ...ttl }

    // Critical data cache (always cached locally)
    this.criticalCache = {
      creditCosts: new Map(), // operationCode -> { cost, updatedAt }
      rolePermissions: new Map(), // roleId -> { permissions, updatedAt }
      userAccess: new Map(), // userId -> { status, roles, updatedAt }
      activeConfigs: new Map(), // configId -> { config, updatedAt }
    }

    // Reference data cache (TTL-based)
    this.referenceCache = new Map() // 'user:{id}' -> object
    this.cacheExpiry = new Map() // key -> expiry timestamp

    this.wrapperApi = new WrapperApiClient(wrapperUrl, tenantId)

    this.metrics = {
      criticalHits: 0,
      criticalMisses: 0,
      referenceHits: 0,
      referenceMisses: 0,
      totalRequests: 0,
      eventsReceived: 0,
      eventsApplied: 0,
      wrapperRequests: 0,
    }
  }

  async initialize() {
    await this.connectToRedis()
    await this.subscribeToChannels()
    await this.preloadCriticalData()
  }

  async connectToRedis() {
    this.redisClient = createClient({ url: this.redisUrl })
    this.redisClient.on('error', (err) => this.handleConnectionLoss(err))
    await this.redisClient.connect()
    this.subscriber = this.redisClient.duplicate()
    this.subscriber.on('error', (err) => this.handleConnectionLoss(err))
    await this.subscriber.connect()
    this.isConnected = true
  }

  async subscribeToChannels() {
    const channels = TOPICS.map((t) => `${this.channelPrefix}:${this.tenantId}:${t}`)
    await this.subscriber.subscribe(channels, (message, channel) => {
      this.metrics.eventsReceived++
      try {
        this.handleMessage(channel, JSON.parse(message))
      } catch {
        // the design logs and drops a message it cannot parse
      }
    })
  }

  async handleMessage(channel, event) {
    try {
      switch (event.eventType) {
        case 'credit-config-changed':
          await this.handleCreditConfigChange(event)
          break
        case 'role-changed':
          await this.handleRoleChange(event)
          break
        case 'user-status-changed':
          await this.handleUserStatusChange(event)
          break
        case 'user-changed':
          this.invalidate(`user:${event.data.userId}`)
          break
        case 'hierarchy-changed':
          this.invalidate(`hierarchy:${event.data.entityId}`)
          break
        case 'config-changed':
          this.criticalCache.activeConfigs.set(event.data.configId, {
            config: event.data.config,
            updatedAt: new Date().toISOString(),
          })
          break
        default:
          return
      }
      this.metrics.eventsApplied++
    } catch {
      // the design logs and carries on
    }
  }

  async handleCreditConfigChange(event) {
    this.criticalCache.creditCosts.set(event.data.operationCode, {
      cost: event.data.newValue,
      updatedAt: new Date().toISOString(),
    })
  }

  async handleRoleChange(event) {
    this.criticalCache.rolePermissions.set(event.data.roleId, {
      permissions: event.data.permissions,
      updatedAt: new Date().toISOString(),
    })
  }

  async handleUserStatusChange(event) {
    const prev = this.criticalCache.userAccess.get(event.data.userId)
    this.criticalCache.userAccess.set(event.data.userId, {
      status: event.data.status,
      roles: event.data.roles ?? (prev ? prev.roles : []),
      updatedAt: new Date().toISOString(),
    })
  }

  /** Follows `nextCursor` until the list ends; a plain array is one page. */
  async fetchList(endpoint) {
    const items = []
    let url = endpoint
    for (;;) {
      const body = await this.fetchFromWrapper(url)
      if (Array.isArray(body)) return body
      for (const item of body.items) items.push(item)
      if (body.nextCursor === null || body.nextCursor === undefined) return items
      url = `${endpoint}?cursor=${encodeURIComponent(body.nextCursor)}`
    }
  }

  async preloadCriticalData() {
    const [creditConfigs, roles, users, configs] = await Promise.all([
      this.fetchList('/api/credits/configs'),
      this.fetchList('/api/roles'),
      this.fetchList('/api/users/access'),
      this.fetchList('/api/configs/active'),
    ])
    // One timestamp per load (the design takes one per item).
    const updatedAt = new Date().toISOString()
    for (const c of creditConfigs) {
      if (c.isActive === false) continue
      this.criticalCache.creditCosts.set(c.operationCode, { cost: c.creditCost, updatedAt })
    }
    for (const r of roles) {
      this.criticalCache.rolePermissions.set(r.roleId, { permissions: r.permissions, updatedAt })
    }
    for (const u of users) {
      this.criticalCache.userAccess.set(u.userId, { status: u.status, roles: u.roles, updatedAt })
    }
    for (const c of configs) {
      this.criticalCache.activeConfigs.set(c.configId, { config: c.config, updatedAt })
    }
  }

  async fetchFromWrapper(endpoint) {
    this.metrics.wrapperRequests++
    const response = await this.wrapperApi.get(endpoint)
    return response.data
  }

  // ---- critical reads --------------------------------------------------------

  getCreditCost(operationCode) {
    this.metrics.totalRequests++
    const cached = this.criticalCache.creditCosts.get(operationCode)
    if (cached) {
      this.metrics.criticalHits++
      return cached.cost
    }
    this.metrics.criticalMisses++
    return null
  }

  getRolePermissions(roleId) {
    const r = this.criticalCache.rolePermissions.get(roleId)
    return r ? r.permissions : null
  }

  getUserRoles(userId) {
    const u = this.criticalCache.userAccess.get(userId)
    return u ? u.roles : null
  }

  getUserStatus(userId) {
    const u = this.criticalCache.userAccess.get(userId)
    return u ? u.status : null
  }

  getActiveConfig(configId) {
    const c = this.criticalCache.activeConfigs.get(configId)
    return c ? c.config : null
  }

  checkPermission(userId, permission) {
    this.metrics.totalRequests++
    const user = this.criticalCache.userAccess.get(userId)
    if (!user || user.status !== 'active') {
      this.metrics.criticalMisses++
      return false
    }
    this.metrics.criticalHits++
    return user.roles
      .flatMap((roleId) => this.criticalCache.rolePermissions.get(roleId)?.permissions ?? [])
      .some(
        (p) =>
          p === permission ||
          (p.endsWith('.*') && permission.startsWith(p.slice(0, -1))) ||
          p === '*',
      )
  }

  // ---- reference reads -------------------------------------------------------

  isCacheValid(cacheKey) {
    const expiry = this.cacheExpiry.get(cacheKey)
    return expiry !== undefined && Date.now() < expiry
  }

  async getReference(cacheKey, endpoint, ttlMs) {
    this.metrics.totalRequests++
    const cached = this.referenceCache.get(cacheKey)
    if (cached !== undefined && this.isCacheValid(cacheKey)) {
      this.metrics.referenceHits++
      return cached
    }
    this.metrics.referenceMisses++
    const value = await this.fetchFromWrapper(endpoint)
    this.referenceCache.set(cacheKey, value)
    this.cacheExpiry.set(cacheKey, Date.now() + ttlMs)
    return value
  }

  getUserProfile(userId) {
    return this.getReference(
      `user:${userId}`,
      `/api/users/${encodeURIComponent(userId)}/profile`,
      this.ttl.userProfiles,
    )
  }

  getHierarchy(entityId) {
    return this.getReference(
      `hierarchy:${entityId}`,
      `/api/hierarchy/${encodeURIComponent(entityId)}`,
      this.ttl.hierarchy,
    )
  }

  getCacheExpiry(key) {
    return this.cacheExpiry.get(key) ?? null
  }

  invalidate(key) {
    this.referenceCache.delete(key)
    this.cacheExpiry.delete(key)
  }

  getMetrics() {
    const c = this.criticalCache
    return {
      ...this.metrics,
      criticalCacheSize:
        c.creditCosts.size + c.rolePermissions.size + c.userAccess.size + c.activeConfigs.size,
      referenceCacheSize: this.referenceCache.size,
    }
  }

  handleConnectionLoss() {
    this.isConnected = false
  }

  async shutdown() {
    this.isConnected = false
    if (this.subscriber) await this.subscriber.close()
    if (this.redisClient) await this.redisClient.close()
  }
}

module.exports = { JsConsumer }
