'use strict'
// Wrapper simulator: the Wrapper API of SPEC §4 (lists with paging, reference
// objects, credit balances, idempotent deductions), and `_respond`, the normal
// answer to a request after the auth and tenant checks.

const { createHash } = require('node:crypto')
const { ok, fail, NOT_FOUND, matchRoute } = require('./http.js')

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
  return (sim, { query, headers }) => {
    const items = [...sim.data[collection].values()]
    const cursor = query.get('cursor')
    if (sim.etags && cursor === null && !sim.cursors) {
      // The list's ETag: a digest of the whole list, so any change shows,
      // however the store was changed (SPEC §4 conditional loads).
      const tag = `"${createHash('sha1').update(JSON.stringify(items)).digest('hex')}"`
      if (headers['if-none-match'] === tag) return { status: 304, raw: '', headers: { ETag: tag } }
      const first = listPage(sim, items, null)
      return { ...first, headers: { ...first.headers, ETag: tag } }
    }
    return listPage(sim, items, cursor)
  }
}

/** One answer of a list endpoint: the whole list, or the page at `cursor`. */
function listPage(sim, items, cursor) {
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

/** A reference endpoint: the object stored under the id, or 404. */
function referenceRoute(collection) {
  return (sim, { params }) => {
    const value = sim.data[collection].get(params.id)
    return value === undefined ? NOT_FOUND() : ok(value)
  }
}

/**
 * `GET /api/users/profiles?ids=a,b,c` (SPEC §10) → `{ profiles: { [id]: object } }`;
 * ids the store does not hold are left out. Each id is percent-decoded after
 * splitting on `,` (an encoded `%2C` belongs to its id). Answers 404, like a
 * Wrapper without the endpoint, while `sim.batchProfiles` is false.
 */
function profilesRoute(sim, { rawQuery }) {
  if (!sim.batchProfiles) return NOT_FOUND()
  const param = rawQuery.split('&').find((p) => p.startsWith('ids='))
  if (param === undefined) return fail(400, 'ids is required')
  const profiles = {}
  for (const raw of param.slice(4).split(',')) {
    let id
    try {
      id = decodeURIComponent(raw)
    } catch {
      return fail(400, 'bad id')
    }
    const value = sim.data.profiles.get(id)
    if (value !== undefined) profiles[id] = value
  }
  return ok({ profiles })
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
  ['GET', '/api/users/profiles', profilesRoute],
  ['GET', '/api/configs/active', listRoute('configs')],
  ['GET', '/api/users/:id/profile', referenceRoute('profiles')],
  ['GET', '/api/hierarchy/:id', referenceRoute('hierarchy')],
  ['GET', '/api/audit-logs/:id', referenceRoute('auditLogs')],
  ['GET', '/api/historical/:id', referenceRoute('historical')],
  ['GET', '/api/users/:id/credits', creditsRoute],
  ['POST', '/api/users/:id/credits/deduct', deductRoute],
].map(([method, pattern, handler]) => ({ method, segments: pattern.split('/'), handler }))

/** Methods of WrapperSim (copied onto its prototype by index.js). */
class RouteMethods {
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
      return route.handler(this, {
        params,
        query,
        rawQuery: q === -1 ? '' : record.path.slice(q + 1),
        body: record.body,
        headers: record.headers,
      })
    }
    return pathMatched ? fail(405, 'method not allowed') : NOT_FOUND()
  }
}

module.exports = { RouteMethods }
