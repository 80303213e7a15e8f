'use strict'
// Wrapper simulator: the publishing side. The change methods (`setCreditConfig`,
// `setRole`, ...) update the store and publish the matching change event of
// SPEC §3 with the package's `createPublisher`; versions, and the propagation
// canary.

const { performance } = require('node:perf_hooks')
const { httpError, isPlainObject } = require('./http.js')

function checkId(name, id) {
  if (typeof id !== 'string' || id === '')
    throw httpError(400, `${name} must be a non-empty string`)
}

function checkFields(fields) {
  if (!isPlainObject(fields)) throw httpError(400, 'fields must be an object')
}

/** Methods of WrapperSim (copied onto its prototype by index.js). */
class PublishMethods {
  /**
   * Creates the publisher when a `redisUrl` was given (the package's
   * createPublisher: synchronous, it connects on the first publish and
   * reconnects by itself). Async for its callers' sake.
   */
  async _connectPublisher() {
    if (!this._redisUrl) return
    // Loaded only here, so a sim without Redis needs nothing but Node built-ins.
    const { createPublisher } = require('../../lib/index.js')
    this._publisher = createPublisher({
      redisUrl: this._redisUrl,
      tenantId: this.tenantId,
      channelPrefix: this._channelPrefix,
      signingSecret: this._signingSecret ?? undefined,
    })
  }

  // --- changes: update the store, then publish the matching event (SPEC §3)

  /** One past the highest version this entity has had (a delete keeps its version). */
  _nextVersion(collection, id) {
    const key = `${collection}:${id}`
    const stored = this.data[collection].get(id)?.version
    const seen = Math.max(Number.isSafeInteger(stored) ? stored : 0, this._versions.get(key) ?? 0)
    this._versions.set(key, seen + 1)
    return seen + 1
  }

  /**
   * Publishes one change event (signed when a signing secret is set) and logs
   * it in `events`. Resolves to the number of receivers, or null when the sim
   * has no `redisUrl` (then nothing is published).
   */
  async publish(topic, eventType, data = {}, { version } = {}) {
    if (!this._publisher) return null
    const receivers = await this._publisher.publish(topic, eventType, data, { version })
    this._log(this.events, { topic, eventType, data, version, receivers, at: Date.now() })
    return receivers
  }

  async _changed(record, version, topic, eventType, data) {
    const receivers = await this.publish(topic, eventType, data, { version })
    return { record, version: version ?? null, receivers }
  }

  /**
   * Sets an operation's cost and/or active flag (`{ creditCost?, isActive? }`,
   * merged with the stored record) and publishes `credit-config-changed`.
   */
  async setCreditConfig(operationCode, { creditCost, isActive } = {}) {
    checkId('operationCode', operationCode)
    const old = this.data.credits.get(operationCode)
    const cost = creditCost ?? old?.creditCost
    if (typeof cost !== 'number' || !Number.isFinite(cost) || cost < 0) {
      throw httpError(400, 'creditCost must be a finite, non-negative number')
    }
    if (isActive !== undefined && typeof isActive !== 'boolean') {
      throw httpError(400, 'isActive must be a boolean')
    }
    const active = isActive ?? old?.isActive ?? true
    const version = this._nextVersion('credits', operationCode)
    const record = { ...old, operationCode, creditCost: cost, isActive: active, version }
    this.data.credits.set(operationCode, record)
    const changedFields = []
    if (!old || old.creditCost !== cost) changedFields.push('credit_cost')
    if (!old || (old.isActive ?? true) !== active) changedFields.push('is_active')
    const data = { operationCode, newValue: cost, isActive: active, changedFields }
    if (old && typeof old.creditCost === 'number') data.oldValue = old.creditCost
    return this._changed(record, version, 'credit-configs', 'credit-config-changed', data)
  }

  /** Removes an operation and publishes `credit-config-deleted`. */
  async deleteCreditConfig(operationCode) {
    checkId('operationCode', operationCode)
    this._existing('credits', operationCode)
    const version = this._nextVersion('credits', operationCode)
    this.data.credits.delete(operationCode)
    const data = { operationCode }
    return this._changed(null, version, 'credit-configs', 'credit-config-deleted', data)
  }

  /** Sets a role (`{ permissions?, roleName? }`, merged) and publishes `role-changed`. */
  async setRole(roleId, { permissions, roleName } = {}) {
    checkId('roleId', roleId)
    const old = this.data.roles.get(roleId)
    const perms = permissions ?? old?.permissions
    if (!Array.isArray(perms) || !perms.every((p) => typeof p === 'string')) {
      throw httpError(400, 'permissions must be an array of strings')
    }
    if (roleName !== undefined && typeof roleName !== 'string') {
      throw httpError(400, 'roleName must be a string')
    }
    const name = roleName ?? old?.roleName
    const version = this._nextVersion('roles', roleId)
    const record = { ...old, roleId, permissions: [...perms], version }
    if (name !== undefined) record.roleName = name
    this.data.roles.set(roleId, record)
    const data = { roleId, permissions: [...perms] }
    if (name !== undefined) data.roleName = name
    return this._changed(record, version, 'roles', 'role-changed', data)
  }

