'use strict'
// Wrapper simulator: an HTTP server that speaks the Wrapper API of SPEC §4, for
// the tests, the demo and the example app; in-process (`startWrapperSim`) or as
// a runnable tool (the CLI below).
//
// It serves a mutable in-memory store (`sim.data`), logs every request, and
// can misbehave on demand (errors, delays, resets, hangs, truncated or invalid
// bodies, gated requests) so the consumer's failure handling can be tested
// deterministically.
//
// Given a `redisUrl` it is also the publishing side: its change methods
// (`setCreditConfig`, `setRole`, `setUserAccess`, ...) update the store and
// publish the matching change event of SPEC §3 with the package's
// `createPublisher` (signed when a `signingSecret` is set). With `admin: true`
// the same changes are offered over HTTP under `/admin/` (see ADMIN_ROUTES).
// Without a `redisUrl` it needs Node built-ins only.
//
//   node tools/wrapper-sim.js --tenant T [--port 8080] [--redis URL] [--data seed.json] ...
//   (--help lists every option)

const fs = require('node:fs')
const http = require('node:http')
const { performance } = require('node:perf_hooks')

const JSON_TYPE = 'application/json; charset=utf-8'
const MAX_BODY_BYTES = 1024 * 1024

// ---------------------------------------------------------------------------
// Data: the store and its normalisation

/** How items of each collection are keyed when `data` gives them as an array. */
const KEY_FIELDS = {
  credits: ['operationCode'],
  roles: ['roleId'],
  users: ['userId'],
  configs: ['configId'],
  profiles: ['userId', 'id'],
  hierarchy: ['entityId', 'id'],
  auditLogs: ['logId', 'id'],
  historical: ['key', 'id'],
  balances: ['userId'],
}

/** Fills in a record given as `{ [key]: value }`; a few shorthands for brevity. */
function expandRecord(name, key, value) {
  const field = KEY_FIELDS[name][0]
  if (name === 'credits' && typeof value === 'number') {
    return { operationCode: key, creditCost: value }
  }
  if (name === 'roles' && Array.isArray(value)) return { roleId: key, permissions: value }
  const critical = name === 'credits' || name === 'roles' || name === 'users' || name === 'configs'
  if (critical && value && typeof value === 'object' && !(field in value)) {
    return { [field]: key, ...value }
  }
  return value
}

/**
 * One collection as a Map. A Map is used as it is (so a test can keep a
 * reference to it); an array is keyed by its items' key field (or read as
 * `[key, value]` entries); a plain object by its own keys.
 */
function toMap(name, value) {
  if (value === undefined || value === null) return new Map()
  if (value instanceof Map) return value
  if (Array.isArray(value)) {
    return new Map(
      value.map((item) => {
        if (Array.isArray(item) && item.length === 2) return [String(item[0]), item[1]]
        const key = KEY_FIELDS[name].map((f) => item?.[f]).find((k) => k !== undefined)
        if (key === undefined) {
          throw new TypeError(`data.${name}: an item has no ${KEY_FIELDS[name].join(' or ')}`)
        }
        return [String(key), item]
      }),
    )
  }
  if (typeof value === 'object') {
    return new Map(Object.entries(value).map(([k, v]) => [k, expandRecord(name, k, v)]))
  }
  throw new TypeError(`data.${name} must be a Map, an array or an object`)
}

/** Normalises `data` into `{ credits: Map, roles: Map, ... }`; missing collections are empty. */
function normaliseData(data = {}) {
  const out = {}
  for (const name of Object.keys(KEY_FIELDS)) out[name] = toMap(name, data[name])
  return out
}

function profile(userId, name, title, department, managerId) {
  const login = name.split(' ')[0].toLowerCase()
  return {
    userId,
    name,
    email: `${login}@example.com`,
    title,
    department,
    phone: '+1-555-0100',
    locale: 'en-US',
    timezone: 'Europe/Berlin',
    managerId,
    avatarUrl: `https://avatars.example.com/${userId}.png`,
    createdAt: '2025-01-15T09:00:00Z',
  }
}

