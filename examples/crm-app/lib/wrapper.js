'use strict'
// Runs the Wrapper simulator (lib/wrapper-process.js: the package's
// multi-tenant simulator) as its own process: one URL for every tenant, the
// Wrapper API and an admin API to change a tenant's data, both chosen by
// X-Tenant-Id, and a signed change event on Redis for every change.

const path = require('node:path')
const readline = require('node:readline')
const { spawn } = require('node:child_process')

const PROCESS_PATH = path.join(__dirname, 'wrapper-process.js')
const SEED_FILE = path.join(__dirname, '..', 'seed.json')

const live = new Set()
process.on('exit', () => {
  for (const child of live) {
    try {
      child.kill('SIGKILL')
    } catch {
      // already gone
    }
  }
})

/**
 * The admin API of one tenant at the simulator (`url`): `admin(method, path,
 * body)` resolves to the JSON answer, rejects on a non-2xx; and shortcuts.
 */
function tenantAdmin(url, tenantId) {
  async function admin(method, urlPath, body) {
    const headers = { 'X-Tenant-Id': tenantId }
    if (body !== undefined) headers['Content-Type'] = 'application/json'
    const res = await fetch(`${url}/admin${urlPath}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const json = await res.json()
    if (!res.ok) {
      throw Object.assign(
        new Error(`admin ${tenantId} ${method} ${urlPath}: ${res.status} ${json.error}`),
        { status: res.status },
      )
    }
    return json
  }
  return {
    tenantId,
    url,
    admin,
    setCreditCost: (op, creditCost) =>
      admin('PUT', `/credits/${encodeURIComponent(op)}`, { creditCost }),
    setCreditConfig: (op, body) => admin('PUT', `/credits/${encodeURIComponent(op)}`, body),
    setBalance: (userId, available) =>
      admin('PUT', `/balances/${encodeURIComponent(userId)}`, { available }),
    setUserAccess: (userId, body) =>
      admin('PUT', `/users/${encodeURIComponent(userId)}/access`, body),
    state: () => admin('GET', '/state'),
  }
}

/**
 * Starts the simulator and resolves once it listens.
 *
 * @param {object} o
 * @param {string} o.redisUrl where it publishes its change events
 * @param {string[]} [o.tenants] the tenants it serves (default: every tenant of the data file)
 * @param {string} [o.signingSecret] signs the events (passed in the environment, not argv)
 * @param {string} [o.dataFile] the tenants' initial data, `{ tenants: { [id]: data } }`
 *   (default seed.json)
 * @param {number} [o.canaryMs] each tenant publishes a propagation canary this often
 * @param {boolean} [o.inheritStderr] show its stderr (server.js); tests keep it quiet
 * @returns {Promise<{ url, pid, tenants: string[], tenant(id), stop() }>} `tenant(id)`:
 *   that tenant's admin API (any id: an unknown one is refused with 403)
 */
async function startWrapper({
  redisUrl,
  tenants,
  signingSecret,
  dataFile = SEED_FILE,
  canaryMs,
  inheritStderr = false,
}) {
  const config = { redisUrl, dataFile, tenants, canaryMs }
  const env = { ...process.env }
  delete env.WRAPPER_SIM_SIGNING_SECRET
  if (signingSecret) env.WRAPPER_SIM_SIGNING_SECRET = signingSecret
  const child = spawn(process.execPath, [PROCESS_PATH, JSON.stringify(config)], {
    env,
    stdio: ['ignore', 'pipe', inheritStderr ? 'inherit' : 'pipe'],
  })
  live.add(child)
  child.once('exit', () => live.delete(child))
  let stderr = ''
  if (!inheritStderr) child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4096)))
  const exited = new Promise((resolve) => child.once('exit', resolve))

  // It prints its URL on the first line of stdout once it listens.
  const url = await new Promise((resolve, reject) => {
    let settled = false
    const lines = readline.createInterface({ input: child.stdout })
    const timer = setTimeout(() => fail(new Error('no URL within 10 s')), 10_000)
    const fail = (err) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      child.kill('SIGKILL')
      reject(new Error(`wrapper simulator: ${err.message}\n${stderr}`))
    }
    lines.once('line', (line) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(line.trim())
    })
    child.once('error', fail)
    child.once('exit', (code) => fail(new Error(`exited (${code})`)))
  })

  const served = tenants ?? Object.keys(require(dataFile).tenants)
  return {
    url,
    pid: child.pid,
    tenants: served,
    tenant: (tenantId) => tenantAdmin(url, tenantId),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
      await exited
      clearTimeout(timer)
    },
  }
}

module.exports = { startWrapper, tenantAdmin, SEED_FILE }
