'use strict'
// The example CRM service: Express routes on smart-crm-consumer.
//
// Multi-tenant on a tenant pool (SPEC §8): the package's tenant(pool)
// middleware puts the consumer of the user's tenant on `req.crm`, loading the
// tenant on its first request (every tenant shares the pool's one Redis link
// and HTTP connection pool). Costs, permissions and user status come from that
// consumer's memory (synchronous, no I/O); profiles from its TTL cache;
// balances and deductions from the Wrapper through it. The package's guards,
// given `(req) => req.crm`, protect the routes that spend credits.
//
//   const pool = createTenantPool({ wrapperUrl, redisUrl, signingSecret })
//   const app = createApp({ pool })
//   app.listen(3000)
//
// Status codes (those of the design's handlers, SPEC §5 and §8 for the
// middleware): 400 bad input, 401 no user, 402 not enough credits, 403 not
// allowed (or a tenant the Wrapper refuses, or a user who is not active), 404
// unknown operation / user, 502 the Wrapper refused us, 503 the Wrapper is
// down (or the tenant cannot be loaded now).

const crypto = require('node:crypto')
const path = require('node:path')
const express = require('express')
const {
  tenant,
  requirePermission,
  requireCredits,
  metricsHandler,
} = require('smart-crm-consumer/express')

const { demoAuth, demoLoginRoute } = require('./auth.js')
const { PoolStats } = require('./lib/live-stats.js')
const { eventsRoute } = require('./lib/sse.js')

const LEAD_OPERATION = 'crm.leads.create'
const LEAD_PERMISSION = 'crm.leads.create'
/** Needed to read another user's profile or permissions. */
const READ_USERS = 'crm.users.read'
/** Needed to read another user's credits. */
const READ_CREDITS = 'crm.credits.read'
const PUBLIC_DIR = path.join(__dirname, 'public')
const MAX_LEADS_KEPT = 10_000

/** SPEC error codes → HTTP status and a message for the client. */
const ERRORS = {
  NOT_FOUND: [404, 'Not found'],
  INSUFFICIENT_CREDITS: [402, 'Insufficient credits'],
  WRAPPER_UNAVAILABLE: [503, 'CRM backend unavailable'],
  WRAPPER_AUTH: [502, 'CRM backend refused the request'],
  INVALID_RESPONSE: [502, 'CRM backend answered badly'],
  SHUTDOWN: [503, 'Shutting down'],
}

/** Codes of the package's argument errors (TypeError/RangeError): the client sent a bad id. */
const ARG_ERRORS = new Set(['ERR_INVALID_ARG', 'ERR_INVALID_ARG_TYPE', 'ERR_OUT_OF_RANGE'])