/**
 * A small, fresh sample store (Maps), the default when `data` is not given.
 *
 * @returns {{ credits: Map, roles: Map, users: Map, configs: Map, profiles: Map,
 *   hierarchy: Map, auditLogs: Map, historical: Map, balances: Map }}
 */
function defaultSeed() {
  return normaliseData({
    credits: [
      { operationCode: 'crm.leads.create', creditCost: 2.5, isActive: true, version: 1 },
      { operationCode: 'crm.leads.delete', creditCost: 1, isActive: true, version: 1 },
      { operationCode: 'crm.contacts.export', creditCost: 0, isActive: true, version: 1 },
      { operationCode: 'crm.reports.generate', creditCost: 10, isActive: true, version: 1 },
      { operationCode: 'crm.legacy.import', creditCost: 5, isActive: false, version: 1 },
    ],
    roles: [
      { roleId: 'admin', roleName: 'Administrator', permissions: ['*'], version: 1 },
      {
        roleId: 'sales',
        roleName: 'Sales',
        permissions: ['crm.leads.*', 'crm.contacts.read'],
        version: 1,
      },
      { roleId: 'viewer', roleName: 'Viewer', permissions: ['crm.contacts.read'], version: 1 },
    ],
    users: [
      { userId: 'u-alice', status: 'active', roles: ['sales'], version: 1 },
      { userId: 'u-bob', status: 'suspended', roles: ['admin'], version: 1 },
      { userId: 'u-carol', status: 'active', roles: ['viewer', 'sales'], version: 1 },
    ],
    configs: [
      { configId: 'feature-flags', config: { beta: true }, version: 1 },
      { configId: 'limits', config: { maxLeadsPerDay: 500, exportBatch: 1000 }, version: 1 },
    ],
    profiles: [
      profile('u-alice', 'Alice Example', 'Account Executive', 'Sales', 'u-bob'),
      profile('u-bob', 'Bob Example', 'Head of Sales', 'Sales', null),
      profile('u-carol', 'Carol Example', 'Sales Analyst', 'Sales', 'u-bob'),
    ],
    hierarchy: [
      {
        entityId: 'org-1',
        name: 'Example Corp',
        type: 'org',
        parentId: null,
        children: ['team-sales'],
      },
      { entityId: 'team-sales', name: 'Sales', type: 'team', parentId: 'org-1', children: [] },
    ],
    auditLogs: [
      {
        logId: 'log-1',
        userId: 'u-alice',
        action: 'crm.leads.create',
        at: '2026-01-10T08:30:00Z',
        details: { leadId: 'lead-42' },
      },
    ],
    historical: [
      { key: 'revenue-2025-q4', currency: 'EUR', total: 125000, months: [40000, 41000, 44000] },
    ],
    balances: { 'u-alice': 100, 'u-bob': 50, 'u-carol': 1 },
  })
}

// ---------------------------------------------------------------------------
// Responses

const ok = (json) => ({ status: 200, json })
const fail = (status, error, extra) => ({ status, json: { error, ...extra } })
const NOT_FOUND = () => fail(404, 'not found')

function send(res, { status, json, raw, headers }) {
  if (res.destroyed || res.headersSent) return
  const text = raw !== undefined ? raw : (JSON.stringify(json) ?? '')
  const body = Buffer.isBuffer(text) ? text : Buffer.from(String(text))
  res.writeHead(status, { 'Content-Type': JSON_TYPE, 'Content-Length': body.length, ...headers })
  res.end(body)
}

function bodyText(result) {
  if (result.raw !== undefined) return Buffer.from(result.raw)
  return Buffer.from(JSON.stringify(result.json) ?? '')
}

// ---------------------------------------------------------------------------
// Route handlers: (sim, { params, query, body }) → { status, json }

const encodeCursor = (offset) => Buffer.from(`offset:${offset}`).toString('base64url')

