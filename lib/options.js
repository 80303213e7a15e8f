'use strict'
// Options on their way to the core: what JSON cannot carry is checked here
// (functions, non-finite numbers, ...), the core validates the rest; and the
// environment variables the core falls back to (SPEC §2, §6).

const { optionError } = require('./errors.js')

/** The environment variables the core reads for defaults (see README, Configuration). */
const ENV_VARS = [
  'REDIS_URL',
  'REDIS_HOST',
  'REDIS_PORT',
  'REDIS_USERNAME',
  'REDIS_PASSWORD',
  'REDIS_SENTINELS',
  'REDIS_SENTINEL_MASTER',
  'REDIS_CLUSTER_NODES',
  'WRAPPER_URL',
]

/** The set ones of ENV_VARS, for the core. */
function readEnv() {
  const env = {}
  for (const name of ENV_VARS) if (process.env[name]) env[name] = process.env[name]
  return env
}

/**
 * Copies an options value into plain JSON for the core, checking on the way
 * what JSON cannot carry (functions, non-finite numbers, ...); the core
 * validates the rest. Errors name the option by its path (`ttl.userProfiles`,
 * `signingSecret[1]`).
 */
function toJsonOptions(value, path) {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value
  if (typeof value === 'number') {
    if (!Number.isFinite(value))
      throw optionError(RangeError, `option \`${path}\` must be a finite number`)
    return value
  }
  if (Array.isArray(value)) return value.map((v, i) => toJsonOptions(v, `${path}[${i}]`))
  if (typeof value === 'object') {
    const out = {}
    for (const [k, v] of Object.entries(value)) {
      if (v === undefined) continue
      out[k] = toJsonOptions(v, path ? `${path}.${k}` : k)
    }
    return out
  }
  throw optionError(TypeError, `option \`${path}\` has an unsupported type (${typeof value})`)
}

module.exports = { ENV_VARS, readEnv, toJsonOptions }