/** JSON with object keys sorted, so equal bodies give equal idempotency keys. */
function stableJson(value) {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`
  if (value !== null && typeof value === 'object') {
    const keys = Object.keys(value).sort()
    return `{${keys.map((k) => `${JSON.stringify(k)}:${stableJson(value[k])}`).join(',')}}`
  }
  return JSON.stringify(value) ?? 'null'
}

/**
 * The idempotency key of a lead request: the client's `Idempotency-Key`
 * header when it sends one, else the request body; scoped to tenant, user and
 * endpoint. A retried request (a double click, a client retry after a
 * timeout, the same request at another replica) gets the same key, so the
 * Wrapper deducts once and the same lead comes back.
 */
function leadIdempotencyKey(req) {
  const header = req.get('Idempotency-Key')
  const basis = header ? `h:${header}` : `b:${stableJson(req.body ?? null)}`
  const hash = crypto.createHash('sha256')
  hash.update(`${req.user.tenantId}\0${req.user.id}\0${req.baseUrl}${req.path}\0${basis}`)
  return `lead:${hash.digest('hex').slice(0, 40)}`
}

/** The lead "database" of this example: a bounded Map per tenant, with single-flight by key. */
class LeadStore {
  constructor() {
    this.leads = new Map() // `${tenant}\0${key}` → result
    this.inflight = new Map()
  }

  async create(req, fields) {
    const key = leadIdempotencyKey(req)
    const slot = `${req.user.tenantId}\0${key}`
    const done = this.leads.get(slot)
    if (done) return { ...done, replayed: true }
    const running = this.inflight.get(slot)
    if (running) return { ...(await running), replayed: true }
    const p = this._create(req, fields, key)
    this.inflight.set(slot, p)
    try {
      const result = await p
      this.leads.set(slot, result)
      if (this.leads.size > MAX_LEADS_KEPT) this.leads.delete(this.leads.keys().next().value)
      return { ...result, replayed: false }
    } finally {
      this.inflight.delete(slot)
    }
  }

  async _create(req, fields, key) {
    const { crm: consumer, user } = req
    // Reference data: from the consumer's TTL cache, fetched on a miss.
    const profile = await consumer.getUserProfile(user.id)
    const lead = {
      id: `lead-${key.slice(5, 21)}`,
      ...fields,
      owner: { id: user.id, name: profile.name ?? null, department: profile.department ?? null },
      createdAt: new Date().toISOString(),
    }
    // The work is done: deduct what requireCredits found the operation costs,
    // with a key derived from the request (a retry is never charged twice).
    const { remaining } = await consumer.deductCredits(user.id, req.creditCost, {
      operationCode: LEAD_OPERATION,
      idempotencyKey: key,
    })
    return { lead, creditsDeducted: req.creditCost, remainingCredits: remaining }
  }
}

const LEAD_FIELDS = ['name', 'company', 'email', 'phone', 'source', 'notes']

/** 400 unless the body is a lead (`{ name, ... }`, or the design's `{ leadData: {...} }`). */
function validateLead(req, res, next) {
  const body = req.body && typeof req.body === 'object' ? (req.body.leadData ?? req.body) : null
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    return res.status(400).json({ error: 'The body must be a JSON lead object' })
  }
  if (typeof body.name !== 'string' || body.name.trim() === '' || body.name.length > 200) {
    return res.status(400).json({ error: 'name is required (1-200 characters)' })
  }
  const fields = {}
  for (const f of LEAD_FIELDS) {
    if (body[f] === undefined) continue
    if (typeof body[f] !== 'string' || body[f].length > 2000) {
      return res.status(400).json({ error: `${f} must be a string` })
    }
    fields[f] = body[f]
  }
  req.leadFields = fields
  next()
}

/** 400 unless the query has `name` as one non-empty string. */
const requireQuery = (name) => (req, res, next) => {
  const v = req.query[name]
  if (typeof v !== 'string' || v === '') {
    return res.status(400).json({ error: `query parameter ${name} is required` })
  }
  next()
}

/**
 * @param {object} options
 * @param {import('smart-crm-consumer').TenantPool} options.pool the tenant pool (createTenantPool)
 * @param {import('express').RequestHandler} [options.authenticate] sets `req.user = { id, tenantId }`;
 *   default: the demo stand-in of auth.js
 * @param {string} [options.canaryConfigId] the config the Wrapper's propagation canary sets
 * @param {{ error(...a: unknown[]): void }} [options.logger]
 * @returns {import('express').Express} with `app.locals.crm = { stats, shutdown() }`
 */
function createApp({
  pool,
  authenticate = demoAuth(),
  canaryConfigId = 'propagation-canary',
  logger = console,
} = {}) {
  if (!pool || typeof pool.tenant !== 'function') {
    throw new TypeError('createApp: give `pool` (createTenantPool)')
  }
  const stats = new PoolStats(pool, { canaryConfigId })
  const leads = new LeadStore()
  /** The request's tenant consumer, for the package's guards. */
  const crm = (req) => req.crm

  /**
   * After tenant(pool): 403 for a user whose status (critical data, in
   * memory) is not 'active'.
   */
  function activeUser(req, res, next) {
    if (req.crm.getUserStatus(req.user.id) !== 'active') {
      return res.status(403).json({ error: 'Account not active' })
    }
    next()
  }

  /**
   * The target user of a read (`from(req)`, default: the caller). Reading
   * someone else's data needs `permission`, else 403.
   */
  const selfOr = (permission, from) => (req, res, next) => {
    const target = from(req) ?? req.user.id
    if (typeof target !== 'string' || target === '') {
      return res.status(400).json({ error: 'userId must be a string' })
    }
    if (target !== req.user.id && !req.crm.checkPermission(req.user.id, permission)) {
      return res.status(403).json({ error: 'Insufficient permissions' })
    }
    req.targetUserId = target
    next()
  }

  const app = express()
  app.disable('x-powered-by')
  app.set('etag', false)
  app.use(express.json({ limit: '64kb' }))
  app.use(authenticate)

  // --- public: health, metrics, pages --------------------------------------

  /**
   * The pool's health: 200 'ok', or 'degraded' while some tenant serves from
   * memory; 503 'unavailable' while the pool's Redis link is down.
   */
  app.get('/health', (req, res) => {
    const h = pool.health()
    const status = !h.connected ? 'unavailable' : h.degradedTenants.length ? 'degraded' : 'ok'
    res.status(h.connected ? 200 : 503).json({ status, ...h })
  })

  // Every loaded tenant's series (a `tenant` label) and the pool's own, in one exposition.
  app.get('/metrics', metricsHandler(pool))

  // The dashboard's pool view: metrics of every loaded tenant (no CRM data),
  // public like /metrics and /health. Looking loads no tenant.
  app.get('/ops/pool', (req, res) => {
    res.json({ ...stats.overview(), viewer: req.user ? req.user.tenantId : null })
  })
  app.get('/ops/pool/tenants/:tenantId', (req, res) => {
    const snapshot = stats.snapshot(req.params.tenantId)
    if (!snapshot) {
      return res.status(404).json({ error: 'Tenant not loaded', tenantId: req.params.tenantId })
    }
    res.json(snapshot)
  })

  const page = (file) => (req, res) => res.sendFile(path.join(PUBLIC_DIR, file))
  app.get('/', page('index.html'))
  app.get('/dashboard', page('dashboard.html'))
  app.get('/cost', page('cost.html'))
  app.use('/static', express.static(PUBLIC_DIR, { index: false }))
  app.get('/auth/demo-login', demoLoginRoute(authenticate))

  // --- the API: every route needs an active user of a tenant the Wrapper serves

  const api = express.Router()
  api.use(tenant(pool), activeUser)

  // Critical data only: no I/O.
  api.get('/credits/check/:operation', (req, res) => {
    const { operation } = req.params
    const creditCost = req.crm.getCreditCost(operation)
    if (creditCost === null) {
      return res.status(404).json({ error: 'Operation not configured', operation })
    }
    res.json({ operation, creditCost })
  })

  api.get(
    '/credits/validate',
    requireQuery('operation'),
    selfOr(READ_CREDITS, (req) => req.query.userId),
    async (req, res) => {
      const { operation } = req.query
      const userId = req.targetUserId
      const creditCost = req.crm.getCreditCost(operation)
      if (creditCost === null) {
        return res.status(404).json({ error: 'Operation not configured', operation })
      }
      const availableCredits = await req.crm.getUserCredits(userId)
      res.json({
        operation,
        userId,
        creditCost,
        availableCredits,
        canAfford: availableCredits >= creditCost,
      })
    },
  )

  const profileOf = async (req, res) => {
    try {
      return await req.crm.getUserProfile(req.targetUserId)
    } catch (err) {
      if (err.code !== 'NOT_FOUND') throw err
      res.status(404).json({ error: 'User not found', userId: req.targetUserId })
      return null
    }
  }

  api.get(
    '/users/:userId',
    selfOr(READ_USERS, (req) => req.params.userId),
    async (req, res) => {
      const profile = await profileOf(req, res)
      if (profile) res.json(profile)
    },
  )

  api.get(
    '/users/:userId/profile',
    selfOr(READ_USERS, (req) => req.params.userId),
    async (req, res) => {
      const profile = await profileOf(req, res)
      if (!profile) return
      const c = req.crm
      const id = req.targetUserId
      res.json({
        ...profile,
        access: { status: c.getUserStatus(id), roles: c.getUserRoles(id) },
        cacheExpiry: c.getCacheExpiry(`user:${id}`),
      })
    },
  )

  api.get(
    '/permissions/check',
    requireQuery('permission'),
    selfOr(READ_USERS, (req) => req.query.userId),
    (req, res) => {
      const userId = req.targetUserId
      const { permission } = req.query
      res.json({ userId, permission, authorized: req.crm.checkPermission(userId, permission) })
    },
  )

  // Spending credits: the package's guards (403, then 404/402), then the work.
  const leadGuards = [
    requirePermission(crm, LEAD_PERMISSION),
    validateLead,
    requireCredits(crm, LEAD_OPERATION),
  ]

  api.post('/leads', ...leadGuards, async (req, res) => {
    const r = await leads.create(req, req.leadFields)
    if (r.replayed) res.set('Idempotent-Replayed', 'true')
    res.status(201).json({
      lead: r.lead,
      creditsDeducted: r.creditsDeducted,
      remainingCredits: r.remainingCredits,
    })
  })

  // Design 002's credit-checking flow, answered the way the design answers it.
  api.post('/operations/lead-create', ...leadGuards, async (req, res) => {
    const r = await leads.create(req, req.leadFields)
    if (r.replayed) res.set('Idempotent-Replayed', 'true')
    res.json({
      success: true,
      operation: 'lead-create',
      leadId: r.lead.id,
      creditsDeducted: r.creditsDeducted,
      remainingCredits: r.remainingCredits,
    })
  })

  // Design 003's smoke endpoint, for the signed-in user.
  api.get('/test-credit-check', async (req, res) => {
    const c = req.crm
    const userId = req.user.id
    const cost = c.getCreditCost(LEAD_OPERATION)
    if (cost === null) {
      return res.status(404).json({ error: 'Operation not configured', operation: LEAD_OPERATION })
    }
    const [availableCredits, profile] = await Promise.all([
      c.getUserCredits(userId),
      c.getUserProfile(userId),
    ])
    res.json({
      operation: LEAD_OPERATION,
      userId,
      cost,
      availableCredits,
      canAfford: availableCredits >= cost,
      profile,
      hasPermission: c.checkPermission(userId, LEAD_PERMISSION),
      metrics: c.getMetrics(),
    })
  })

  // The browser layer: this tenant's changes as Server-Sent Events.
  const events = eventsRoute({
    ignoreKeys: [`config:${canaryConfigId}`],
    onOpen: (req) => stats.sse(req.crm.tenantId, +1),
    onClose: (req) => stats.sse(req.crm.tenantId, -1),
  })
  api.get('/events', events)
  const onReleased = ({ tenantId }) => events.closeTenant(tenantId)
  pool.on('tenantReleased', onReleased)

  // The dashboard's figures, for the user's tenant.
  api.get('/dashboard', (req, res) => res.json(stats.snapshot(req.crm.tenantId)))

  api.use((req, res) => res.status(404).json({ error: 'No such endpoint' }))
  app.use('/api', api)

  // --- errors --------------------------------------------------------------

  app.use((req, res) => res.status(404).json({ error: 'Not found' }))
  // eslint-disable-next-line no-unused-vars
  app.use((err, req, res, next) => {
    if (res.headersSent) return res.destroy()
    const known = ERRORS[err.code]
    if (known) return res.status(known[0]).json({ error: known[1], code: err.code })
    if (err.expose && err.status >= 400 && err.status < 500) {
      return res.status(err.status).json({ error: err.message })
    }
    // The package's argument checks, e.g. an id that cannot be one path segment ('.', '..').
    if (ARG_ERRORS.has(err.code)) return res.status(400).json({ error: err.message })
    logger.error(`[crm-app] ${req.method} ${req.path}: ${(err && err.stack) || err}`)
    res.status(500).json({ error: 'Internal error' })
  })

  app.locals.crm = {
    stats,
    /** Ends open event streams and detaches from the pool (it stays the caller's). */
    shutdown() {
      pool.off('tenantReleased', onReleased)
      events.closeAll()
      stats.close()
    },
  }
  return app
}

module.exports = { createApp, leadIdempotencyKey, LEAD_OPERATION }
