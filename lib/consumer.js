'use strict'
// SmartCRMConsumer: the public class (SPEC §2).
//
// A thin shell over the native core: it checks what only JS can see (the JS
// types of arguments, values JSON cannot carry, the logger), keeps the read
// replica that answers critical reads synchronously, and turns replica notices
// into EventEmitter events. Everything else is the core's: the id rule, amounts,
// idempotency keys and options are validated there, once, and native errors
// arrive already as the TypeError/RangeError/Error (with `code`) to throw.
// Everything that does I/O runs in Rust.
//
// Critical reads take any string (up to 64 Ki characters, beyond that a
// RangeError, except on the getCreditCost/checkPermission hot paths): an id
// outside the id rule (crates/core/src/ids.rs) cannot name an entity, so it
// reads as null (false for checkPermission), like any unknown id. Methods that
// send an id to the Wrapper reject an id outside the rule with a RangeError.

const { EventEmitter } = require('node:events')
const { randomUUID } = require('node:crypto')

const { NativeConsumer, checkId } = require('../index.js')
const { Replica, grants, ABSENT } = require('./replica.js')
const { metricsText } = require('./prometheus.js')
const errors = require('./errors.js')
const { readEnv, toJsonOptions } = require('./options.js')
const tracing = require('./tracing.js')

const LOG_LEVELS = ['debug', 'info', 'warn', 'error']
/** Marks the internal constructor argument of a pool's tenants (lib/pool.js). */
const POOLED = Symbol('smart-crm-consumer pooled tenant')
/** Marks the internal constructor argument of a test double (lib/testing.js). */
const TEST_DOUBLE = Symbol('smart-crm-consumer test double')
const MAX_SYNC_ARG_LENGTH = 64 * 1024

function checkLogger(logger) {
  if (logger === undefined || logger === null) return console
  if (typeof logger !== 'object' && typeof logger !== 'function') {
    throw errors.optionError(
      TypeError,
      'option `logger` must be an object with debug, info, warn and error methods',
    )
  }
  for (const level of LOG_LEVELS) {
    if (typeof logger[level] !== 'function') {
      throw errors.optionError(TypeError, `option \`logger\` must have a \`${level}\` method`)
    }
  }
  return logger
}

/** The check JS makes of an argument the core validates: its JS type. */
function checkString(name, value) {
  if (typeof value !== 'string')
    throw errors.typeError(`${name} must be a string, got ${typeof value}`)
}

/**
 * An argument of a synchronous read that the core does not validate: its JS
 * type, and a bound on its length (a guard against pathological input on a
 * path that hashes or copies it; not the id rule, which is the core's).
 */
function checkSyncArg(name, value) {
  checkString(name, value)
  if (value.length > MAX_SYNC_ARG_LENGTH)
    throw errors.rangeError(`${name} is longer than ${MAX_SYNC_ARG_LENGTH} characters`)
}

function rate(hits, misses) {
  const total = hits + misses
  return total === 0 ? 0 : hits / total
}

/** `'change'` or a per-key `'change:{key}'` (SPEC §10). */
function isChangeEvent(event) {
  return typeof event === 'string' && (event === 'change' || event.startsWith('change:'))
}

