'use strict'
// Wrapper simulator: an in-process HTTP server that speaks the Wrapper API of
// SPEC §4, for the tests, the demo and the example app.
//
// It serves a mutable in-memory store (`sim.data`), logs every request, and
// can misbehave on demand (errors, delays, resets, hangs, truncated or invalid
// bodies, gated requests) so the consumer's failure handling can be tested
// deterministically. Node built-ins only.
//
//   node tools/wrapper-sim.js --port 8080 --tenant T [--token X] [--page-size N] [--redis URL]

const http = require('node:http')

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

/** A list endpoint: a plain array, or `{ items, nextCursor }` pages when `sim.pageSize` is set. */
function listRoute(collection) {
  return (sim, { query }) => {
    const items = [...sim.data[collection].values()]
    if (!sim.pageSize) return ok(items)
    const cursor = query.get('cursor')
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
    sim.deductions.push({ userId, body, replay: false, status: 400 })
    return fail(400, 'body must be JSON')
  }
  const record = { userId, body: parsed, replay: false }
  sim.deductions.push(record)
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
// The simulator

class WrapperSim {
  constructor({ tenantId, token, port = 0, host = '127.0.0.1', pageSize, data } = {}) {
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
    this.tenantId = tenantId
    /** When set, every request needs `Authorization: Bearer <token>`; may be changed at any time. */
    this.token = token ?? null
    /** When set, list endpoints answer pages; may be changed at any time. */
    this.pageSize = pageSize ?? null
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

  // --- request pipeline: log → gates → faults → auth/tenant → route

  async _handle(req, res) {
    let body
    try {
      body = await readBody(req)
    } catch (err) {
      if (err.status) send(res, { status: err.status, json: { error: err.message } })
      return
    }
    const record = { method: req.method, path: req.url, headers: req.headers, body }
    this.requests.push(record)
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
   * `{ reset: true }`, `{ hang: true }`, `{ truncate: true }`,
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

  /** Closes the server and every open socket (hung requests end). Idempotent. */
  stop() {
    if (!this._stopping) {
      this._stopped = true
      this._stopping = new Promise((resolve) => this.server.close(() => resolve()))
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
 * @param {object} [opts.data] initial store (Maps, arrays or objects per collection);
 *   default `defaultSeed()`
 * @returns {Promise<WrapperSim>} `{ url, port, data, requests, deductions, token, pageSize,
 *   fault(), clearFaults(), gate(), waitForRequest(), count(), resetCounts(), stop() }`
 */
async function startWrapperSim(opts) {
  const sim = new WrapperSim(opts)
  await sim._listen()
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

function parseArgs(argv) {
  const names = { '--port': 'port', '--tenant': 'tenant', '--token': 'token', '--redis': 'redis' }
  Object.assign(names, { '--page-size': 'pageSize', '--host': 'host' })
  const args = {}
  for (let i = 0; i < argv.length; i++) {
    const name = names[argv[i]]
    if (!name || i + 1 >= argv.length) throw new Error(`unknown or incomplete argument: ${argv[i]}`)
    args[name] = argv[++i]
  }
  return args
}

async function main() {
  let args
  try {
    args = parseArgs(process.argv.slice(2))
    if (!args.tenant) throw new Error('--tenant is required')
  } catch (err) {
    process.stderr.write(
      `wrapper-sim: ${err.message}\n` +
        'usage: node tools/wrapper-sim.js --tenant T [--port 8080] [--host 127.0.0.1] ' +
        '[--token X] [--page-size N] [--redis URL]\n',
    )
    process.exit(2)
  }
  const sim = await startWrapperSim({
    tenantId: args.tenant,
    token: args.token,
    port: args.port === undefined ? 0 : Number(args.port),
    host: args.host,
    pageSize: args.pageSize === undefined ? undefined : Number(args.pageSize),
  })
  process.stdout.write(`${sim.url}\n`)
  const notes = [`tenant ${sim.tenantId}`, sim.token ? 'bearer token required' : 'no token']
  if (args.redis) notes.push(`redis ${redact(args.redis)} (publishing not implemented yet)`)
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
