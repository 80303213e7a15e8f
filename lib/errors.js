'use strict'
// Error translation between the native binding and JavaScript.
//
// The binding prefixes each native error message with `[CODE] ` (napi errors
// carry only a fixed set of statuses); this module strips the prefix into
// `err.code` and rethrows argument errors as `TypeError`/`RangeError`, so every
// error a user sees has a clear class, message and code.

const PREFIX = /^\[([A-Za-z]+Error:)?([A-Z_]+)\] /

/** Rebuilds a native error as the JS error it stands for. */
function fromNative(err) {
  if (!err || typeof err.message !== 'string') return err
  const m = PREFIX.exec(err.message)
  if (!m) return err
  const message = err.message.slice(m[0].length)
  const Cls = m[1] === 'TypeError:' ? TypeError : m[1] === 'RangeError:' ? RangeError : Error
  const out = new Cls(message)
  out.code = m[2]
  return out
}

/** Calls a native function, rethrowing its errors translated. */
function callNative(fn) {
  try {
    return fn()
  } catch (err) {
    throw fromNative(err)
  }
}

/** Translates the rejection of a native promise. */
function rethrow(err) {
  throw fromNative(err)
}

/** A TypeError with a code (Node's ERR_INVALID_ARG_TYPE convention). */
function typeError(message) {
  const e = new TypeError(message)
  e.code = 'ERR_INVALID_ARG_TYPE'
  return e
}

/** A RangeError with a code (Node's ERR_OUT_OF_RANGE convention). */
function rangeError(message) {
  const e = new RangeError(message)
  e.code = 'ERR_OUT_OF_RANGE'
  return e
}

/** The error every call after shutdown() gets. */
function shutdownError() {
  const e = new Error('the consumer has been shut down')
  e.code = 'SHUTDOWN'
  return e
}

module.exports = { fromNative, callNative, rethrow, typeError, rangeError, shutdownError }