class SmartCRMConsumer extends EventEmitter {
  /**
   * Validates `options` synchronously (TypeError/RangeError naming the option).
   * Starts nothing: call initialize().
   */
  constructor(options, pooled) {
    super()
    if (pooled !== undefined && pooled.key === POOLED) {
      // A tenant of a pool (lib/pool.js): its native half runs already.
      this._logger = pooled.logger
      this._native = pooled.native
      this.tenantId = pooled.tenantId
      this._pooled = pooled
    } else if (pooled !== undefined && pooled.key === TEST_DOUBLE) {
      // A test double (lib/testing.js): its native half is memory, with the
      // same methods; initialize() starts it like any consumer.
      this._logger = pooled.logger
      this._native = pooled.native
      this.tenantId = pooled.tenantId
      this._pooled = null
    } else {
      // `new SmartCRMConsumer('tenant-123')`, as the design documents write it:
      // the tenant id, everything else from the environment (SPEC §2).
      if (typeof options === 'string') options = { tenantId: options }
      if (options === null || typeof options !== 'object') {
        throw errors.optionError(
          TypeError,
          'options must be a tenant id or an object with at least `tenantId`',
        )
      }
      const { logger, ...rest } = options
      this._logger = checkLogger(logger)
      const json = toJsonOptions(rest, '')
      this._native = new NativeConsumer(json, readEnv())
      this.tenantId = json.tenantId
      this._pooled = null
    }
    this._replica = new Replica()
    // The numeric hit path (no kind string per call) where the native half
    // has it (the addon's consumer; not the test double or a pool tenant).
    this._lookupCode = typeof this._native.refLookupCode === 'function'
    // The hot tier (`referenceHotEntries`, addon consumers only): per kind,
    // up to that many hit texts kept here, so a hit parses without crossing
    // into native code. An entry is used only while the native cache's
    // generation (4 bytes of shared memory, advanced after every
    // invalidation, replaced value or clear) is the one read before the entry
    // was fetched, and until the native entry's refresh point. The counter is
    // read with a plain load (Atomics.load costs ~40 ns here): V8 reads typed
    // array memory afresh on every call, and x86 and arm64 loads of an aligned
    // 32-bit word are never torn.
    this._hot = null
    this._hotHits = 0
    if (typeof this._native.refGenerationBuffer === 'function') {
      const buf = this._native.refGenerationBuffer()
      if (buf !== null) {
        this._hotGen = new Int32Array(buf)
        this._hotMax = this._native.refHotEntries()
        this._hotTick = 0
        this._hot = [new Map(), new Map(), new Map(), new Map()]
      }
    }
    // The replica's first reads of a key it does not hold (lib/replica.js).
    this._loadUser = (id) => this._native.userAccess(id)
    this._loadCredit = (op) => this._native.creditCost(op)
    this._loadRole = (id) => this._native.rolePermissions(id)
    this._loadConfig = (id) => this._native.configText(id)
    this._hits = 0
    this._misses = 0
    this._ready = false
    this._connected = false
    this._closed = false
    this._started = this._pooled !== null
    // A pool's tenants share one logger: their lines name the tenant.
    this._logTag = this._pooled !== null ? `(tenant ${this.tenantId}) ` : ''
    // Set by every read; the pool's sweeper clears it (idleTenantMs, maxTenants).
    this._touched = true
    this._shutdownPromise = null
    // The span of the first initialize() call (lib/tracing.js): the parent of
    // the initial full load's span.
    this._initSpan = null
    this._replicaReady = new Promise((resolve) => (this._resolveReplicaReady = resolve))
    // 'change' and 'change:{key}' notices cost the core nothing until a
    // listener for one of them exists.
    this._keyListeners = 0
    this.on('newListener', (event) => {
      if (!isChangeEvent(event)) return
      if (event !== 'change') this._keyListeners++
      this._native.setListenChanges(true)
    })
    this.on('removeListener', (event) => {
      if (!isChangeEvent(event)) return
      if (event !== 'change') this._keyListeners--
      if (this._keyListeners === 0 && this.listenerCount('change') === 0)
        this._native.setListenChanges(false)
    })
  }

  /**
   * Subscribes, loads the critical snapshot, applies events that arrived
   * meanwhile; resolves when the cache is complete. After `initTimeoutMs`
   * rejects with `code` REDIS_UNAVAILABLE, WRAPPER_UNAVAILABLE, WRAPPER_AUTH or
   * INVALID_RESPONSE and keeps trying in the background.
   */
  async initialize() {
    if (this._closed) throw errors.shutdownError()
    const span = tracing.startInitialize(this.tenantId)
    if (this._initSpan === null) this._initSpan = span
    try {
      if (!this._started) {
        this._started = true
        this._native.start((json) => this._onBatch(json))
      }
      await this._native.waitReady()
      await this._replicaReady
    } catch (err) {
      tracing.end(span, err)
      throw err
    }
    tracing.end(span)
  }

