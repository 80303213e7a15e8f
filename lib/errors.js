'use strict'
// Errors made on the JavaScript side.
//
// Native errors need no translation: the binding (src/lib.rs) builds each one
// as the JS error it stands for, with its class, `code` and message. The few
// errors JS makes itself (an argument of the wrong JS type, an option JSON
// cannot carry, a call after shutdown) use the same family of codes:
//
//   TypeError  `ERR_INVALID_ARG_TYPE`  an argument of the wrong type
//   RangeError `ERR_OUT_OF_RANGE`      an argument outside its rule (mostly native)
//   TypeError/RangeError `ERR_INVALID_OPTION`  a constructor option
//   Error      `SHUTDOWN`              any call after shutdown()

/** A TypeError for an argument of the wrong type. */
function typeError(message) {
  const e = new TypeError(message)
  e.code = 'ERR_INVALID_ARG_TYPE'
  return e
}

/** A RangeError for an argument outside its range. */
function rangeError(message) {
  const e = new RangeError(message)
  e.code = 'ERR_OUT_OF_RANGE'
  return e
}

/** A TypeError or RangeError (`Cls`) for a constructor option. */
function optionError(Cls, message) {
  const e = new Cls(message)
  e.code = 'ERR_INVALID_OPTION'
  return e
}

/** The error every call after shutdown() gets. */
function shutdownError() {
  const e = new Error('the consumer has been shut down')
  e.code = 'SHUTDOWN'
  return e
}

module.exports = { typeError, rangeError, optionError, shutdownError }