function decodeCursor(cursor) {
  const m = /^offset:(\d+)$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'))
  return m ? Number(m[1]) : null
}

/**
 * A list endpoint: a plain array, or `{ items, nextCursor }` pages when `sim.pageSize` is set,
 * or pages that follow the fixed cursor sequence `sim.cursors` (see the constructor).
 */
function listRoute(collection) {
  return (sim, { query }) => {
    const items = [...sim.data[collection].values()]
    const cursor = query.get('cursor')
    if (sim.cursors) {
      // The first page has every item; the page of a cursor has none and the
      // cursor that follows its first occurrence in the sequence.
      if (cursor === null) return ok({ items, nextCursor: sim.cursors[0] ?? null })
      const at = sim.cursors.indexOf(cursor)
      if (at === -1) return fail(400, 'bad cursor')
      return ok({ items: [], nextCursor: sim.cursors[at + 1] ?? null })
    }
    if (!sim.pageSize) return ok(items)
    const start = cursor ? decodeCursor(cursor) : 0
    if (start === null) return fail(400, 'bad cursor')
    const end = start + sim.pageSize
    return ok({
      items: items.slice(start, end),
      nextCursor: end < items.length ? encodeCursor(end) : null,
    })
  }
}

/** A reference endpoint: the object stored under the id, or 404. */
function referenceRoute(collection) {
  return (sim, { params }) => {
    const value = sim.data[collection].get(params.id)
    return value === undefined ? NOT_FOUND() : ok(value)
  }
}

/** `GET /api/users/:id/credits` → `{ available }`; 404 when the user has no balance. */
function creditsRoute(sim, { params }) {
  const available = sim.data.balances.get(params.id)
  return available === undefined ? NOT_FOUND() : ok({ available })
}

/**
 * `POST /api/users/:id/credits/deduct` → `{ remaining }` or 402. Idempotent by
 * `idempotencyKey`: a repeated key gets the first answer and deducts nothing.
 */
function deductRoute(sim, { params, body }) {
  const userId = params.id
  let parsed
  try {
    parsed = JSON.parse(body)
  } catch {
    sim._log(sim.deductions, { userId, body, replay: false, status: 400 })
    return fail(400, 'body must be JSON')
  }
  const record = { userId, body: parsed, replay: false }
  sim._log(sim.deductions, record)
  const { amount, idempotencyKey } = parsed ?? {}
  if (typeof amount !== 'number' || !Number.isFinite(amount) || amount < 0) {
    record.status = 400
    return fail(400, 'amount must be a non-negative number')
  }
  if (idempotencyKey !== undefined && typeof idempotencyKey !== 'string') {
    record.status = 400
    return fail(400, 'idempotencyKey must be a string')
  }
  if (idempotencyKey !== undefined && sim.idempotency.has(idempotencyKey)) {
    const first = sim.idempotency.get(idempotencyKey)
    record.replay = true
    record.status = first.status
    return { status: first.status, json: structuredClone(first.json) }
  }
  const available = sim.data.balances.get(userId)
  let result
  if (available === undefined) result = NOT_FOUND()
  else if (available < amount) result = fail(402, 'INSUFFICIENT_CREDITS', { available })
  else {
    sim.data.balances.set(userId, available - amount)
    result = ok({ remaining: available - amount })
  }
  record.status = result.status
  if (idempotencyKey !== undefined && result.status !== 404) {
    sim.idempotency.set(idempotencyKey, {
      status: result.status,
      json: structuredClone(result.json),
    })
  }
  return result
}

