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
  ['eventsReceived', 'events_received_total', 'Messages received on the subscription.'],
  ['eventsApplied', 'events_applied_total', 'Events applied.'],
  ['reconnects', 'reconnects_total', 'Redis reconnects.'],
  ['resyncs', 'resyncs_total', 'Full reloads after the first load.'],
  ['queueOverflows', 'queue_overflows_total', 'Bounded internal queues that overflowed.'],
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

/** Renders `m` (from getMetrics()) with a `tenant` label. */
function metricsText(m, tenant) {
  const p = 'smart_crm_consumer_'
  const label = `tenant="${tenant}"`
  const lines = []
  const one = (type, [field, name, help]) => {
    lines.push(`# HELP ${p}${name} ${help}`, `# TYPE ${p}${name} ${type}`)
    lines.push(`${p}${name}{${label}} ${Number(m[field])}`)
  }
  for (const c of COUNTERS) one('counter', c)
  lines.push(`# HELP ${p}events_rejected_total Rejected events by reason.`)
  lines.push(`# TYPE ${p}events_rejected_total counter`)
  for (const [reason, count] of Object.entries(m.eventsRejected)) {
    lines.push(`${p}events_rejected_total{${label},reason="${reason}"} ${count}`)
  }
  for (const g of GAUGES) one('gauge', g)
  one('gauge', ['connected', 'connected', 'Subscribed and resynced (1) or not (0).'])
  lines[lines.length - 1] = `${p}connected{${label}} ${m.connected ? 1 : 0}`
  return lines.join('\n') + '\n'
}

module.exports = { metricsText }
