'use strict'
// Express middleware (SPEC §5): permission and credit guards, and /metrics.
//
// The user id comes from `getUserId(req)`, by default `req.user?.id` as set by
// the app's own authentication; a bare header is never trusted. A non-empty
// string is the id; a finite number (many apps' numeric primary keys) is taken
// as its decimal string, `42` as `'42'`; anything else means "no user" (401).

const defaultGetUserId = (req) => (req.user ? req.user.id : undefined)

function checkArgs(consumer, name, value, opts) {
  if (!consumer || typeof consumer.checkPermission !== 'function') {
    throw new TypeError('consumer must be a SmartCRMConsumer')
  }
  if (typeof value !== 'string' || value === '')
    throw new TypeError(`${name} must be a non-empty string`)
  const getUserId = (opts && opts.getUserId) || defaultGetUserId
  if (typeof getUserId !== 'function') throw new TypeError('getUserId must be a function')
  return getUserId
}

/** The request's user id as a string, or null when there is none. */
function userIdOf(getUserId, req) {
  const id = getUserId(req)
  if (typeof id === 'string') return id === '' ? null : id
  if (typeof id === 'number' && Number.isFinite(id)) return String(id)
  return null
}

/** 401 without a user, 403 `{ error: 'Insufficient permissions' }` when denied. */
function requirePermission(consumer, permission, opts = {}) {
  const getUserId = checkArgs(consumer, 'permission', permission, opts)
  return function requirePermissionMiddleware(req, res, next) {
    const userId = userIdOf(getUserId, req)
    if (userId === null) return res.status(401).json({ error: 'Authentication required' })
    if (!consumer.checkPermission(userId, permission)) {
      return res.status(403).json({ error: 'Insufficient permissions' })
    }
    next()
  }
}

/**
 * 401 without a user, 404 `{ error: 'Operation not configured' }` for an
 * unknown or inactive operation, 402 `{ error: 'Insufficient credits' }`.
 * Deducts nothing: sets `req.creditCost` for the handler.
 */
function requireCredits(consumer, operationCode, opts = {}) {
  const getUserId = checkArgs(consumer, 'operationCode', operationCode, opts)
  return async function requireCreditsMiddleware(req, res, next) {
    try {
      const userId = userIdOf(getUserId, req)
      if (userId === null) return res.status(401).json({ error: 'Authentication required' })
      const cost = consumer.getCreditCost(operationCode)
      if (cost === null) return res.status(404).json({ error: 'Operation not configured' })
      const available = await consumer.getUserCredits(userId)
      if (available < cost) {
        return res.status(402).json({ error: 'Insufficient credits', required: cost, available })
      }
      req.creditCost = cost
      next()
    } catch (err) {
      next(err)
    }
  }
}

/** Serves `consumer.metricsText()` as Prometheus text. */
function metricsHandler(consumer) {
  if (!consumer || typeof consumer.metricsText !== 'function') {
    throw new TypeError('consumer must be a SmartCRMConsumer')
  }
  return function metrics(req, res) {
    res.set('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
    res.send(consumer.metricsText())
  }
}

module.exports = { requirePermission, requireCredits, metricsHandler }