/** The routing table. `:id` is one path segment, percent-decoded after splitting. */
const ROUTES = [
  ['GET', '/api/credits/configs', listRoute('credits')],
  ['GET', '/api/roles', listRoute('roles')],
  ['GET', '/api/users/access', listRoute('users')],
  ['GET', '/api/configs/active', listRoute('configs')],
  ['GET', '/api/users/:id/profile', referenceRoute('profiles')],
  ['GET', '/api/hierarchy/:id', referenceRoute('hierarchy')],
  ['GET', '/api/audit-logs/:id', referenceRoute('auditLogs')],
  ['GET', '/api/historical/:id', referenceRoute('historical')],
  ['GET', '/api/users/:id/credits', creditsRoute],
  ['POST', '/api/users/:id/credits/deduct', deductRoute],
].map(([method, pattern, handler]) => ({ method, segments: pattern.split('/'), handler }))

/** Matches raw segments against a route; returns decoded params, or null. */
function matchRoute(route, segments) {
  if (route.segments.length !== segments.length) return null
  const params = {}
  for (let i = 0; i < segments.length; i++) {
    const want = route.segments[i]
    if (want.startsWith(':')) params[want.slice(1)] = segments[i]
    else if (want !== segments[i]) return null
  }
  return params
}

// ---------------------------------------------------------------------------
// Request matching (faults, gates, counting)

/** A string prefix of the raw path, a RegExp on the raw path, or a predicate on the request record. */
function toMatcher(match) {
  if (match === undefined || match === null) return () => true
  if (typeof match === 'string') return (r) => r.path.startsWith(match)
  if (match instanceof RegExp) {
    return (r) => {
      match.lastIndex = 0
      return match.test(r.path)
    }
  }
  if (typeof match === 'function') return (r) => Boolean(match(r))
  throw new TypeError('match must be a string prefix, a RegExp or a function')
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = []
    let size = 0
    req.on('data', (chunk) => {
      size += chunk.length
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error('body too large'), { status: 413 }))
        req.destroy()
      } else chunks.push(chunk)
    })
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    req.on('error', reject)
  })
}

// ---------------------------------------------------------------------------
// Admin: change the data over HTTP; each change publishes its event

const httpError = (status, message) => Object.assign(new Error(message), { status })

const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)

function checkId(name, id) {
  if (typeof id !== 'string' || id === '')
    throw httpError(400, `${name} must be a non-empty string`)
}

function checkFields(fields) {
  if (!isPlainObject(fields)) throw httpError(400, 'fields must be an object')
}

/**
 * `/admin/` routes (with `admin: true`): `(sim, params, body)` → result. Every
 * change answers `{ ok: true, record, version, receivers }`; `receivers` is
 * the number of subscribers the event reached (null when not publishing).
 */
const ADMIN_ROUTES = [
  ['GET', '/admin/state', (sim) => sim.snapshot()],
  ['PUT', '/admin/credits/:id', (sim, p, b) => sim.setCreditConfig(p.id, b)],
  ['DELETE', '/admin/credits/:id', (sim, p) => sim.deleteCreditConfig(p.id)],
  ['PUT', '/admin/roles/:id', (sim, p, b) => sim.setRole(p.id, b)],
  ['DELETE', '/admin/roles/:id', (sim, p) => sim.deleteRole(p.id)],
  ['PUT', '/admin/users/:id/access', (sim, p, b) => sim.setUserAccess(p.id, b)],
  ['PATCH', '/admin/users/:id/profile', (sim, p, b) => sim.updateProfile(p.id, b)],
  ['DELETE', '/admin/users/:id', (sim, p) => sim.deleteUser(p.id)],
  ['PUT', '/admin/balances/:id', (sim, p, b) => sim.setBalance(p.id, b.available)],
  ['PUT', '/admin/configs/:id', (sim, p, b) => sim.setConfig(p.id, b.config)],
  ['DELETE', '/admin/configs/:id', (sim, p) => sim.deleteConfig(p.id)],
  ['PATCH', '/admin/hierarchy/:id', (sim, p, b) => sim.updateHierarchy(p.id, b)],
  ['POST', '/admin/invalidate', (sim, p, b) => sim.invalidateKeys(b.keys)],
  ['POST', '/admin/resync', (sim) => sim.requestResync()],
  ['GET', '/admin/log', (sim) => sim.recentLog(20)],
  [
    'POST',
    '/admin/faults',
    (sim, p, b) => {
      // `{ match: '/api/users/u-1/credits', status?, delayMs?, reset?, hang?, times? }`
      if (typeof b.match !== 'string' || !b.match.startsWith('/api/')) {
        throw httpError(400, 'match must be a path prefix starting with /api/')
      }
      const spec = {}
      for (const k of ['status', 'delayMs', 'times']) {
        if (b[k] === undefined) continue
        if (!Number.isInteger(b[k]) || b[k] < 0) throw httpError(400, `${k} must be an integer`)
        spec[k] = b[k]
      }
      for (const k of ['reset', 'hang']) if (b[k] === true) spec[k] = true
      sim.fault(b.match, spec)
      return { record: { match: b.match, ...spec }, version: null, receivers: null }
    },
  ],
  [
    'DELETE',
    '/admin/faults',
    (sim) => {
      sim.clearFaults()
      return { record: null, version: null, receivers: null }
    },
  ],
  [
    'POST',
    '/admin/events',
    async (sim, p, b) => {
      if (typeof b.topic !== 'string' || typeof b.eventType !== 'string') {
        throw httpError(400, 'topic and eventType must be strings')
      }
      if (b.data !== undefined && !isPlainObject(b.data))
        throw httpError(400, 'data must be an object')
      const receivers = await sim.publish(b.topic, b.eventType, b.data ?? {}, {
        version: b.version,
      })
      return { record: null, version: b.version ?? null, receivers }
    },
  ],
].map(([method, pattern, handler]) => ({ method, segments: pattern.split('/'), handler }))

