// Runs design 003's Express code (./handlers.mjs, verbatim) as a process, the way
// the design does: its consumer is `new SmartCRMConsumer('tenant-123')`, so the
// Wrapper and Redis come from this process's environment (WRAPPER_URL,
// REDIS_URL), set by ../design-003.test.js. Importing ./handlers.mjs mounts the
// design's routes and awaits `crmConsumer.initialize()` (its top-level await).
// Then it listens on a free port and prints `DESIGN_003_URL=<url>` on stdout
// (the package and the design log to the console too). On SIGTERM it shuts the
// consumer down and exits (the design's 30 s monitor interval never ends by itself).

import { app, leads } from './context.mjs'
import { crmConsumer } from './handlers.mjs'

// Not from the design: lets the test see what createLeadInDatabase received.
app.get('/test/leads', (req, res) => res.json(leads))

const server = app.listen(0, '127.0.0.1', () => {
  process.stdout.write(`DESIGN_003_URL=http://127.0.0.1:${server.address().port}\n`)
})

process.once('SIGTERM', async () => {
  server.closeAllConnections()
  server.close()
  await crmConsumer.shutdown()
  process.exit(0)
})
