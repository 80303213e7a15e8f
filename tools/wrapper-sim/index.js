'use strict'
// Wrapper simulator: the `WrapperSim` class (options, state, the request
// pipeline, stop) and `startWrapperSim`; the public API of
// `smart-crm-consumer/wrapper-sim`. The methods of each concern live in their
// own file and are copied onto the class here:
//
//   data.js     the store: normalisation of `data`, `defaultSeed`
//   http.js     JSON answers, request bodies, path matching
//   routes.js   the Wrapper API of SPEC §4
//   faults.js   faults, gates, waiters, request counts
//   publish.js  change methods that publish the events of SPEC §3, the canary
//   admin.js    the admin HTTP API under /admin/
//   cli.js      `node tools/wrapper-sim.js ...`

const http = require('node:http')
const { send, readBody, responseEncoding, ENCODERS } = require('./http.js')
const { normaliseData, defaultSeed } = require('./data.js')
const { RouteMethods } = require('./routes.js')
const { FaultMethods } = require('./faults.js')
const { PublishMethods } = require('./publish.js')
const { AdminMethods } = require('./admin.js')

class WrapperSim {
  constructor({
    tenantId,
    token,
    port = 0,
    host = '127.0.0.1',
    pageSize,
    cursors,
    data,
    redisUrl,
    channelPrefix = 'crm',
    signingSecret,
    admin = false,
    adminToken,
    maxLog,
    etags = false,
    batchProfiles = true,
    compression = null,
  } = {}) {
    if (typeof tenantId !== 'string' || tenantId === '') {
      throw new TypeError('startWrapperSim: tenantId must be a non-empty string')
    }
    if (
      pageSize !== undefined &&
      pageSize !== null &&
      !(Number.isInteger(pageSize) && pageSize > 0)
    ) {
      throw new RangeError('startWrapperSim: pageSize must be a positive integer')
    }
    if (
      cursors !== undefined &&
      cursors !== null &&
      !(Array.isArray(cursors) && cursors.every((c) => typeof c === 'string'))
    ) {
      throw new TypeError('startWrapperSim: cursors must be an array of strings')
    }
    if (maxLog !== undefined && maxLog !== null && !(Number.isInteger(maxLog) && maxLog > 0)) {
      throw new RangeError('startWrapperSim: maxLog must be a positive integer')
    }
    for (const [name, v] of Object.entries({ redisUrl, signingSecret, adminToken })) {
      if (v !== undefined && v !== null && typeof v !== 'string') {
        throw new TypeError(`startWrapperSim: ${name} must be a string`)
      }
    }
    this.tenantId = tenantId
    /** When set, every request needs `Authorization: Bearer <token>`; may be changed at any time. */
    this.token = token ?? null
    /**
     * When true, each list endpoint's first page carries an `ETag` (a digest of
     * the whole list) and a matching `If-None-Match` is answered 304 (SPEC §4);
     * may be changed at any time.
     */
    this.etags = Boolean(etags)
    if (compression !== null && !Object.hasOwn(ENCODERS, compression)) {
      throw new RangeError(
        `startWrapperSim: compression must be one of ${Object.keys(ENCODERS).join(', ')} or null`,
      )
    }
    /**
     * `'gzip'` or `'br'`: answers of 1 KB or more go compressed when the request
     * accepts it (`Accept-Encoding`), as behind Express's `compression`; may be
     * changed at any time. `null` (default): never.
     */
    this.compression = compression
    /**
     * Whether `GET /api/users/profiles?ids=...` (SPEC §10 batch reads) is
     * served; when false it answers 404, like a Wrapper without it. May be
     * changed at any time.
     */
    this.batchProfiles = Boolean(batchProfiles)
    /** When set, list endpoints answer pages; may be changed at any time. */
    this.pageSize = pageSize ?? null
    /**
     * When set (an array of strings), list endpoints answer pages whose `nextCursor`
     * follows this sequence: a Wrapper with broken paging. The first page carries
     * every item and `cursors[0]`; the page of a cursor carries no items and the
     * cursor after its first occurrence (null after the last), so a repeated
     * cursor makes a cycle (`['a', 'b', 'a']`: a → b → a → b …). Overrides
     * `pageSize`; may be changed at any time.
     */
    this.cursors = cursors ?? null
    this.host = host
    this.port = port
    this.url = null
    this.data = data === undefined ? defaultSeed() : normaliseData(data)
    /** `{ method, path, headers, body }` of every request, in arrival order. */
    this.requests = []
    /** `{ userId, body, replay, status }` of every deduct request that reached the route. */
    this.deductions = []
    /** idempotencyKey → first answer `{ status, json }`. */
    this.idempotency = new Map()
    /** `{ topic, eventType, data, version, receivers, at }` of every change event published. */
    this.events = []
    /** When set, `requests`, `deductions` and `events` keep about this many recent entries. */
    this.maxLog = maxLog ?? null
    /** Whether `/admin/` routes are served (they are never logged in `requests`). */
    this.admin = Boolean(admin)
    this._adminToken = adminToken ?? null
    this._redisUrl = redisUrl ?? null
    this._channelPrefix = channelPrefix
    this._signingSecret = signingSecret ?? null
    this._publisher = null
    /** `collection:id` → the highest version handed out (survives deletes: tombstones). */
    this._versions = new Map()
    this._canary = null
    this._faults = []
    this._gates = new Set()
    this._waiters = new Set()
    this._sleeps = new Set()
    this._sockets = new Set()
    this._stopped = false
    this._stopping = null
    this.server = http.createServer((req, res) => {
      this._handle(req, res).catch((err) => {
        send(res, { status: 500, json: { error: 'sim error', message: err.message } })
      })
    })
    this.server.on('connection', (socket) => {
      this._sockets.add(socket)
      socket.on('close', () => this._sockets.delete(socket))
    })
  }

