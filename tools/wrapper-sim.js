'use strict'
// Wrapper simulator: an HTTP server that speaks the Wrapper API of SPEC §4, for
// the tests, the demo and the example app; in-process (`startWrapperSim`) or as
// a runnable tool (the CLI below).
//
// It serves a mutable in-memory store (`sim.data`), logs every request, and
// can misbehave on demand (errors, delays, resets, hangs, truncated or invalid
// bodies, gated requests) so the consumer's failure handling can be tested
// deterministically.
//
// Given a `redisUrl` it is also the publishing side: its change methods
// (`setCreditConfig`, `setRole`, `setUserAccess`, ...) update the store and
// publish the matching change event of SPEC §3 with the package's
// `createPublisher` (signed when a `signingSecret` is set). With `admin: true`
// the same changes are offered over HTTP under `/admin/` (see ADMIN_ROUTES in
// wrapper-sim/admin.js).
// Without a `redisUrl` it needs Node built-ins only.
//
//   node tools/wrapper-sim.js --tenant T [--port 8080] [--redis URL] [--data seed.json] ...
//   (--help lists every option)
//
// The code is split by concern under tools/wrapper-sim/ (index.js lists the
// files); this file is the entry: the module `smart-crm-consumer/wrapper-sim`
// and the CLI.

module.exports = {
  ...require('./wrapper-sim/index.js'),
  // One server for many tenants, by X-Tenant-Id (for tenant pools).
  ...require('./wrapper-sim/multi.js'),
}

if (require.main === module) {
  require('./wrapper-sim/cli.js')
    .main()
    .catch((err) => {
      process.stderr.write(`wrapper-sim: ${err.message}\n`)
      process.exit(1)
    })
}