  /** Applies a replica batch from the core, then dispatches its notices. */
  _onBatch(json) {
    let notices
    try {
      notices = this._replica.apply(json)
    } catch (err) {
      this._logger.error(`[smart-crm-consumer] could not apply a replica batch: ${err.message}`)
      return
    }
    for (const n of notices) {
      try {
        this._notice(n)
      } catch (err) {
        // A throwing listener must not stop the rest of the batch.
        this._logger.error(`[smart-crm-consumer] a '${n.kind}' listener threw: ${err && err.stack}`)
      }
    }
  }

  _notice(n) {
    switch (n.kind) {
      case 'change': {
        const change = { eventType: n.eventType, keys: n.keys }
        this.emit('change', change)
        if (this._keyListeners > 0) {
          for (const key of n.keys) this.emit(`change:${key}`, change)
        }
        break
      }
      case 'connection':
        this._connected = n.connected
        this.emit('connection', { connected: n.connected })
        break
      case 'resync':
        tracing.fullLoad(this.tenantId, n, n.reason === 'initial' ? this._initSpan : null)
        this.emit('resync', { reason: n.reason })
        break
      case 'ready':
        this._ready = true
        this._resolveReplicaReady()
        break
      case 'log':
        this._logger[n.level](`[smart-crm-consumer] ${this._logTag}${n.msg}`)
        break
      case 'error': {
        const err = new Error(n.message)
        err.code = n.code
        this._emitError(err)
        break
      }
    }
  }

  /** 'error' goes to listeners when there are any, else to logger.error. */
  _emitError(err) {
    if (this.listenerCount('error') > 0) this.emit('error', err)
    else if (this._pooled !== null) this._pooled.unhandledError(err)
    else this._logger.error(`[smart-crm-consumer] ${this._logTag}${err.code}: ${err.message}`)
  }

  _open() {
    if (this._closed) throw errors.shutdownError()
    this._touched = true
  }

  // ---- critical reads: synchronous, no I/O ---------------------------------

  /** The operation's cost, or null when not configured or inactive. */
  getCreditCost(operationCode) {
    if (this._closed) throw errors.shutdownError()
    this._touched = true
    if (typeof operationCode !== 'string') checkString('operationCode', operationCode)
    const r = this._replica
    let cost = r.credits.map.get(operationCode)
    if (cost === undefined) cost = r.read(r.credits, operationCode, this._loadCredit)
    if (cost === ABSENT) {
      this._misses++
      return null
    }
    this._hits++
    return cost
  }

  /** Counts a critical read as a hit (found) or a miss; passes `entry` on. */
  _counted(entry) {
    if (entry === undefined || entry === ABSENT) this._misses++
    else this._hits++
    return entry
  }

  /** A copy of the role's permissions, or null. */
  getRolePermissions(roleId) {
    this._open()
    checkSyncArg('roleId', roleId)
    const r = this._counted(this._replica.read(this._replica.roles, roleId, this._loadRole))
    return r === ABSENT ? null : r.perms.slice()
  }

  /** A copy of the user's role ids, or null. */
  getUserRoles(userId) {
    this._open()
    checkSyncArg('userId', userId)
    const u = this._counted(this._replica.user(userId, this._loadUser))
    return u === undefined ? null : u.roles.slice()
  }

  /** The user's status, or null. */
  getUserStatus(userId) {
    this._open()
    checkSyncArg('userId', userId)
    const u = this._counted(this._replica.user(userId, this._loadUser))
    return u === undefined ? null : u.status
  }

  /** A fresh copy of the config's JSON value, or null. */
  getActiveConfig(configId) {
    this._open()
    checkSyncArg('configId', configId)
    const text = this._counted(
      this._replica.read(this._replica.configs, configId, this._loadConfig),
    )
    return text === ABSENT ? null : JSON.parse(text)
  }

