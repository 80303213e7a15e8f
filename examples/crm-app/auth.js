'use strict'
// ============================================================================
//  AUTHENTICATION STAND-IN: replace this file with your own.
//
//  This is where a real app plugs in its authentication (session cookie, JWT,
//  OIDC, an API gateway's verified header, ...). The rest of the app needs one
//  thing from it: for an authenticated request, `req.user = { id, tenantId }`;
//  for any other request, no `req.user` (the routes then answer 401).
//
//  The stand-in knows a fixed table of demo tokens. A request is authenticated
//  by `Authorization: Bearer <token>` (API clients, tests, load runs) or by the
//  `crm_session` cookie (browsers: EventSource cannot send headers), which
//  GET /auth/demo-login?token=...&next=/cost sets.
// ============================================================================

const { timingSafeEqual, createHash } = require('node:crypto')

/**
 * The demo users: token → user. Every user belongs to one tenant (the
 * `tenantId` the pool loads for their requests): acme and globex, whose data
 * (seed.json) differ, and initech, which the Wrapper does not serve (403).
 * Two tenants share user ids on purpose: u-alice at acme is not u-alice at globex.
 */
const DEMO_SESSIONS = {
  'demo-alice': { id: 'u-alice', tenantId: 'acme', name: 'Alice (sales)' },
  'demo-bob': { id: 'u-bob', tenantId: 'acme', name: 'Bob (suspended admin)' },
  'demo-carol': { id: 'u-carol', tenantId: 'acme', name: 'Carol (sales, 1 credit)' },
  'demo-dana': { id: 'u-dana', tenantId: 'acme', name: 'Dana (manager)' },
  'demo-erin': { id: 'u-erin', tenantId: 'acme', name: 'Erin (viewer)' },
  'demo-globex-alice': { id: 'u-alice', tenantId: 'globex', name: 'Alice at Globex' },
  'demo-globex-gus': { id: 'u-gus', tenantId: 'globex', name: 'Gus at Globex (manager)' },
  'demo-other': { id: 'u-zed', tenantId: 'initech', name: 'A tenant the Wrapper refuses' },
}

const COOKIE = 'crm_session'

const digest = (s) => createHash('sha256').update(s).digest()

function bearerToken(req) {
  const h = req.headers.authorization
  if (typeof h !== 'string') return null
  const m = /^Bearer\s+(\S+)$/i.exec(h)
  return m ? m[1] : null
}

function cookieToken(req) {
  const h = req.headers.cookie
  if (typeof h !== 'string') return null
  for (const part of h.split(';')) {
    const i = part.indexOf('=')
    if (i !== -1 && part.slice(0, i).trim() === COOKIE) {
      try {
        return decodeURIComponent(part.slice(i + 1).trim())
      } catch {
        return null
      }
    }
  }
  return null
}

/**
 * The stand-in middleware: sets `req.user` for a known token, never rejects
 * (the routes decide what needs a user).
 */
function demoAuth({ sessions = DEMO_SESSIONS } = {}) {
  // Compared by digest, in constant time, as a real token check should be.
  const table = Object.entries(sessions).map(([token, user]) => ({ d: digest(token), user }))
  const lookup = (token) => {
    const d = digest(token)
    let found = null
    for (const entry of table) if (timingSafeEqual(entry.d, d)) found = entry.user
    return found
  }
  function authenticate(req, res, next) {
    const token = bearerToken(req) ?? cookieToken(req)
    const user = token ? lookup(token) : null
    if (user) req.user = { id: user.id, tenantId: user.tenantId, name: user.name }
    next()
  }
  authenticate.lookup = lookup
  return authenticate
}

/**
 * GET /auth/demo-login?token=…&next=/path: sets the session cookie for a demo
 * token and redirects to `next` (a local path only). 401 for an unknown token.
 */
function demoLoginRoute(authenticate) {
  return function demoLogin(req, res) {
    const token = typeof req.query.token === 'string' ? req.query.token : ''
    if (!token || !authenticate.lookup(token)) {
      return res.status(401).json({ error: 'Unknown demo token' })
    }
    const next = typeof req.query.next === 'string' ? req.query.next : '/'
    const safeNext = /^\/(?![/\\])/.test(next) ? next : '/'
    res.cookie(COOKIE, token, { httpOnly: true, sameSite: 'lax', path: '/' })
    res.redirect(302, safeNext)
  }
}

module.exports = { demoAuth, demoLoginRoute, DEMO_SESSIONS }