  /** Removes a role and publishes `role-deleted`. */
  async deleteRole(roleId) {
    checkId('roleId', roleId)
    this._existing('roles', roleId)
    const version = this._nextVersion('roles', roleId)
    this.data.roles.delete(roleId)
    return this._changed(null, version, 'roles', 'role-deleted', { roleId })
  }

  /** Sets a user's access (`{ status?, roles? }`, merged) and publishes `user-status-changed`. */
  async setUserAccess(userId, { status, roles } = {}) {
    checkId('userId', userId)
    const old = this.data.users.get(userId)
    const st = status ?? old?.status
    const rs = roles ?? old?.roles ?? []
    if (typeof st !== 'string' || st === '') throw httpError(400, 'status must be a string')
    if (!Array.isArray(rs) || !rs.every((r) => typeof r === 'string')) {
      throw httpError(400, 'roles must be an array of strings')
    }
    const version = this._nextVersion('users', userId)
    const record = { ...old, userId, status: st, roles: [...rs], version }
    this.data.users.set(userId, record)
    const data = { userId, status: st, roles: [...rs] }
    return this._changed(record, version, 'users', 'user-status-changed', data)
  }

  /** Merges `fields` into a user's profile and publishes `user-changed`. */
  async updateProfile(userId, fields = {}) {
    checkId('userId', userId)
    checkFields(fields)
    const record = { ...this.data.profiles.get(userId), ...fields, userId }
    this.data.profiles.set(userId, record)
    const data = { userId, changedFields: Object.keys(fields) }
    return this._changed(record, undefined, 'users', 'user-changed', data)
  }

  /** Removes a user (access, profile, balance) and publishes `user-deleted`. */
  async deleteUser(userId) {
    checkId('userId', userId)
    if (!this.data.users.has(userId) && !this.data.profiles.has(userId)) {
      throw httpError(404, `no user ${userId}`)
    }
    const version = this._nextVersion('users', userId)
    this.data.users.delete(userId)
    this.data.profiles.delete(userId)
    this.data.balances.delete(userId)
    return this._changed(null, version, 'users', 'user-deleted', { userId })
  }

  /** Sets a user's credit balance. The balance is never cached, so nothing is published. */
  async setBalance(userId, available) {
    checkId('userId', userId)
    if (typeof available !== 'number' || !Number.isFinite(available) || available < 0) {
      throw httpError(400, 'available must be a finite, non-negative number')
    }
    this.data.balances.set(userId, available)
    return { record: { userId, available }, version: null, receivers: null }
  }

  /** Sets an active config (any JSON value) and publishes `config-changed`. */
  async setConfig(configId, config) {
    checkId('configId', configId)
    if (config === undefined) throw httpError(400, 'config is required')
    const version = this._nextVersion('configs', configId)
    const record = { configId, config, version }
    this.data.configs.set(configId, record)
    return this._changed(record, version, 'configs', 'config-changed', { configId, config })
  }

  /** Removes an active config and publishes `config-deleted`. */
  async deleteConfig(configId) {
    checkId('configId', configId)
    this._existing('configs', configId)
    const version = this._nextVersion('configs', configId)
    this.data.configs.delete(configId)
    return this._changed(null, version, 'configs', 'config-deleted', { configId })
  }

  /** Merges `fields` into a hierarchy entity and publishes `hierarchy-changed`. */
  async updateHierarchy(entityId, fields = {}) {
    checkId('entityId', entityId)
    checkFields(fields)
    const record = { ...this.data.hierarchy.get(entityId), ...fields, entityId }
    this.data.hierarchy.set(entityId, record)
    return this._changed(record, undefined, 'hierarchy', 'hierarchy-changed', { entityId })
  }

  /** Publishes `cache-invalidate` for reference cache keys (`user:{id}`, ...). */
  async invalidateKeys(keys) {
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string' && k !== '')) {
      throw httpError(400, 'keys must be an array of non-empty strings')
    }
    return this._changed(null, undefined, 'cache', 'cache-invalidate', { keys: [...keys] })
  }

  /** Publishes `resync-required`: consumers reload everything. */
  async requestResync() {
    return this._changed(null, undefined, 'control', 'resync-required', {})
  }

  /**
   * Every `intervalMs`, sets the active config `configId` to `{ sentAt, seq }`
   * (`sentAt` in epoch ms, sub-ms precision) and publishes it: a canary from
   * which a consumer on the same clock measures Wrapper → app propagation.
   */
  startCanary(intervalMs = 1000, configId = 'propagation-canary') {
    if (!(Number.isFinite(intervalMs) && intervalMs > 0)) {
      throw new RangeError('startCanary: intervalMs must be a positive number')
    }
    this.stopCanary()
    let seq = 0
    let busy = false
    const tick = () => {
      if (busy || this._stopped) return
      busy = true
      const sentAt = performance.timeOrigin + performance.now()
      this.setConfig(configId, { sentAt, seq: ++seq })
        .catch(() => {}) // Redis away: the next tick tries again
        .finally(() => (busy = false))
    }
    this._canary = setInterval(tick, intervalMs)
    this._canary.unref()
    tick()
  }

  stopCanary() {
    if (this._canary) clearInterval(this._canary)
    this._canary = null
  }

  _existing(collection, id) {
    if (!this.data[collection].has(id)) throw httpError(404, `no ${collection} entry ${id}`)
  }
}

module.exports = { PublishMethods }