  async _listen() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(this.port, this.host, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
    this.port = this.server.address().port
    const host = this.host === '0.0.0.0' || this.host === '::' ? '127.0.0.1' : this.host
    this.url = `http://${host.includes(':') ? `[${host}]` : host}:${this.port}`
  }

  /** Appends to a log, trimming it (in chunks) when `maxLog` is set. */
  _log(list, item) {
    list.push(item)
    if (this.maxLog !== null && list.length > this.maxLog + Math.ceil(this.maxLog / 2)) {
      list.splice(0, list.length - this.maxLog)
    }
  }

  // --- request pipeline: log → gates → faults → auth/tenant → route

  async _handle(req, res) {
    let body
    try {
      body = await readBody(req)
    } catch (err) {
      if (err.status) send(res, { status: err.status, json: { error: err.message } })
      return
    }
    if (this.admin && (req.url === '/admin' || req.url.startsWith('/admin/'))) {
      send(res, await this._admin(req.method, req.url, req.headers, body))
      return
    }
    const record = { method: req.method, path: req.url, headers: req.headers, body }
    this._log(this.requests, record)
    for (const waiter of this._waiters) {
      if (waiter.match(record)) waiter.resolve(record)
    }
    for (const gate of [...this._gates]) {
      if (gate.match(record)) await new Promise((resolve) => gate.held.push(resolve))
      if (this._stopped) return
    }
    const fault = this._takeFault(record)
    if (fault) await this._applyFault(fault, req, res, () => this._respond(record))
    else send(res, this._respond(record), responseEncoding(this.compression, req))
  }

  /** Closes the server and every open socket (hung requests end). Idempotent. */
  stop() {
    if (!this._stopping) {
      this._stopped = true
      this.stopCanary()
      const publisher = this._publisher
      this._publisher = null
      this._stopping = Promise.all([
        new Promise((resolve) => this.server.close(() => resolve())),
        publisher ? publisher.close().catch(() => {}) : null,
      ]).then(() => {})
      for (const gate of this._gates) for (const resolve of gate.held.splice(0)) resolve()
      this._gates.clear()
      for (const entry of this._sleeps) {
        clearTimeout(entry.timer)
        entry.resolve()
      }
      this._sleeps.clear()
      for (const waiter of [...this._waiters]) waiter.reject(new Error('wrapper sim stopped'))
      for (const socket of this._sockets) socket.destroy()
    }
    return this._stopping
  }
}

// Every concern's methods, defined like class methods (non-enumerable).
for (const methods of [RouteMethods, FaultMethods, PublishMethods, AdminMethods]) {
  const descriptors = Object.getOwnPropertyDescriptors(methods.prototype)
  delete descriptors.constructor
  Object.defineProperties(WrapperSim.prototype, descriptors)
}

/**
 * Starts a Wrapper simulator.
 *
 * @param {object} opts
 * @param {string} opts.tenantId every request must carry it as `X-Tenant-Id` (else 400)
 * @param {string} [opts.token] when set, every request needs `Authorization: Bearer <token>` (else 401)
 * @param {number} [opts.port=0]
 * @param {string} [opts.host='127.0.0.1']
 * @param {number} [opts.pageSize] when set, list endpoints answer `{ items, nextCursor }` pages
 * @param {string[]} [opts.cursors] when set, list pages follow this fixed `nextCursor`
 *   sequence (a repeated cursor makes a cycle); see the constructor
 * @param {object} [opts.data] initial store (Maps, arrays or objects per collection);
 *   default `defaultSeed()`
 * @param {string} [opts.redisUrl] when set, the change methods publish change events there
 * @param {string} [opts.channelPrefix='crm']
 * @param {string} [opts.signingSecret] signs the published events
 * @param {boolean} [opts.admin=false] serve the `/admin/` routes (ADMIN_ROUTES)
 * @param {string} [opts.adminToken] when set, `/admin/` needs `Authorization: Bearer <adminToken>`
 * @param {number} [opts.maxLog] keep about this many recent `requests`, `deductions`, `events`
 * @param {boolean} [opts.etags=false] list endpoints send an `ETag` and answer a matching
 *   `If-None-Match` with 304
 * @param {'gzip'|'br'|null} [opts.compression=null] compress answers of 1 KB or more when
 *   the request accepts it
 * @returns {Promise<WrapperSim>} `{ url, port, data, requests, deductions, events, token,
 *   pageSize, cursors, fault(), clearFaults(), gate(), waitForRequest(), count(), resetCounts(),
 *   setCreditConfig(), deleteCreditConfig(), setRole(), deleteRole(), setUserAccess(),
 *   updateProfile(), deleteUser(), setBalance(), setConfig(), deleteConfig(),
 *   updateHierarchy(), invalidateKeys(), requestResync(), publish(), startCanary(),
 *   stopCanary(), snapshot(), stop() }`
 */
async function startWrapperSim(opts) {
  const sim = new WrapperSim(opts)
  await sim._listen()
  try {
    await sim._connectPublisher()
  } catch (err) {
    await sim.stop()
    throw err
  }
  return sim
}

module.exports = { startWrapperSim, defaultSeed, normaliseData, WrapperSim }