  /**
   * Deny by default: true only for a known user whose status is exactly
   * 'active' and one of whose roles holds a matching pattern (exact,
   * `prefix.*`, or `*`). Case-sensitive.
   */
  checkPermission(userId, permission) {
    if (this._closed) throw errors.shutdownError()
    this._touched = true
    if (typeof userId !== 'string') checkString('userId', userId)
    if (typeof permission !== 'string') checkString('permission', permission)
    const u = this._replica.user(userId, this._loadUser)
    if (u === undefined) {
      this._misses++
      return false
    }
    this._hits++
    if (u.status !== 'active') return false
    return grants(this._replica.access(u, this._loadRole), permission)
  }

  // ---- reference reads: async, TTL-cached ----------------------------------

  /**
   * A cache hit is answered without a thread hop: `refLookup` returns the
   * JSON text, null on a miss (then `refGet` fetches), or throws (a RangeError
   * for the id, NOT_FOUND for a remembered 404).
   */
  _reference(kind, code, name, id) {
    try {
      this._open()
      let text
      if (this._hot !== null) {
        const map = this._hot[code]
        const e = map.get(id)
        if (e !== undefined) {
          if (e.gen === this._hotGen[0] && performance.now() < e.until) {
            this._hotHits++
            return Promise.resolve(JSON.parse(e.text))
          }
          map.delete(id)
        }
        checkString(name, id)
        text = this._hotLookup(map, code, id)
      } else {
        checkString(name, id)
        text = this._lookupCode
          ? this._native.refLookupCode(code, id)
          : this._native.refLookup(kind, id)
      }
      if (text !== null) return Promise.resolve(JSON.parse(text))
    } catch (err) {
      return Promise.reject(err)
    }
    const span = tracing.startReferenceMiss(kind, this.tenantId)
    if (span === null) return this._native.refGet(kind, id).then(JSON.parse)
    // Traced: the span ends in the one continuation the call has anyway.
    let p
    try {
      p = this._native.refGet(kind, id)
    } catch (err) {
      tracing.end(span, err)
      throw err
    }
    return p.then(
      (text) => {
        let value
        try {
          value = JSON.parse(text)
        } catch (err) {
          tracing.end(span, err)
          throw err
        }
        tracing.end(span)
        return value
      },
      (err) => {
        tracing.end(span, err)
        throw err
      },
    )
  }

  /**
   * A native lookup that may admit the hit into the hot tier `map`: always
   * while it has room, one call in 8 when full (the oldest admitted entry
   * then goes), so a scan of many ids does not churn it. The generation is
   * read before the lookup: a change after it makes the entry unusable.
   */
  _hotLookup(map, code, id) {
    if (map.size >= this._hotMax) {
      if ((++this._hotTick & 7) !== 0) return this._native.refLookupCode(code, id)
      map.delete(map.keys().next().value)
    }
    const gen = this._hotGen[0]
    const hit = this._native.refLookupHot(code, id)
    if (hit === null) return null
    if (hit[1] > 1) map.set(id, { text: hit[0], gen, until: performance.now() + hit[1] - 1 })
    return hit[0]
  }

  /** The user's profile (`user:{id}`, 5 min by default). */
  getUserProfile(userId) {
    return this._reference('user', 0, 'userId', userId)
  }

