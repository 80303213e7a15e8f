'use strict'
// Wrapper simulator: the admin HTTP API under `/admin/` (with `admin: true`):
// change the data over HTTP (each change publishes its event), inject faults,
// publish raw events, and read the state and the recent log.

const { ok, fail, NOT_FOUND, matchRoute, httpError, isPlainObject } = require('./http.js')

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

/** Methods of WrapperSim (copied onto its prototype by index.js). */
class AdminMethods {
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
}

module.exports = { AdminMethods }
