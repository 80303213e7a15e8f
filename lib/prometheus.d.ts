import type { SmartCRMConsumer } from './index'

/** The part of a prom-client `Registry` this uses (prom-client is an optional peer dependency). */
export interface RegistryLike {
  registerMetric(metric: unknown): void
}

/**
 * Exposes the consumer's figures as collectors of `registry`, read at scrape
 * time, with the names and labels of `metricsText()`. Returns the metric names.
 */
export function register(registry: RegistryLike, source: SmartCRMConsumer): string[]

/** `getMetrics()` in the Prometheus text format, with a `tenant` label. */
export function metricsText(
  metrics: ReturnType<SmartCRMConsumer['getMetrics']>,
  tenant: string,
): string