  /**
   * Profiles of `ids` (SPEC §10 batch reads): an array as long as `ids`, in
   * order, each a fresh object or null for a user the Wrapper does not know.
   * Hits are answered here without a thread hop (a call of only hits resolves
   * without crossing to the core's threads); the misses go to the core in one
   * call, which fetches them in batch requests (or one by one, 8 at a time,
   * from a Wrapper without the batch endpoint).
   */
  getUserProfiles(ids) {
    /** id → JSON text, or null for an unknown user; misses are not in it yet. */
    const texts = new Map()
    const misses = []
    try {
      this._open()
      if (!Array.isArray(ids)) {
        throw errors.typeError(`ids must be an array, got ${ids === null ? 'null' : typeof ids}`)
      }
      for (let i = 0; i < ids.length; i++) {
        if (typeof ids[i] !== 'string') checkString(`ids[${i}]`, ids[i])
      }
      // Every id is checked before any is read: a rejected call counts nothing.
      for (let i = 0; i < ids.length; i++) checkId(`ids[${i}]`, ids[i])
      const seen = new Set()
      for (const id of ids) {
        if (seen.has(id)) continue
        seen.add(id)
        let text
        try {
          text = this._native.refLookup('user', id)
        } catch (err) {
          if (err === null || typeof err !== 'object' || err.code !== 'NOT_FOUND') throw err
          texts.set(id, null) // a remembered 404
          continue
        }
        if (text === null) misses.push(id)
        else texts.set(id, text)
      }
    } catch (err) {
      return Promise.reject(err)
    }
    const build = () =>
      ids.map((id) => {
        const text = texts.get(id)
        return text === null ? null : JSON.parse(text)
      })
    if (misses.length === 0) return Promise.resolve().then(build)
    return this._native.refGetProfiles(misses).then((fetched) => {
      for (let i = 0; i < misses.length; i++) texts.set(misses[i], fetched[i])
      return build()
    })
  }

  /** The entity's hierarchy (`hierarchy:{id}`, 15 min by default). */
  getHierarchy(entityId) {
    return this._reference('hierarchy', 1, 'entityId', entityId)
  }

  /** An audit log (`audit:{id}`, 1 h by default). */
  getAuditLog(logId) {
    return this._reference('audit', 2, 'logId', logId)
  }

  /** Historical data (`historical:{key}`, 24 h by default). */
  getHistoricalData(key) {
    return this._reference('historical', 3, 'key', key)
  }

  /** Expiry (epoch ms) of the held entry for `key`, or null. */
  getCacheExpiry(key) {
    this._open()
    checkSyncArg('key', key)
    return this._native.cacheExpiry(key)
  }

  /** Drops the reference entry for `key`. */
  invalidate(key) {
    this._open()
    checkSyncArg('key', key)
    this._native.invalidate(key)
  }

  // ---- credits --------------------------------------------------------------

  /** The user's available credits, from the Wrapper (never cached). */
  async getUserCredits(userId) {
    this._open()
    checkString('userId', userId)
    const span = tracing.startCredits('getUserCredits', this.tenantId)
    if (span === null) return this._native.userCredits(userId)
    try {
      const available = await this._native.userCredits(userId)
      tracing.end(span)
      return available
    } catch (err) {
      tracing.end(span, err)
      throw err
    }
  }

  /** False if the operation is not configured or inactive, else available >= cost. */
  async checkCredits(operationCode, userId) {
    this._open()
    checkString('operationCode', operationCode)
    checkString('userId', userId)
    // Refused whatever the operation, so the answer never depends on the data.
    checkId('userId', userId)
    const cost = this.getCreditCost(operationCode)
    if (cost === null) return false
    return (await this.getUserCredits(userId)) >= cost
  }

  /**
   * Deducts `amount` credits. Retries (bounded, with backoff) reuse the same
   * idempotency key, generated when not given, so a deduction is never applied
   * twice. Resolves to `{ remaining, idempotencyKey }`; a 402 rejects with code
   * INSUFFICIENT_CREDITS. Every rejection carries the key as
   * `err.idempotencyKey` (unless the key given is not a string), so a caller
   * that retries after an error the Wrapper may have applied is charged once.
   */
  async deductCredits(userId, amount, options) {
    const opts = options ?? {}
    if (typeof opts !== 'object') throw errors.typeError('options must be an object')
    const key = opts.idempotencyKey ?? randomUUID()
    if (typeof key !== 'string')
      throw errors.typeError(`idempotencyKey must be a string, got ${typeof key}`)
    try {
      this._open()
      checkString('userId', userId)
      if (typeof amount !== 'number')
        throw errors.typeError(`amount must be a number, got ${typeof amount}`)
      const { operationCode } = opts
      if (operationCode !== undefined && operationCode !== null)
        checkString('operationCode', operationCode)
      const span = tracing.startCredits('deductCredits', this.tenantId)
      let remaining
      try {
        remaining = await this._native.deduct(userId, amount, operationCode ?? null, key)
      } catch (err) {
        tracing.end(span, err)
        throw err
      }
      tracing.end(span)
      return { remaining, idempotencyKey: key }
    } catch (err) {
      err.idempotencyKey = key
      throw err
    }
  }

