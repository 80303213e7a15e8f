'use strict'
// Express middleware (SPEC §5, §8): permission and credit guards, /metrics,
// and the tenant pool's `tenant()`, which puts the request's tenant consumer on
// `req.crm`.
//
// The user id comes from `getUserId(req)`, by default `req.user?.id` as set by
// the app's own authentication; a bare header is never trusted. A non-empty
// string is the id; a finite number (many apps' numeric primary keys) is taken
// as its decimal string, `42` as `'42'`; anything else means "no user" (401).
// The same holds for the tenant id of `tenant()` (`req.user?.tenantId`).
//
// The guards take a consumer, or a function `(req) => consumer` that picks it
// per request (with a pool: `(req) => req.crm`).

const defaultGetUserId = (req) => (req.user ? req.user.id : undefined)
const defaultGetTenantId = (req) => (req.user ? req.user.tenantId : undefined)

/** A consumer, or a function that returns the request's consumer. */
function consumerOf(consumer) {
  if (typeof consumer === 'function') {
    return (req) => {
      const c = consumer(req)
      if (!c || typeof c.checkPermission !== 'function') {
        throw new TypeError(
          'the consumer function did not return a SmartCRMConsumer for this request',
        )
      }
      return c
    }
  }
  if (!consumer || typeof consumer.checkPermission !== 'function') {
    throw new TypeError('consumer must be a SmartCRMConsumer or a function (req) => consumer')
  }
  return () => consumer
}

function checkArgs(name, value, opts) {
  if (typeof value !== 'string' || value === '')
    throw new TypeError(`${name} must be a non-empty string`)
  const getUserId = (opts && opts.getUserId) || defaultGetUserId
  if (typeof getUserId !== 'function') throw new TypeError('getUserId must be a function')
  return getUserId
}

/** The request's user (or tenant) id as a string, or null when there is none. */
function userIdOf(getUserId, req) {
  const id = getUserId(req)
  if (typeof id === 'string') return id === '' ? null : id
  if (typeof id === 'number' && Number.isFinite(id)) return String(id)
  return null
}

/** 401 without a user, 403 `{ error: 'Insufficient permissions' }` when denied. */
function requirePermission(consumer, permission, opts = {}) {
  const pick = consumerOf(consumer)
  const getUserId = checkArgs('permission', permission, opts)
  return function requirePermissionMiddleware(req, res, next) {
    let crm
    try {
      crm = pick(req)
    } catch (err) {
      return next(err)
    }
    const userId = userIdOf(getUserId, req)
    if (userId === null) return res.status(401).json({ error: 'Authentication required' })
    if (!crm.checkPermission(userId, permission)) {
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
  const pick = consumerOf(consumer)
  const getUserId = checkArgs('operationCode', operationCode, opts)
  return async function requireCreditsMiddleware(req, res, next) {
    try {
      const crm = pick(req)
      const userId = userIdOf(getUserId, req)
      if (userId === null) return res.status(401).json({ error: 'Authentication required' })
      const cost = crm.getCreditCost(operationCode)
      if (cost === null) return res.status(404).json({ error: 'Operation not configured' })
      const available = await crm.getUserCredits(userId)
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

/**
 * Serves `consumer.metricsText(options)` (a consumer's or a pool's) as
 * Prometheus text; a pool takes `{ perTenant: false }`.
 */
function metricsHandler(consumer, options) {
  if (!consumer || typeof consumer.metricsText !== 'function') {
    throw new TypeError('consumer must be a SmartCRMConsumer or a tenant pool')
  }
  return function metrics(req, res) {
    res.set('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
    res.send(consumer.metricsText(options))
  }
}

/**
 * Sets `req.crm` to the request's tenant consumer from `pool` (SPEC §8): 401
 * `{ error: 'Authentication required' }` without a tenant id, 403
 * `{ error: 'Unknown tenant' }` when the Wrapper refuses the tenant (or the id
 * cannot name one), 503 `{ error: 'Tenant unavailable' }` when it cannot be
 * loaded now. A loaded tenant is found synchronously (`pool.peek`).
 */
function tenant(pool, opts = {}) {
  if (!pool || typeof pool.tenant !== 'function' || typeof pool.peek !== 'function') {
    throw new TypeError('pool must be a tenant pool (createTenantPool)')
  }
  const getTenantId = (opts && opts.getTenantId) || defaultGetTenantId
  if (typeof getTenantId !== 'function') throw new TypeError('getTenantId must be a function')
  return function tenantMiddleware(req, res, next) {
    const id = userIdOf(getTenantId, req)
    if (id === null) return res.status(401).json({ error: 'Authentication required' })
    const held = pool.peek(id)
    if (held !== null) {
      req.crm = held
      return next()
    }
    pool.tenant(id).then(
      (crm) => {
        req.crm = crm
        next()
      },
      (err) => {
        if (err instanceof RangeError || (err && err.code === 'WRAPPER_AUTH')) {
          res.status(403).json({ error: 'Unknown tenant' })
        } else {
          res.status(503).json({ error: 'Tenant unavailable' })
        }
      },
    )
  }
}

module.exports = { requirePermission, requireCredits, metricsHandler, tenant }
