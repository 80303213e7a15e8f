'use strict'
// Wrapper simulator: the HTTP plumbing shared by the Wrapper API (routes.js),
// the faults (faults.js) and the admin API (admin.js): JSON answers, request
// bodies, path matching and the errors that carry an HTTP status.

const zlib = require('node:zlib')

const JSON_TYPE = 'application/json; charset=utf-8'
/** Bodies below this are sent as they are even when compression is on (as Express's `compression`). */
const COMPRESS_MIN_BYTES = 1024
/** What the `compression` option may name, and how each encodes (levels a server would use). */
const ENCODERS = {
  gzip: (b) => zlib.gzipSync(b, { level: 6 }),
  br: (b) =>
    zlib.brotliCompressSync(b, {
      params: {
        [zlib.constants.BROTLI_PARAM_QUALITY]: 4,
        [zlib.constants.BROTLI_PARAM_SIZE_HINT]: b.length,
      },
    }),
}
const MAX_BODY_BYTES = 1024 * 1024

// ---------------------------------------------------------------------------
// Responses

const ok = (json) => ({ status: 200, json })
const fail = (status, error, extra) => ({ status, json: { error, ...extra } })
const NOT_FOUND = () => fail(404, 'not found')

/**
 * Sends a JSON answer. With `encoding` (`'gzip'` or `'br'`, which the request
 * accepted), a 200 body of at least COMPRESS_MIN_BYTES goes compressed.
 */
function send(res, { status, json, raw, headers }, encoding = null) {
  if (res.destroyed || res.headersSent) return
  const text = raw !== undefined ? raw : (JSON.stringify(json) ?? '')
  let body = Buffer.isBuffer(text) ? text : Buffer.from(String(text))
  const extra = {}
  if (encoding && status === 200 && body.length >= COMPRESS_MIN_BYTES) {
    body = ENCODERS[encoding](body)
    extra['Content-Encoding'] = encoding
    extra.Vary = 'Accept-Encoding'
  }
  res.writeHead(status, {
    'Content-Type': JSON_TYPE,
    'Content-Length': body.length,
    ...extra,
    ...headers,
  })
  res.end(body)
}

/** The encoding to answer `req` with under the `compression` setting: it, if the request accepts it. */
function responseEncoding(compression, req) {
  if (!compression) return null
  const accepted = String(req.headers['accept-encoding'] || '')
    .split(',')
    .map((s) => s.trim().split(';')[0].toLowerCase())
  return accepted.includes(compression) ? compression : null
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
  ENCODERS,
  responseEncoding,
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