  // ---- operations -----------------------------------------------------------

  /** Subscribed, and the resync after the latest (re)connect has completed. */
  get isConnected() {
    return this._connected && !this._closed
  }

  /** `{ ready, connected, degraded, lastEventAt, lastSyncAt, reason, circuit, source }`. */
  health() {
    const h = this._native.health()
    return {
      ready: this._ready,
      connected: this.isConnected,
      degraded: h.degraded,
      lastEventAt: h.lastEventAt,
      lastSyncAt: h.lastSyncAt,
      reason: h.reason,
      circuit: h.circuit,
      source: h.source,
    }
  }

  /** Every figure of SPEC §2 (and a few more). */
  getMetrics() {
    const n = this._native.metrics()
    const criticalHits = this._hits
    const criticalMisses = this._misses
    // Hits of the hot tier never reach the native counter.
    const referenceHits = n.referenceHits + this._hotHits
    const hits = criticalHits + referenceHits
    const misses = criticalMisses + n.referenceMisses
    const criticalCacheSize = n.criticalCacheSize
    return {
      criticalHits,
      criticalMisses,
      referenceHits,
      referenceMisses: n.referenceMisses,
      criticalHitRate: rate(criticalHits, criticalMisses),
      referenceHitRate: rate(referenceHits, n.referenceMisses),
      overallHitRate: rate(hits, misses),
      totalRequests: hits + misses,
      cacheSize: criticalCacheSize + n.referenceCacheSize,
      criticalCacheSize,
      referenceCacheSize: n.referenceCacheSize,
      referenceCacheBytes: n.referenceCacheBytes,
      wrapperRequests: n.wrapperRequests,
      wrapperErrors: n.wrapperErrors,
      coalescedRequests: n.coalescedRequests,
      staleServed: n.staleServed,
      sharedHits: n.sharedHits,
      sharedMisses: n.sharedMisses,
      eventsReceived: n.eventsReceived,
      eventsApplied: n.eventsApplied,
      eventsRejected: n.eventsRejected,
      reconnects: n.reconnects,
      resyncs: n.resyncs,
      queueOverflows: n.queueOverflows,
      resumes: n.resumes,
      snapshotLoads: { wrapper: n.snapshotLoadsWrapper, redis: n.snapshotLoadsRedis },
      snapshotRejected: n.snapshotRejected,
      connected: this.isConnected,
    }
  }

  /** The metrics in Prometheus text exposition format. */
  metricsText() {
    return metricsText(this.getMetrics(), this.tenantId)
  }

  /**
   * Stops every background task and closes every connection; afterwards
   * nothing the package owns keeps the Node process alive. Idempotent. For a
   * pool's tenant this is `pool.release(tenantId)` (SPEC §8).
   */
  shutdown() {
    if (!this._shutdownPromise) {
      this._closed = true
      this._connected = false
      this._resolveReplicaReady()
      this._shutdownPromise = this._native.shutdown()
      // Reads throw SHUTDOWN from now on: the replica's memory can go.
      this._replica = new Replica()
      if (this._pooled !== null) this._pooled.released(this)
    }
    return this._shutdownPromise
  }
}

module.exports = { SmartCRMConsumer, POOLED, TEST_DOUBLE, checkLogger, rate }
