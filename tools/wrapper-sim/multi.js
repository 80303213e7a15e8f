'use strict'
// Wrapper simulator for many tenants: one HTTP server (one URL, as a tenant
// pool uses it) in front of one `WrapperSim` store per tenant, chosen by the
// request's `X-Tenant-Id`. A tenant it does not know is refused with 403 (the
// consumer's WRAPPER_AUTH), as a real Wrapper refuses a tenant it does not
// serve. It also measures what a pool must bound: how many tenants' snapshot
// loads are in flight at once (`maxLoadsInFlight`).

const http = require('node:http')
const { send } = require('./http.js')
const { WrapperSim } = require('./index.js')

/** The list endpoints of a snapshot load (SPEC §4). */
const LIST_PATHS = [
  '/api/credits/configs',
  '/api/roles',
  '/api/users/access',
  '/api/configs/active',
]

function isList(url) {
  const q = url.indexOf('?')
  const path = q === -1 ? url : url.slice(0, q)
  return LIST_PATHS.includes(path)
}

class MultiTenantSim {
  /**
   * @param {object} opts
   * @param {Record<string, object>} [opts.tenants] tenant id → `data` (see startWrapperSim)
   * @param {string} [opts.token] every request needs `Authorization: Bearer <token>`
   * @param {number} [opts.listDelayMs=0] every list request is answered this much later
   *   (so concurrent loads overlap and can be counted)
   * @param {string} [opts.redisUrl] when set, each tenant's change methods publish its
   *   change events there (as startWrapperSim's do)
   * @param {string} [opts.channelPrefix='crm']
   * @param {string} [opts.signingSecret] signs the published events
   * @param {boolean} [opts.admin=false] serve each tenant's `/admin/` routes (ADMIN_ROUTES),
   *   chosen by `X-Tenant-Id` like its Wrapper API
   * @param {number} [opts.maxLog] each tenant keeps about this many recent `requests`,
   *   `deductions`, `events` (this server's own `requests` log is not bounded)
   */
  constructor({
    tenants = {},
    token,
    listDelayMs = 0,
    host = '127.0.0.1',
    redisUrl,
    channelPrefix,
    signingSecret,
    admin = false,
    maxLog,
  } = {}) {
    this._token = token
    /** Passed to each tenant's WrapperSim. */
    this._tenantOptions = { redisUrl, channelPrefix, signingSecret, admin, maxLog }
    /** Delay of every list answer, in ms; may be changed at any time. */
    this.listDelayMs = listDelayMs
    this.host = host
    /** tenant id → its WrapperSim (not listening: this server routes to it) */
    this.sims = new Map()
    /** tenant id → list requests in flight */
    this._inFlight = new Map()
    /** The most tenants with a list request in flight at once. */
    this.maxLoadsInFlight = 0
    /** Requests refused because their tenant is unknown. */
    this.refused = 0
    /** Every request's tenant header, in arrival order (for isolation checks). */
    this.requests = []
    this._publishers = []
    for (const [id, data] of Object.entries(tenants)) this.addTenant(id, data)
    this._sockets = new Set()
    this.server = http.createServer((req, res) => {
      this._handle(req, res).catch((err) => {
        send(res, { status: 500, json: { error: 'sim error', message: err.message } })
      })
    })
    this.server.on('connection', (s) => {
      this._sockets.add(s)
      s.on('close', () => this._sockets.delete(s))
    })
  }

  /** Serves `tenantId` from now on, with `data` (default: the sample store). Returns its sim. */
  addTenant(tenantId, data) {
    const sim = new WrapperSim({ tenantId, data, token: this._token, ...this._tenantOptions })
    // startWrapperSim makes the publisher (with a redisUrl) once its sim listens;
    // these never listen. It is made synchronously (the promise only carries a
    // failure, which the same options at startMultiTenantSim would have shown).
    this._publishers.push(sim._connectPublisher())
    this.sims.set(tenantId, sim)
    return sim
  }

  /** Stops serving `tenantId` (its requests are refused with 403). */
  removeTenant(tenantId) {
    this.sims.delete(tenantId)
  }

  /** The sim of `tenantId`. */
  tenant(tenantId) {
    return this.sims.get(tenantId)
  }

  /** Tenants with a snapshot list request in flight now. */
  get loadsInFlight() {
    return this._inFlight.size
  }

  /** Resets `maxLoadsInFlight`, `refused` and `requests`. */
  resetStats() {
    this.maxLoadsInFlight = this._inFlight.size
    this.refused = 0
    this.requests = []
  }

  async _handle(req, res) {
    const tenantId = req.headers['x-tenant-id']
    this.requests.push({ tenantId, method: req.method, path: req.url })
    const sim = typeof tenantId === 'string' ? this.sims.get(tenantId) : undefined
    if (sim === undefined) {
      this.refused++
      req.resume()
      send(res, { status: 403, json: { error: 'unknown tenant' } })
      return
    }
    if (!isList(req.url)) return sim._handle(req, res)
    this._inFlight.set(tenantId, (this._inFlight.get(tenantId) ?? 0) + 1)
    this.maxLoadsInFlight = Math.max(this.maxLoadsInFlight, this._inFlight.size)
    const done = () => {
      const n = this._inFlight.get(tenantId) - 1
      if (n === 0) this._inFlight.delete(tenantId)
      else this._inFlight.set(tenantId, n)
    }
    res.once('close', done)
    if (this.listDelayMs > 0) await new Promise((r) => setTimeout(r, this.listDelayMs))
    await sim._handle(req, res)
  }

  async _listen() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(0, this.host, () => {
        this.server.off('error', reject)
        resolve()
      })
    })
    this.port = this.server.address().port
    this.url = `http://${this.host}:${this.port}`
  }

  /** Closes the server and every open socket. */
  async stop() {
    const closed = new Promise((resolve) => this.server.close(() => resolve()))
    for (const s of this._sockets) s.destroy()
    await Promise.all([closed, ...[...this.sims.values()].map((s) => s.stop())])
  }
}

/** Starts a multi-tenant Wrapper simulator; resolves when it listens (`sim.url`). */
async function startMultiTenantSim(opts) {
  const sim = new MultiTenantSim(opts)
  try {
    await Promise.all(sim._publishers)
    await sim._listen()
  } catch (err) {
    await sim.stop()
    throw err
  }
  return sim
}

module.exports = { startMultiTenantSim, MultiTenantSim }
