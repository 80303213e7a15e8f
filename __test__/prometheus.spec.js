'use strict'
// smart-crm-consumer/prometheus (SPEC §10): a consumer's figures as collectors
// of an app's own prom-client Registry, read at scrape time, with the names and
// labels of metricsText().

const test = require('ava')
const client = require('prom-client')

const { setup } = require('./helpers/fixture.js')
const { register } = require('../lib/prometheus.js')

test('register(): the same series as metricsText(), read at scrape time, HELP/TYPE once', async (t) => {
  const { consumer } = await setup(t)
  const registry = new client.Registry()
  const own = new client.Counter({
    name: 'app_requests_total',
    help: 'App.',
    registers: [registry],
  })
  own.inc()
  const names = register(registry, consumer)
  t.true(names.includes('smart_crm_consumer_critical_hits_total'))
  consumer.getCreditCost('crm.leads.create')
  const scraped = await registry.metrics()
  const ours = consumer.metricsText()
  for (const line of ours.trim().split('\n')) {
    if (
      line.includes('critical_hit') ||
      line.includes('requests_total{') ||
      line.includes('overall')
    )
      continue // moved by the read below
    t.true(scraped.includes(line), line)
  }
  t.true(scraped.includes('app_requests_total 1'))
  for (const name of names) {
    t.is(
      scraped
        .split('\n')
        .filter((l) => l === `# TYPE ${name} counter` || l === `# TYPE ${name} gauge`).length,
      1,
      name,
    )
  }
  // read at scrape time: a later read shows in the next scrape
  const before = consumer.getMetrics().criticalHits
  consumer.getCreditCost('crm.leads.create')
  const again = await registry.metrics()
  t.true(
    again.includes(
      `smart_crm_consumer_critical_hits_total{tenant="${consumer.tenantId}"} ${before + 1}`,
    ),
  )
  // rejected events keep their reason label
  t.regex(again, /smart_crm_consumer_events_rejected_total\{tenant="[^"]+",reason="malformed"\} 0/)
  // the JSON form works too (prom-client's own API)
  const json = await registry.getMetricsAsJSON()
  t.true(json.some((m) => m.name === 'smart_crm_consumer_connected' && m.values[0].value === 1))
})

test('register() refuses what is not a registry or a consumer, and a second registration', async (t) => {
  const { consumer } = await setup(t)
  t.throws(() => register({}, consumer), { instanceOf: TypeError })
  t.throws(() => register(new client.Registry(), {}), { instanceOf: TypeError })
  const registry = new client.Registry()
  register(registry, consumer)
  t.throws(() => register(registry, consumer), { message: /already been registered/ })
})
