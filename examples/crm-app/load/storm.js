'use strict'
// An event storm, in its own process: publishes signed credit-config-changed
// events for one tenant at a steady rate (default 5,000/s) with the package's
// createPublisher, until SIGTERM or the IPC message 'stop'; then reports what
// it published (IPC to its parent, or a JSON line on stdout) and exits.
//
//   node load/storm.js '{"redisUrl":"redis://127.0.0.1:6380","tenantId":"acme",
//                        "signingSecret":"…","rate":5000}'
//
// Events go to 1,000 operation codes the app never reads (storm.op.N), each
// with a rising version (above any earlier storm's: the clock is its base), so
// a consumer validates and applies every one.

const { createPublisher } = require('smart-crm-consumer')

const TICK_MS = 10

async function main() {
  const {
    redisUrl,
    tenantId,
    signingSecret,
    rate = 5000,
    ops = 1000,
  } = JSON.parse(process.argv[2] || '{}')
  const publisher = createPublisher({ redisUrl, tenantId, signingSecret })
  const perTick = Math.max(1, Math.round((rate * TICK_MS) / 1000))
  const base = Date.now() * 100 // > 5,000 events/s of any earlier storm, < 2^53
  let seq = 0
  let published = 0
  let failed = 0
  let stopping = false
  const started = Date.now()

  const finish = async () => {
    if (stopping) return
    stopping = true
    await loop
    const seconds = (Date.now() - started) / 1000
    const msg = { type: 'done', published, failed, seconds, rate: published / seconds }
    await publisher.close()
    if (process.send) process.send(msg, () => process.exit(0))
    else {
      console.log(JSON.stringify(msg))
      process.exit(0)
    }
  }
  process.on('SIGTERM', finish)
  process.on('message', (m) => m === 'stop' && finish())

  // Paced by the clock: each tick publishes what is due, so a late timer
  // catches up instead of lowering the rate.
  const loop = (async () => {
    let due = started
    while (!stopping) {
      const wait = due - Date.now()
      if (wait > 0) {
        await new Promise((resolve) => setTimeout(resolve, wait))
        continue
      }
      const batch = []
      for (let i = 0; i < perTick; i++) {
        seq++
        const data = { operationCode: `storm.op.${seq % ops}`, newValue: seq % 97 }
        batch.push(
          publisher
            .publish('credit-configs', 'credit-config-changed', data, { version: base + seq })
            .then(
              () => published++,
              () => failed++,
            ),
        )
      }
      await Promise.all(batch)
      due += TICK_MS
    }
  })()
  if (process.send) process.send({ type: 'started' })
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
