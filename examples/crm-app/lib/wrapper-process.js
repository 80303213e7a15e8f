'use strict'
// The Wrapper simulator process that lib/wrapper.js starts: the package's
// multi-tenant simulator (`startMultiTenantSim` of smart-crm-consumer/wrapper-sim),
// one HTTP server for every tenant of the seed file, chosen by X-Tenant-Id as a
// real Wrapper does; a tenant it does not know is refused with 403. Each tenant's
// store publishes a signed change event on Redis for every change made through
// its admin API (`/admin/...`, with the tenant's X-Tenant-Id), and with a
// canary period sets its `propagation-canary` config that often.
//
//   node lib/wrapper-process.js '{"redisUrl":"redis://…","dataFile":"seed.json",
//                                 "tenants":["acme","globex"],"canaryMs":1000}'
//
// The signing secret comes in the environment (WRAPPER_SIM_SIGNING_SECRET),
// not argv. Prints the URL on the first line of stdout once it listens; stops
// on SIGTERM/SIGINT.

const fs = require('node:fs')
const { startMultiTenantSim } = require('smart-crm-consumer/wrapper-sim')

async function main() {
  const { redisUrl, dataFile, tenants, canaryMs, maxLog = 10_000 } = JSON.parse(process.argv[2])
  const seed = JSON.parse(fs.readFileSync(dataFile, 'utf8')).tenants
  const ids = tenants ?? Object.keys(seed)
  const data = {}
  for (const id of ids) {
    if (!seed[id]) throw new Error(`tenant ${id} is not in ${dataFile}`)
    data[id] = seed[id]
  }
  const sim = await startMultiTenantSim({
    tenants: data,
    redisUrl,
    signingSecret: process.env.WRAPPER_SIM_SIGNING_SECRET || undefined,
    admin: true,
    maxLog,
  })
  if (canaryMs) for (const id of ids) sim.tenant(id).startCanary(canaryMs)
  process.stdout.write(`${sim.url}\n`)
  process.stderr.write(
    `wrapper-sim (multi-tenant): ${sim.url}, tenants ${ids.join(', ')}` +
      (canaryMs ? `, canary every ${canaryMs} ms` : '') +
      '\n',
  )
  const shutdown = () => sim.stop().then(() => process.exit(0))
  process.once('SIGINT', shutdown)
  process.once('SIGTERM', shutdown)
}

main().catch((err) => {
  process.stderr.write(`wrapper-sim: ${(err && err.stack) || err}\n`)
  process.exit(1)
})
