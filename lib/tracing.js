'use strict'
// Tracing through @opentelemetry/api (SPEC §10), when the app has it.
//
// `@opentelemetry/api` is an optional peer dependency. It is required once, when
// the first span would be made (initialize(), a Wrapper request, a reference
// miss); when it cannot be required nothing is tried again and every helper
// here costs one comparison. With the API but no SDK registered, its no-op
// tracer answers. Cache hits and critical reads never make a span. The
// callers (lib/consumer.js) start a span and end it with `end(span, err)` in
// the continuation the call has anyway, so tracing adds no promise.
//
// Spans (tracer `smart-crm-consumer`):
//
//   GET /api/users/{id}/credits          CLIENT    getUserCredits (and checkCredits)
//   POST /api/users/{id}/credits/deduct  CLIENT    deductCredits (its retries included)
//   smart-crm-consumer getUserProfile    INTERNAL  a reference miss (likewise getHierarchy,
//                                                  getAuditLog, getHistoricalData)
//   smart-crm-consumer initialize        INTERNAL  initialize() until it settles
//   smart-crm-consumer full load         INTERNAL  a full load of the critical data, with
//                                                  the core's start and end times and its
//                                                  source (`wrapper`, or `snapshot`: SPEC §7)
//
// A call's span is a child of the caller's active span (`context.active()` at
// the call). The initial full load is a child of its initialize() span; every
// later load (reconnect, refresh, resync-required) is a root span, whatever
// context the native callback happens to run in.
//
// Attributes never hold an id, a token or a URL: the route template
// (`url.template`), the method, the operation (`crm.operation`), the tenant
// (`crm.tenant.id`, SPEC §10), the outcome (`crm.result`: `ok` or the error's
// code) and, on failure, `error.type` (the code) with status ERROR (message:
// the code; error messages can name paths with ids, so they are not recorded).

let api // undefined: not tried yet; null: not available
let tracer = null
let kinds = null

const VERSION = require('../package.json').version

/** The API, or null (required at most once). Tests may reset it with `_reset()`. */
function load() {
  if (api === undefined) {
    try {
      api = require('@opentelemetry/api')
      tracer = api.trace.getTracer('smart-crm-consumer', VERSION)
      kinds = { client: api.SpanKind.CLIENT, internal: api.SpanKind.INTERNAL }
    } catch {
      api = null
    }
  }
  return api
}

/** Reference kinds (the core's names) → the operation and the Wrapper route. */
const REFERENCE = {
  user: { operation: 'getUserProfile', template: '/api/users/{id}/profile' },
  hierarchy: { operation: 'getHierarchy', template: '/api/hierarchy/{id}' },
  audit: { operation: 'getAuditLog', template: '/api/audit-logs/{id}' },
  historical: { operation: 'getHistoricalData', template: '/api/historical/{key}' },
}

const CREDITS = {
  getUserCredits: { method: 'GET', template: '/api/users/{id}/credits' },
  deductCredits: { method: 'POST', template: '/api/users/{id}/credits/deduct' },
}

function codeOf(err) {
  return (err && typeof err.code === 'string' && err.code) || (err && err.name) || 'Error'
}

function finish(span, err) {
  if (err === undefined) {
    span.setAttribute('crm.result', 'ok')
  } else {
    const code = codeOf(err)
    span.setAttribute('crm.result', code)
    span.setAttribute('error.type', code)
    span.setStatus({ code: api.SpanStatusCode.ERROR, message: code })
  }
  span.end()
}

/**
 * Starts the CLIENT span of a credit method's Wrapper request (`operation`:
 * `getUserCredits` or `deductCredits`); null without the API. The caller ends
 * it with `end(span, err)` where it already awaits the request, so tracing adds
 * no promise to the call.
 */
function startCredits(operation, tenantId) {
  if (api === null || load() === null) return null
  const { method, template } = CREDITS[operation]
  return tracer.startSpan(
    `${method} ${template}`,
    {
      kind: kinds.client,
      attributes: {
        'http.request.method': method,
        'url.template': template,
        'crm.operation': operation,
        'crm.tenant.id': tenantId,
      },
    },
    api.context.active(),
  )
}

/** Starts the span of a reference miss (`kind`: the core's reference kind); null without the API. */
function startReferenceMiss(kind, tenantId) {
  if (api === null || load() === null) return null
  const r = REFERENCE[kind]
  return tracer.startSpan(
    `smart-crm-consumer ${r.operation}`,
    {
      kind: kinds.internal,
      attributes: {
        'crm.operation': r.operation,
        'crm.cache.key_type': kind,
        'crm.cache.result': 'miss',
        'http.request.method': 'GET',
        'url.template': r.template,
        'crm.tenant.id': tenantId,
      },
    },
    api.context.active(),
  )
}

/** Ends a span started here: ok, or failed with `err` (its code). Null: nothing. */
function end(span, err) {
  if (span !== null) finish(span, err)
}

/**
 * Starts the span of an initialize() call (a child of the active span); null
 * without the API. End it with `end(span, err)`.
 */
function startInitialize(tenantId) {
  if (api === null || load() === null) return null
  return tracer.startSpan(
    'smart-crm-consumer initialize',
    { kind: kinds.internal, attributes: { 'crm.tenant.id': tenantId } },
    api.context.active(),
  )
}

/**
 * Records a completed full load from the core's `resync` notice (`startedAt`,
 * `durationMs`: epoch ms and ms). `parent`: the initialize() span for the
 * initial load, else null (a root span).
 */
function fullLoad(tenantId, notice, parent) {
  if (api === null || typeof notice.startedAt !== 'number' || load() === null) return
  const ctx =
    parent !== null && parent !== undefined
      ? api.trace.setSpan(api.ROOT_CONTEXT, parent)
      : api.ROOT_CONTEXT
  const span = tracer.startSpan(
    'smart-crm-consumer full load',
    {
      kind: kinds.internal,
      startTime: notice.startedAt,
      attributes: {
        'crm.load.reason': notice.reason,
        'crm.load.source': notice.source ?? 'wrapper',
        'crm.tenant.id': tenantId,
      },
    },
    ctx,
  )
  span.setAttribute('crm.result', 'ok')
  span.end(notice.startedAt + (notice.durationMs ?? 0))
}

/** For tests: forget the loaded API (the next span requires it again). */
function _reset() {
  api = undefined
  tracer = null
  kinds = null
}

/** For the bench: behave as if the API were missing, until `_reset()`. */
function _disable() {
  api = null
  tracer = null
  kinds = null
}

/** For tests: whether the API has been loaded (true), found missing (false), or not tried (null). */
function _state() {
  return api === undefined ? null : api !== null
}

module.exports = {
  startCredits,
  startReferenceMiss,
  startInitialize,
  end,
  fullLoad,
  _reset,
  _disable,
  _state,
}
