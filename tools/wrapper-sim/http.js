'use strict'
// Wrapper simulator: the HTTP plumbing shared by the Wrapper API (routes.js),
// the faults (faults.js) and the admin API (admin.js): JSON answers, request
// bodies, path matching and the errors that carry an HTTP status.

const JSON_TYPE = 'application/json; charset=utf-8'
const MAX_BODY_BYTES = 1024 * 1024

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
// Requests

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

const httpError = (status, message) => Object.assign(new Error(message), { status })

const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)

module.exports = {
  JSON_TYPE,
  ok,
  fail,
  NOT_FOUND,
  send,
  bodyText,
  matchRoute,
  readBody,
  httpError,
  isPlainObject,
}
