'use strict'
// Runs the example: Redis (REDIS_URL, or a private redis-server), the
// multi-tenant Wrapper simulator (every tenant of seed.json behind one URL,
// publishing a signed event for every change made through its admin API, and
// a propagation canary per tenant every second), a tenant pool with those
// tenants loaded, and the app. Prints where to go. Ctrl-C stops everything.
//
//   npm start                       # PORT=3000 by default
//   PORT=0 node server.js           # any free port
//   TENANTS=acme node server.js     # the Wrapper serves only these tenants
//   MAX_TENANTS=1 IDLE_TENANT_MS=60000 node server.js   # the pool's limits
//
// Baseline mode, for the load comparison only: CRM_CONSUMER=js builds the same
// app on the hand-written pure-JS consumer (load/js-baseline.js).

const { startStack } = require('./lib/stack.js')
const { createApp } = require('./app.js')
const { DEMO_SESSIONS } = require('./auth.js')

async function main() {
  const port = process.env.PORT === undefined ? 3000 : Number(process.env.PORT)
  const impl = process.env.CRM_CONSUMER || 'smart'
  const options = {
    redisUrl: process.env.REDIS_URL || undefined,
    signingSecret: process.env.SIGNING_SECRET || undefined,
    canaryMs: Number(process.env.CANARY_MS || 1000),
    inheritStderr: true,
  }
  if (impl === 'js') options.createPool = require('./load/js-baseline.js').createBaselinePool
  else if (impl !== 'smart') throw new Error(`CRM_CONSUMER must be smart or js, not ${impl}`)
  if (process.env.TENANTS) options.tenants = process.env.TENANTS.split(',')
  options.poolOptions = {}
  if (process.env.MAX_TENANTS) options.poolOptions.maxTenants = Number(process.env.MAX_TENANTS)
  if (process.env.IDLE_TENANT_MS)
    options.poolOptions.idleTenantMs = Number(process.env.IDLE_TENANT_MS)

  const stack = await startStack(options)
  const app = createApp({ pool: stack.pool })
  const server = app.listen(port, '127.0.0.1')
  await new Promise((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  })
  const url = `http://127.0.0.1:${server.address().port}`

  const lines = [
    `crm-app listening on ${url}  (consumer: ${impl})`,
    `  Redis: ${stack.redis ? `private redis-server on port ${stack.redis.port}` : 'REDIS_URL'}`,
  ]
  const w = stack.wrapper
  lines.push(
    `  Wrapper (tenants ${w.tenants.join(', ')}, by X-Tenant-Id): ${w.url}`,
    `  Pool: ${stack.pool.tenants().length} tenants loaded; dashboard ${url}/dashboard`,
    '',
    '  Sign in (demo tokens; see auth.js) and open a page:',
  )
  for (const [token, next] of [
    ['demo-dana', '/dashboard'],
    ['demo-alice', '/cost'],
    ['demo-globex-alice', '/cost'],
  ]) {
    const who = DEMO_SESSIONS[token].name.padEnd(24)
    lines.push(`    ${who} ${url}/auth/demo-login?token=${token}&next=${next}`)
  }
  const first = w.tenants.includes('acme') ? 'acme' : w.tenants[0]
  lines.push(
    '',
    `  Change a cost at the Wrapper (tenant ${first}); its cost pages update at once:`,
    `    curl -X PUT -H 'X-Tenant-Id: ${first}' ${w.url}/admin/credits/crm.leads.create -d '{"creditCost":4}'`,
    '',
    `  API: curl -H 'Authorization: Bearer demo-alice' ${url}/api/credits/check/crm.leads.create`,
  )
  console.log(lines.join('\n'))
  if (process.send) process.send({ type: 'listening', url, wrapper: w.url, tenants: w.tenants })

  let stopping = false
  const shutdown = async () => {
    if (stopping) return
    stopping = true
    app.locals.crm.shutdown()
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
    await stack.stop()
    process.exit(0)
  }
  process.once('SIGINT', shutdown)
  process.once('SIGTERM', shutdown)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