// ---------------------------------------------------------------------------
// The simulator

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

  /**
   * Creates the publisher when a `redisUrl` was given (the package's
   * createPublisher: synchronous, it connects on the first publish and
   * reconnects by itself). Async for its callers' sake.
   */
  async _connectPublisher() {
    if (!this._redisUrl) return
    // Loaded only here, so a sim without Redis needs nothing but Node built-ins.
    const { createPublisher } = require('../lib/index.js')
    this._publisher = createPublisher({
      redisUrl: this._redisUrl,
      tenantId: this.tenantId,
      channelPrefix: this._channelPrefix,
      signingSecret: this._signingSecret ?? undefined,
    })
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
    else send(res, this._respond(record))
  }

  /** The normal answer to a request. */
  _respond(record) {
    if (this.token !== null && record.headers.authorization !== `Bearer ${this.token}`) {
      return fail(401, 'unauthorized')
    }
    if (record.headers['x-tenant-id'] !== this.tenantId) return fail(400, 'bad tenant')
    const q = record.path.indexOf('?')
    const pathname = q === -1 ? record.path : record.path.slice(0, q)
    const query = new URLSearchParams(q === -1 ? '' : record.path.slice(q + 1))
    const segments = pathname.split('/')
    let pathMatched = false
    for (const route of ROUTES) {
      const raw = matchRoute(route, segments)
      if (!raw) continue
      pathMatched = true
      if (route.method !== record.method) continue
      const params = {}
      try {
        for (const [k, v] of Object.entries(raw)) params[k] = decodeURIComponent(v)
      } catch {
        return fail(400, 'bad path')
      }
      return route.handler(this, { params, query, body: record.body })
    }
    return pathMatched ? fail(405, 'method not allowed') : NOT_FOUND()
  }

  _takeFault(record) {
    for (const fault of this._faults) {
      if (fault.remaining > 0 && fault.match(record)) {
        fault.remaining--
        fault.applied++
        if (fault.remaining === 0) this._faults.splice(this._faults.indexOf(fault), 1)
        return fault.spec
      }
    }
    return null
  }

  async _applyFault(spec, req, res, respond) {
    if (spec.delayMs) {
      await this._sleep(spec.delayMs)
      if (this._stopped) return
    }
    const overrides = 'json' in spec || 'body' in spec || 'status' in spec
    // `apply: true` runs the real handler (and its side effects) before misbehaving
    const normal = spec.apply || spec.truncate || !overrides ? respond() : null
    if (spec.hang) return // answered never; stop() destroys the socket
    if (spec.flood) return this._flood(spec, res)
    if (spec.reset) {
      req.socket.destroy()
      return
    }
    if (spec.truncate) {
      const body = bodyText(normal)
      res.writeHead(normal.status, {
        'Content-Type': JSON_TYPE,
        'Content-Length': body.length + 64,
      })
      res.write(body.subarray(0, Math.floor(body.length / 2)), () => req.socket.destroy())
      return
    }
    const headers = spec.headers
    if ('json' in spec) return send(res, { status: spec.status ?? 200, json: spec.json, headers })
    if ('body' in spec) {
      const raw =
        typeof spec.body === 'string' || Buffer.isBuffer(spec.body)
          ? spec.body
          : JSON.stringify(spec.body)
      return send(res, { status: spec.status ?? 200, raw, headers })
    }
    if ('status' in spec)
      return send(res, { status: spec.status, json: { error: 'injected fault' }, headers })
    send(res, normal)
  }

  /**
   * A response whose chunked body (no Content-Length) never ends: `[0,0,0,…`
   * written as fast as the client reads, until it goes away or the sim stops.
   */
  _flood(spec, res) {
    res.writeHead(spec.status ?? 200, { 'Content-Type': JSON_TYPE, ...spec.headers })
    res.write('[')
    const chunk = Buffer.from('0,'.repeat(8192))
    const pump = () => {
      while (!res.destroyed && !this._stopped) {
        spec.floodedBytes = (spec.floodedBytes ?? 0) + chunk.length
        if (!res.write(chunk)) return // resumed on 'drain'
      }
    }
    res.on('drain', pump)
    pump()
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const entry = { resolve }
      entry.timer = setTimeout(() => {
        this._sleeps.delete(entry)
        resolve()
      }, ms)
      this._sleeps.add(entry)
    })
  }

  // --- public API

  /**
   * Makes matching requests misbehave. `spec`: `{ status, body?, times? }`,
   * `{ delayMs, times? }` (then answers normally, or as the other fields say),
   * `{ reset: true }`, `{ hang: true }`, `{ truncate: true }`, `{ flood: true }` (a 200
   * whose chunked body never ends; `spec.floodedBytes` counts what was written),
   * `{ body: 'not json', status? }`, `{ json: value, status? }`; optional
   * `headers`, and `apply: true` to run the real handler first (e.g. a deduction
   * that is applied but whose answer is lost). `times` defaults to unlimited.
   * The first registered fault that matches applies.
   *
   * @param {string|RegExp|Function} match raw-path prefix, RegExp, or predicate on the request record
   * @param {object} spec
   * @returns {{ remove(): void, readonly applied: number }}
   */
  fault(match, spec) {
    if (!spec || typeof spec !== 'object') throw new TypeError('fault spec must be an object')
    const fault = { match: toMatcher(match), spec, remaining: spec.times ?? Infinity, applied: 0 }
    this._faults.push(fault)
    return {
      remove: () => {
        const i = this._faults.indexOf(fault)
        if (i !== -1) this._faults.splice(i, 1)
      },
      get applied() {
        return fault.applied
      },
    }
  }

  /** Removes every fault. */
  clearFaults() {
    this._faults.length = 0
  }

  /**
   * Holds matching requests until `release()` (then lets later ones through).
   *
   * @returns {{ release(): void, readonly waiting: number }}
   */
  gate(match) {
    const gate = { match: toMatcher(match), held: [] }
    this._gates.add(gate)
    return {
      release: () => {
        this._gates.delete(gate)
        for (const resolve of gate.held.splice(0)) resolve()
      },
      get waiting() {
        return gate.held.length
      },
    }
  }

  /**
   * Resolves to the record of the next matching request arriving after this
   * call; rejects after `timeoutMs`.
   */
  waitForRequest(match, { timeoutMs = 5000 } = {}) {
    const matcher = toMatcher(match)
    return new Promise((resolve, reject) => {
      const waiter = {
        match: matcher,
        resolve: (record) => {
          this._waiters.delete(waiter)
          clearTimeout(waiter.timer)
          resolve(record)
        },
        reject: (err) => {
          this._waiters.delete(waiter)
          clearTimeout(waiter.timer)
          reject(err)
        },
      }
      waiter.timer = setTimeout(
        () =>
          waiter.reject(new Error(`waitForRequest: no matching request within ${timeoutMs} ms`)),
        timeoutMs,
      )
      this._waiters.add(waiter)
    })
  }

  /** How many logged requests match (all when no match is given). */
  count(match) {
    return this.requests.filter(toMatcher(match)).length
  }

  /** Forgets the request log (the array stays the same object). */
  resetCounts() {
    this.requests.length = 0
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

  /** The whole store as plain JSON (collections as objects keyed by id), and log sizes. */
  snapshot() {
    const data = {}
    for (const [name, map] of Object.entries(this.data)) data[name] = Object.fromEntries(map)
    return {
      tenantId: this.tenantId,
      publishing: this._publisher !== null,
      signed: this._signingSecret !== null,
      data,
      counts: {
        requests: this.requests.length,
        deductions: this.deductions.length,
        events: this.events.length,
      },
    }
  }

  /** The last `n` Wrapper requests (method and path), deductions and published events. */
  recentLog(n) {
    return {
      requests: this.requests.slice(-n).map((r) => ({ method: r.method, path: r.path })),
      deductions: this.deductions.slice(-n),
      events: this.events.slice(-n),
    }
  }

  /** Serves an `/admin/` request: `{ status, json }`. */
  async _admin(method, url, headers, body) {
    if (this._adminToken !== null && headers.authorization !== `Bearer ${this._adminToken}`) {
      return fail(401, 'unauthorized')
    }
    const q = url.indexOf('?')
    const segments = (q === -1 ? url : url.slice(0, q)).split('/')
    let pathMatched = false
    for (const route of ADMIN_ROUTES) {
      const raw = matchRoute(route, segments)
      if (!raw) continue
      pathMatched = true
      if (route.method !== method) continue
      let json = {}
      try {
        const params = {}
        for (const [k, v] of Object.entries(raw)) params[k] = decodeURIComponent(v)
        if (body !== '') json = JSON.parse(body)
        if (route.method !== 'GET' && route.method !== 'DELETE' && !isPlainObject(json)) {
          return fail(400, 'the body must be a JSON object')
        }
        const result = await route.handler(this, params, json)
        return ok(route.method === 'GET' ? result : { ok: true, ...result })
      } catch (err) {
        if (err.status) return fail(err.status, err.message)
        if (err instanceof Error && err.name !== 'Error') return fail(400, err.message)
        // Redis failed: the store has changed (for a change route), the event was not sent
        return fail(503, 'the change event could not be published', { detail: err.message })
      }
    }
    return pathMatched ? fail(405, 'method not allowed') : NOT_FOUND()
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

// ---------------------------------------------------------------------------
// CLI

function redact(url) {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return '(unparsable URL)'
  }
}

const USAGE = `usage: node tools/wrapper-sim.js --tenant T [options]

Serves the Wrapper API of SPEC §4 on http://HOST:PORT and prints that URL on
the first line of stdout. With --redis it also publishes a change event for
every change made under /admin/ (see ADMIN_ROUTES in this file).

  --tenant T            tenant id; every request must carry it as X-Tenant-Id (required)
  --port N              default 0 (a free port)
  --host H              default 127.0.0.1
  --token X             require Authorization: Bearer X on the Wrapper API
  --page-size N         answer list endpoints in pages of N
  --data FILE           initial store (JSON: { credits, roles, users, configs, profiles,
                        hierarchy, auditLogs, historical, balances }); default: a sample
  --redis URL           publish change events there
  --channel-prefix P    default crm
  --signing-secret S    sign events (visible in ps; prefer WRAPPER_SIM_SIGNING_SECRET)
  --admin-token X       require Authorization: Bearer X on /admin/
  --no-admin            do not serve /admin/
  --canary-ms N         every N ms set the config 'propagation-canary' to { sentAt, seq }
  --max-log N           keep the last ~N requests/deductions/events in memory (default 10000)
`

function parseArgs(argv) {
  const names = {
    '--port': 'port',
    '--host': 'host',
    '--tenant': 'tenant',
    '--token': 'token',
    '--page-size': 'pageSize',
    '--data': 'data',
    '--redis': 'redis',
    '--channel-prefix': 'channelPrefix',
    '--signing-secret': 'signingSecret',
    '--admin-token': 'adminToken',
    '--canary-ms': 'canaryMs',
    '--max-log': 'maxLog',
  }
  const flags = { '--no-admin': 'noAdmin', '--help': 'help' }
  const args = {}
  for (let i = 0; i < argv.length; i++) {
    if (flags[argv[i]]) {
      args[flags[argv[i]]] = true
      continue
    }
    const name = names[argv[i]]
    if (!name || i + 1 >= argv.length) throw new Error(`unknown or incomplete argument: ${argv[i]}`)
    args[name] = argv[++i]
  }
  return args
}

function intArg(args, name) {
  if (args[name] === undefined) return undefined
  const n = Number(args[name])
  if (!Number.isInteger(n) || n < 0) {
    const flag = name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
    throw new Error(`--${flag} must be a non-negative integer`)
  }
  return n
}

async function main() {
  let args
  let opts
  try {
    args = parseArgs(process.argv.slice(2))
    if (args.help) {
      process.stdout.write(USAGE)
      return
    }
    if (!args.tenant) throw new Error('--tenant is required')
    opts = {
      tenantId: args.tenant,
      token: args.token,
      port: intArg(args, 'port') ?? 0,
      host: args.host,
      pageSize: intArg(args, 'pageSize'),
      data: args.data === undefined ? undefined : JSON.parse(fs.readFileSync(args.data, 'utf8')),
      redisUrl: args.redis,
      channelPrefix: args.channelPrefix,
      signingSecret: args.signingSecret ?? (process.env.WRAPPER_SIM_SIGNING_SECRET || undefined),
      admin: !args.noAdmin,
      adminToken: args.adminToken,
      maxLog: intArg(args, 'maxLog') ?? 10000,
    }
    if (args.canaryMs !== undefined && !(intArg(args, 'canaryMs') > 0)) {
      throw new Error('--canary-ms must be a positive integer')
    }
  } catch (err) {
    process.stderr.write(`wrapper-sim: ${err.message}\n${USAGE}`)
    process.exit(2)
  }
  const sim = await startWrapperSim(opts)
  process.stdout.write(`${sim.url}\n`)
  const notes = [`tenant ${sim.tenantId}`, sim.token ? 'bearer token required' : 'no token']
  if (args.redis) {
    const signed = opts.signingSecret ? 'signed' : 'unsigned'
    notes.push(`publishing ${signed} events to ${redact(args.redis)}`)
  }
  if (sim.admin) notes.push(`admin at ${sim.url}/admin/state`)
  if (args.canaryMs !== undefined) {
    sim.startCanary(Number(args.canaryMs))
    notes.push(`canary every ${args.canaryMs} ms`)
  }
  process.stderr.write(`wrapper-sim: ${notes.join(', ')}\n`)
  const shutdown = () => sim.stop().then(() => process.exit(0))
  process.once('SIGINT', shutdown)
  process.once('SIGTERM', shutdown)
}

if (require.main === module) {
  main().catch((err) => {
    process.stderr.write(`wrapper-sim: ${err.message}\n`)
    process.exit(1)
  })
}

module.exports = { startWrapperSim, defaultSeed, normaliseData, WrapperSim }
