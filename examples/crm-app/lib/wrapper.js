'use strict'
// Runs the package's Wrapper simulator (tools/wrapper-sim.js, shipped in the
// tarball) as its own process: the Wrapper API over HTTP, an admin API to
// change its data, and a signed change event on Redis for every change.

const path = require('node:path')
const readline = require('node:readline')
const { spawn } = require('node:child_process')

// The package exports only '.', './express' and './package.json'; the
// simulator is a file in the package, run by path.
const SIM_PATH = path.join(
  path.dirname(require.resolve('smart-crm-consumer/package.json')),
  'tools',
  'wrapper-sim.js',
)
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
 * Starts one simulator for `tenantId` and resolves once it listens.
 *
 * @param {object} o
 * @param {string} o.tenantId
 * @param {string} o.redisUrl where it publishes its change events
 * @param {string} [o.signingSecret] signs the events (passed in the environment, not argv)
 * @param {string} [o.dataFile] its initial data (default seed.json)
 * @param {number} [o.canaryMs] publish a propagation canary this often
 * @param {number} [o.port] default: a free port
 * @param {boolean} [o.inheritStderr] show its stderr (server.js); tests keep it quiet
 */
async function startWrapper({
  tenantId,
  redisUrl,
  signingSecret,
  dataFile = SEED_FILE,
  canaryMs,
  port = 0,
  inheritStderr = false,
}) {
  const args = [SIM_PATH, '--tenant', tenantId, '--redis', redisUrl, '--port', String(port)]
  args.push('--data', dataFile)
  if (canaryMs) args.push('--canary-ms', String(canaryMs))
  const env = { ...process.env }
  delete env.WRAPPER_SIM_SIGNING_SECRET
  if (signingSecret) env.WRAPPER_SIM_SIGNING_SECRET = signingSecret
  const child = spawn(process.execPath, args, {
    env,
    stdio: ['ignore', 'pipe', inheritStderr ? 'inherit' : 'pipe'],
  })
  live.add(child)
  child.once('exit', () => live.delete(child))
  let stderr = ''
  if (!inheritStderr) child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4096)))
  const exited = new Promise((resolve) => child.once('exit', resolve))

  // The simulator prints its URL on the first line of stdout once it listens.
  const url = await new Promise((resolve, reject) => {
    let settled = false
    const lines = readline.createInterface({ input: child.stdout })
    const timer = setTimeout(() => fail(new Error('no URL within 10 s')), 10_000)
    const fail = (err) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      child.kill('SIGKILL')
      reject(new Error(`wrapper simulator for ${tenantId}: ${err.message}\n${stderr}`))
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

  /** Calls the simulator's admin API; resolves to the JSON answer, rejects on a non-2xx. */
  async function admin(method, urlPath, body) {
    const res = await fetch(`${url}/admin${urlPath}`, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const json = await res.json()
    if (!res.ok) {
      throw Object.assign(new Error(`admin ${method} ${urlPath}: ${res.status} ${json.error}`), {
        status: res.status,
      })
    }
    return json
  }

  return {
    tenantId,
    url,
    pid: child.pid,
    admin,
    setCreditCost: (op, creditCost) =>
      admin('PUT', `/credits/${encodeURIComponent(op)}`, { creditCost }),
    setCreditConfig: (op, body) => admin('PUT', `/credits/${encodeURIComponent(op)}`, body),
    setBalance: (userId, available) =>
      admin('PUT', `/balances/${encodeURIComponent(userId)}`, { available }),
    setUserAccess: (userId, body) =>
      admin('PUT', `/users/${encodeURIComponent(userId)}/access`, body),
    state: () => admin('GET', '/state'),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000)
      await exited
      clearTimeout(timer)
    },
  }
}

module.exports = { startWrapper, SIM_PATH, SEED_FILE }
