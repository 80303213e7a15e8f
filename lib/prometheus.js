'use strict'
// getMetrics() in the Prometheus text exposition format (version 0.0.4).

const COUNTERS = [
  ['criticalHits', 'critical_hits_total', 'Critical reads that found their entity.'],
  ['criticalMisses', 'critical_misses_total', 'Critical reads that did not.'],
  ['referenceHits', 'reference_hits_total', 'Reference reads answered from the cache.'],
  ['referenceMisses', 'reference_misses_total', 'Reference reads that asked the Wrapper.'],
  ['totalRequests', 'requests_total', 'All cache reads.'],
  ['wrapperRequests', 'wrapper_requests_total', 'HTTP requests sent to the Wrapper.'],
  ['wrapperErrors', 'wrapper_errors_total', 'Wrapper requests that failed.'],
  ['coalescedRequests', 'coalesced_requests_total', 'Misses that joined a fetch in flight.'],
  ['staleServed', 'stale_served_total', 'Expired entries served while the Wrapper failed.'],
  [
    'sharedHits',
    'shared_hits_total',
    'Local reference misses answered by the shared tier in Redis.',
  ],
  [
    'sharedMisses',
    'shared_misses_total',
    'Local reference misses the shared tier did not hold (this instance asked the Wrapper).',
  ],
  ['eventsReceived', 'events_received_total', 'Messages received on the subscription.'],
  ['eventsApplied', 'events_applied_total', 'Events applied.'],
  ['reconnects', 'reconnects_total', 'Redis reconnects.'],
  ['resyncs', 'resyncs_total', 'Full reloads after the first load.'],
  ['queueOverflows', 'queue_overflows_total', 'Bounded internal queues that overflowed.'],
  ['resumes', 'resumes_total', 'Reconnects caught up from the stream without a full reload.'],
  ['snapshotRejected', 'snapshot_rejected_total', 'Shared snapshots that failed a check.'],
]

const GAUGES = [
  ['criticalHitRate', 'critical_hit_rate', 'Critical hits / critical reads.'],
  ['referenceHitRate', 'reference_hit_rate', 'Reference hits / reference reads.'],
  ['overallHitRate', 'overall_hit_rate', 'Hits / reads.'],
  ['cacheSize', 'cache_entries', 'Entries in both tiers.'],
  ['criticalCacheSize', 'critical_cache_entries', 'Entries in the critical tier.'],
  ['referenceCacheSize', 'reference_cache_entries', 'Entries in the reference tier.'],
  ['referenceCacheBytes', 'reference_cache_bytes', 'Bytes held by the reference tier.'],
]

const PREFIX = 'smart_crm_consumer_'

/**
 * The metric families of `m` (from getMetrics()), each
 * `{ name, help, type, values: [{ labels, value }] }`, every series with
 * `labels` (a tenant id string stands for `{ tenant }`): the one description
 * that `metricsText()` and the prom-client collectors use.
 */
function families(m, labels) {
  const base = typeof labels === 'string' ? { tenant: labels } : labels
  const out = []
  const one = (type, [field, name, help], value = Number(m[field])) =>
    out.push({ name: PREFIX + name, help, type, values: [{ labels: base, value }] })
  for (const c of COUNTERS) one('counter', c)
  out.push({
    name: `${PREFIX}events_rejected_total`,
    help: 'Rejected events by reason.',
    type: 'counter',
    values: Object.entries(m.eventsRejected).map(([reason, value]) => ({
      labels: { ...base, reason },
      value,
    })),
  })
  out.push({
    name: `${PREFIX}snapshot_loads_total`,
    help: 'Full loads by the source of their data.',
    type: 'counter',
    values: Object.entries(m.snapshotLoads).map(([source, value]) => ({
      labels: { ...base, source },
      value,
    })),
  })
  for (const g of GAUGES) one('gauge', g)
  one(
    'gauge',
    ['connected', 'connected', 'Subscribed and resynced (1) or not (0).'],
    m.connected ? 1 : 0,
  )
  return out
}

/**
 * One family list from several (the same families, e.g. one list per
 * tenant): each family once, with the series of all. `template` gives the
 * families (and no series) when `lists` is empty.
 */
function mergeFamilies(lists, template) {
  const first = lists.length > 0 ? lists[0] : template
  return first.map((f, i) => ({
    name: f.name,
    help: f.help,
    type: f.type,
    values: lists.flatMap((l) => l[i].values),
  }))
}

/** A label value as the text format writes it. */
function escapeLabel(v) {
  return String(v).replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

/** Renders metric families in the Prometheus text format: HELP and TYPE once per family. */
function renderFamilies(list) {
  const lines = []
  for (const f of list) {
    lines.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`)
    for (const { labels, value } of f.values) {
      const text = Object.entries(labels)
        .map(([k, v]) => `${k}="${escapeLabel(v)}"`)
        .join(',')
      lines.push(text === '' ? `${f.name} ${value}` : `${f.name}{${text}} ${value}`)
    }
  }
  return lines.join('\n') + '\n'
}

/** Renders `m` (from getMetrics()) in the Prometheus text format, with a `tenant` label. */
function metricsText(m, tenant) {
  return renderFamilies(families(m, tenant))
}

/**
 * Exposes `source`'s figures (a SmartCRMConsumer) as collectors of an existing
 * prom-client `registry` (SPEC §10), read at scrape time, with the names and
 * labels of `metricsText()`. prom-client itself is not loaded here: the
 * collectors are the plain metric objects its Registry reads (`name`, `help`,
 * `type`, `get()`), so prom-client stays an optional peer dependency.
 * Registering the same names twice throws, as prom-client does.
 */
function register(registry, source) {
  if (!registry || typeof registry.registerMetric !== 'function') {
    const e = new TypeError('registry must be a prom-client Registry')
    e.code = 'ERR_INVALID_ARG_TYPE'
    throw e
  }
  if (!source || typeof source.getMetrics !== 'function') {
    const e = new TypeError('source must be a SmartCRMConsumer or a tenant pool')
    e.code = 'ERR_INVALID_ARG_TYPE'
    throw e
  }
  const read =
    typeof source._families === 'function'
      ? () => source._families()
      : () => families(source.getMetrics(), source.tenantId)
  const collectors = read().map((f, i) => ({
    name: f.name,
    help: f.help,
    type: f.type,
    aggregator: 'sum',
    get: async () => ({ ...read()[i], aggregator: 'sum' }),
    reset() {},
  }))
  for (const c of collectors) registry.registerMetric(c)
  return collectors.map((c) => c.name)
}

module.exports = { metricsText, register, families, mergeFamilies, renderFamilies }
