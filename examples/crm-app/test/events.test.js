'use strict'
// GET /api/events: the consumer's 'change' events as Server-Sent Events,
// scoped to the user's tenant (its consumer in the pool); streams of a tenant
// the pool releases; and the propagation canary the dashboard draws. Real HTTP
// streams against the real stack.

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')

const { startApp, auth, openEvents, waitFor } = require('./helpers.js')

let s
before(async () => {
  s = await startApp({ canaryMs: 100 })
})
after(() => s.stop())

const isKey = (key) => (m) => m.event === 'cache_invalidate' && m.data.keys.includes(key)

test('401 without a user, 403 for a tenant the Wrapper refuses or a suspended user', async () => {
  const none = await openEvents(`${s.url}/api/events`)
  assert.equal(none.status, 401)
  await none.close()
  for (const token of ['demo-other', 'demo-bob']) {
    const res = await openEvents(`${s.url}/api/events`, auth(token))
    assert.equal(res.status, 403, token)
    await res.close()
  }
})

test("a client hears its own tenant's changes as cache_invalidate, and no other tenant's", async () => {
  const acme = await openEvents(`${s.url}/api/events`, auth('demo-alice'))
  const globex = await openEvents(`${s.url}/api/events`, auth('demo-globex-alice'))
  try {
    assert.equal(acme.status, 200)
    assert.match(acme.headers.get('content-type'), /^text\/event-stream/)
    const ready = await acme.first((m) => m.event === 'ready')
    assert.deepEqual(ready.data, { tenantId: 'acme', connected: true })
    await globex.first((m) => m.event === 'ready')

    // A change at globex's Wrapper reaches the globex client ...
    await s.wrapper('globex').setCreditCost('crm.leads.delete', 3)
    const g = await globex.first(isKey('credit:crm.leads.delete'))
    assert.deepEqual(g.data.eventTypes, ['credit-config-changed'])

    // ... then one at acme's reaches the acme client, which never heard globex's.
    await s.wrapper('acme').setCreditCost('crm.leads.delete', 4)
    await acme.first(isKey('credit:crm.leads.delete'))
    const acmeKeys = acme.messages.filter((m) => m.event === 'cache_invalidate')
    assert.equal(acmeKeys.length, 1, JSON.stringify(acme.messages))
    assert.equal(
      globex.messages.filter(isKey('credit:crm.leads.delete')).length,
      1,
      'globex heard only its own change',
    )

    // Reference keys too: a profile change invalidates user:{id}.
    await s.wrapper('acme').admin('PATCH', '/users/u-alice/profile', { title: 'Director' })
    await acme.first(isKey('user:u-alice'))

    // The canary (a config change every 100 ms) is not forwarded to browsers.
    const canaryKey = 'config:propagation-canary'
    assert.ok(!acme.messages.some(isKey(canaryKey)))
  } finally {
    await acme.close()
    await globex.close()
  }
})

test('a burst of events reaches a client coalesced, every key included', async () => {
  const client = await openEvents(`${s.url}/api/events`, auth('demo-dana'))
  try {
    await client.first((m) => m.event === 'ready')
    const w = s.wrapper('acme')
    const ops = Array.from({ length: 50 }, (_, i) => `crm.burst.${i}`)
    await Promise.all(ops.map((op, i) => w.setCreditCost(op, i)))
    await waitFor(() => {
      const heard = new Set(
        client.messages.filter((m) => m.event === 'cache_invalidate').flatMap((m) => m.data.keys),
      )
      return ops.every((op) => heard.has(`credit:${op}`))
    })
    const messages = client.messages.filter((m) => m.event === 'cache_invalidate').length
    assert.ok(messages <= 50, `${messages} messages for 50 events`)
  } finally {
    await client.close()
  }
})

test('the dashboard gets propagation latency samples from the canary', async () => {
  const res = await waitFor(
    async () => {
      const r = await fetch(`${s.url}/api/dashboard`, { headers: auth('demo-dana') })
      const body = await r.json()
      return body.latency.count >= 5 ? body : null
    },
    { message: '5 canary samples' },
  )
  assert.ok(res.latency.p50 >= 0 && res.latency.p50 < 1000, `p50 ${res.latency.p50} ms`)
  assert.ok(res.latency.p99 >= res.latency.p50)
  assert.equal(res.latency.samples.length, res.latency.count)
  assert.ok(res.metrics.eventsApplied >= 5)
})

test('an SSE client that goes away is detached from the consumer', async () => {
  const consumer = s.consumer('acme')
  const base = consumer.listenerCount('change')
  const client = await openEvents(`${s.url}/api/events`, auth('demo-alice'))
  await client.first((m) => m.event === 'ready')
  assert.equal(consumer.listenerCount('change'), base + 1)
  await client.close()
  await waitFor(() => consumer.listenerCount('change') === base, {
    message: 'the listener removed',
  })
  const dash = await (await fetch(`${s.url}/api/dashboard`, { headers: auth('demo-dana') })).json()
  assert.equal(dash.sseClients, 0)
})

test('a tenant released by the pool ends its streams; the next one loads it again', async () => {
  const globex = await openEvents(`${s.url}/api/events`, auth('demo-globex-alice'))
  const acme = await openEvents(`${s.url}/api/events`, auth('demo-alice'))
  let again = null
  try {
    await globex.first((m) => m.event === 'ready')
    await acme.first((m) => m.event === 'ready')
    const dash = async () =>
      (await fetch(`${s.url}/ops/pool/tenants/acme`).then((r) => r.json())).sseClients
    assert.equal(await dash(), 1)
    await s.pool.release('globex')
    await globex.ended
    assert.ok(!s.pool.tenants().includes('globex'))
    // acme's stream is untouched.
    assert.equal(await dash(), 1)
    await s.wrapper('acme').setCreditCost('crm.leads.delete', 7)
    await acme.first(isKey('credit:crm.leads.delete'))

    // What EventSource does after `retry`: a new request, which loads globex.
    again = await openEvents(`${s.url}/api/events`, auth('demo-globex-alice'))
    assert.equal(again.status, 200)
    await again.first((m) => m.event === 'ready')
    assert.ok(s.pool.tenants().includes('globex'))
    await s.wrapper('globex').setCreditCost('crm.leads.delete', 8)
    await again.first(isKey('credit:crm.leads.delete'))
  } finally {
    await globex.close()
    await acme.close()
    if (again) await again.close()
  }
})
