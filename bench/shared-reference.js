'use strict'
// Bench row of issue 11 (SPEC §7 `sharedReference`): Wrapper requests for one
// hot profile across a fleet of instances (separate processes), per TTL, with
// the shared reference tier and without it (today), in the same run.
//
//   node bench/shared-reference.js [--instances=20] [--ttl-ms=2000] [--periods=3] [--smoke]
//
// Writes bench/RESULTS-shared-reference.md (or .smoke.md) with the command.

const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { startRedis } = require('../tools/test-helpers/index.js')
const { startWrapperSim } = require('../tools/wrapper-sim.js')

const arg = (name, dflt) => {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`))
  return a ? Number(a.split('=')[1]) : dflt
}
const smoke = process.argv.includes('--smoke')
const INSTANCES = arg('instances', smoke ? 4 : 20)
const TTL_MS = arg('ttl-ms', smoke ? 500 : 2000)
const PERIODS = arg('periods', smoke ? 2 : 3)
const EVERY_MS = 10
const PROFILE = '/api/users/u-alice/profile'

async function run(shared) {
  const tenantId = `bench-sref-${shared ? 'on' : 'off'}`
  const redis = await startRedis()
  const sim = await startWrapperSim({ tenantId })
  const options = {
    tenantId,
    wrapperUrl: sim.url,
    redisUrl: redis.url,
    sharedReference: shared,
    ttl: { userProfiles: TTL_MS },
    refreshIntervalMs: 0,
    requestTimeoutMs: 10_000,
  }
  const job = { options, userId: 'u-alice', everyMs: EVERY_MS, durationMs: TTL_MS * PERIODS }
  const children = []
  for (let i = 0; i < INSTANCES; i++) {
    children.push(fork(path.join(__dirname, 'child-shared-reference.js'), [JSON.stringify(job)]))
  }
  const next = (c) => new Promise((resolve) => c.once('message', resolve))
  const ready = await Promise.all(children.map(next))
  if (ready.some((r) => !r.ready)) throw new Error(`an instance failed: ${JSON.stringify(ready)}`)
  const before = sim.count(PROFILE)
  const results = children.map(next)
  for (const c of children) c.send('go')
  const out = await Promise.all(results)
  const requests = sim.count(PROFILE) - before
  await sim.stop()
  await redis.stop()
  return {
    requests,
    perTtl: requests / PERIODS,
    reads: out.reduce((n, r) => n + r.reads, 0),
    sharedHits: out.reduce((n, r) => n + (r.sharedHits ?? 0), 0),
  }
}

async function main() {
  const load = os.loadavg()[0]
  const off = await run(false)
  const on = await run(true)
  const verdict = on.perTtl <= 1.5 ? 'met' : 'missed'
  const cmd = `node bench/shared-reference.js${process.argv
    .slice(2)
    .map((a) => ` ${a}`)
    .join('')}`
  const text = `# Shared reference tier (issue 11, SPEC §7)

Command: \`${cmd}\` — ${new Date().toISOString()}, load average ${load.toFixed(2)} on ${os.cpus().length} cores.

${INSTANCES} instances (separate processes) each read one hot profile every ${EVERY_MS} ms for ${PERIODS} TTLs of ${TTL_MS} ms; the Wrapper simulator counts the profile's requests.

| row | sharedReference | today (local cache only) | target | verdict |
| --- | ---: | ---: | --- | --- |
| Wrapper requests for one hot profile across ${INSTANCES} instances, per TTL | ${on.perTtl.toFixed(2)} (${on.requests} in ${PERIODS} TTLs) | ${off.perTtl.toFixed(2)} (${off.requests} in ${PERIODS} TTLs) | 1 (today ${INSTANCES}) | **${verdict}** |

Reads served: ${on.reads} with the shared tier (of them ${on.sharedHits} local misses answered by Redis), ${off.reads} without. An instance's first read and each expiry make its local miss; with the shared tier those misses are answered from Redis (the entry keeps its remaining TTL there), and only the first instance to miss after the shared entry expires asks the Wrapper.
`
  const file = path.join(
    __dirname,
    smoke ? 'RESULTS-shared-reference.smoke.md' : 'RESULTS-shared-reference.md',
  )
  fs.writeFileSync(file, text)
  process.stdout.write(text)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
