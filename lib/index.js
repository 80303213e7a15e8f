'use strict'
// smart-crm-consumer: the package entry point (CommonJS).

const { SmartCRMConsumer } = require('./consumer.js')
const { createPublisher } = require('./publisher.js')
const { createTenantPool, TenantPool } = require('./pool.js')
const native = require('../index.js')
const errors = require('./errors.js')

/** Hex HMAC-SHA256 of `message` (object or JSON text, without `signature`) over its RFC 8785 form. */
function signMessage(message, secret) {
  const text = typeof message === 'string' ? message : JSON.stringify(message)
  if (typeof secret !== 'string') throw errors.typeError('secret must be a string')
  return native.signMessage(text, secret)
}

/** The RFC 8785 (JCS) canonical form of a JSON value or JSON text. */
function canonicalize(value) {
  const text = typeof value === 'string' ? value : JSON.stringify(value)
  return native.canonicalize(text)
}

module.exports = {
  SmartCRMConsumer,
  createTenantPool,
  TenantPool,
  createPublisher,
  signMessage,
  canonicalize,
}
