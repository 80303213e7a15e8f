'use strict'
// Wrapper simulator: the command line, `node tools/wrapper-sim.js --tenant T ...`
// (run through that entry file; --help lists every option).

const fs = require('node:fs')
const { startWrapperSim } = require('./index.js')

function redact(url) {
  try {
    const u = new URL(url)
    if (u.password) u.password = '***'
    return u.toString()
  } catch {
    return '(unparsable URL)'
  }
}

const USAGE = `usage: node tools/wrapper-sim.js --tenant T [options]

Serves the Wrapper API of SPEC §4 on http://HOST:PORT and prints that URL on
the first line of stdout. With --redis it also publishes a change event for
every change made under /admin/ (see ADMIN_ROUTES in tools/wrapper-sim/admin.js).

  --tenant T            tenant id; every request must carry it as X-Tenant-Id (required)
  --port N              default 0 (a free port)
  --host H              default 127.0.0.1
  --token X             require Authorization: Bearer X on the Wrapper API
  --page-size N         answer list endpoints in pages of N
  --data FILE           initial store (JSON: { credits, roles, users, configs, profiles,
                        hierarchy, auditLogs, historical, balances }); default: a sample
  --redis URL           publish change events there
  --channel-prefix P    default crm
  --signing-secret S    sign events (visible in ps; prefer WRAPPER_SIM_SIGNING_SECRET)
  --admin-token X       require Authorization: Bearer X on /admin/
  --no-admin            do not serve /admin/
  --canary-ms N         every N ms set the config 'propagation-canary' to { sentAt, seq }
  --max-log N           keep the last ~N requests/deductions/events in memory (default 10000)
`

function parseArgs(argv) {
  const names = {
    '--port': 'port',
    '--host': 'host',
    '--tenant': 'tenant',
    '--token': 'token',
    '--page-size': 'pageSize',
    '--data': 'data',
    '--redis': 'redis',
    '--channel-prefix': 'channelPrefix',
    '--signing-secret': 'signingSecret',
    '--admin-token': 'adminToken',
    '--canary-ms': 'canaryMs',
    '--max-log': 'maxLog',
  }
  const flags = { '--no-admin': 'noAdmin', '--help': 'help' }
  const args = {}
  for (let i = 0; i < argv.length; i++) {
    if (flags[argv[i]]) {
      args[flags[argv[i]]] = true
      continue
    }
    const name = names[argv[i]]
    if (!name || i + 1 >= argv.length) throw new Error(`unknown or incomplete argument: ${argv[i]}`)
    args[name] = argv[++i]
  }
  return args
}

function intArg(args, name) {
  if (args[name] === undefined) return undefined
  const n = Number(args[name])
  if (!Number.isInteger(n) || n < 0) {
    const flag = name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
    throw new Error(`--${flag} must be a non-negative integer`)
  }
  return n
}

async function main() {
  let args
  let opts
  try {
    args = parseArgs(process.argv.slice(2))
    if (args.help) {
      process.stdout.write(USAGE)
      return
    }
    if (!args.tenant) throw new Error('--tenant is required')
    opts = {
      tenantId: args.tenant,
      token: args.token,
      port: intArg(args, 'port') ?? 0,
      host: args.host,
      pageSize: intArg(args, 'pageSize'),
      data: args.data === undefined ? undefined : JSON.parse(fs.readFileSync(args.data, 'utf8')),
      redisUrl: args.redis,
      channelPrefix: args.channelPrefix,
      signingSecret: args.signingSecret ?? (process.env.WRAPPER_SIM_SIGNING_SECRET || undefined),
      admin: !args.noAdmin,
      adminToken: args.adminToken,
      maxLog: intArg(args, 'maxLog') ?? 10000,
    }
    if (args.canaryMs !== undefined && !(intArg(args, 'canaryMs') > 0)) {
      throw new Error('--canary-ms must be a positive integer')
    }
  } catch (err) {
    process.stderr.write(`wrapper-sim: ${err.message}\n${USAGE}`)
    process.exit(2)
  }
  const sim = await startWrapperSim(opts)
  process.stdout.write(`${sim.url}\n`)
  const notes = [`tenant ${sim.tenantId}`, sim.token ? 'bearer token required' : 'no token']
  if (args.redis) {
    const signed = opts.signingSecret ? 'signed' : 'unsigned'
    notes.push(`publishing ${signed} events to ${redact(args.redis)}`)
  }
  if (sim.admin) notes.push(`admin at ${sim.url}/admin/state`)
  if (args.canaryMs !== undefined) {
    sim.startCanary(Number(args.canaryMs))
    notes.push(`canary every ${args.canaryMs} ms`)
  }
  process.stderr.write(`wrapper-sim: ${notes.join(', ')}\n`)
  const shutdown = () => sim.stop().then(() => process.exit(0))
  process.once('SIGINT', shutdown)
  process.once('SIGTERM', shutdown)
}

module.exports = { main }
