'use strict'
// What the dashboard shows for one tenant's consumer, beyond getMetrics() and
// health(): the propagation latency from the Wrapper to this process, and the
// history of the connection state.
//
// Propagation latency is measured with a canary: the Wrapper sets the active
// config `propagation-canary` to `{ sentAt, seq }` every second (the
// simulator's --canary-ms), and publishes it like any change. When the
// consumer reports the change, the time since `sentAt` is how long a change
// took to reach this process: Wrapper → Redis → the consumer's core → the JS
// replica → the 'change' event. Both clocks are this machine's; across hosts
// this needs synchronised clocks (NTP), like any one-way latency.

const { performance } = require('node:perf_hooks')

const nowMs = () => performance.timeOrigin + performance.now()

function percentile(sorted, p) {
  if (sorted.length === 0) return null
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

class LiveStats {
  /**
   * @param {import('smart-crm-consumer').SmartCRMConsumer} consumer
   * @param {{ canaryConfigId?: string, maxSamples?: number }} [options]
   */
  constructor(consumer, { canaryConfigId = 'propagation-canary', maxSamples = 300 } = {}) {
    this.consumer = consumer
    this.canaryKey = `config:${canaryConfigId}`
    this.canaryConfigId = canaryConfigId
    this.maxSamples = maxSamples
    /** `[epoch ms, latency ms]`, oldest first. */
    this.samples = []
    /** `{ at, connected }`, oldest first (at most 50). */
    this.connectionLog = [{ at: Date.now(), connected: consumer.isConnected }]
    this.sseClients = 0
    this._lastSeq = null
    this._onChange = (e) => {
      if (e.keys.includes(this.canaryKey)) this._canary()
    }
    this._onConnection = (e) => {
      this.connectionLog.push({ at: Date.now(), connected: e.connected })
      if (this.connectionLog.length > 50) this.connectionLog.shift()
    }
    consumer.on('change', this._onChange)
    consumer.on('connection', this._onConnection)
  }

  _canary() {
    const value = this.consumer.getActiveConfig(this.canaryConfigId)
    if (!value || typeof value.sentAt !== 'number' || value.seq === this._lastSeq) return
    this._lastSeq = value.seq
    const latency = nowMs() - value.sentAt
    this.samples.push([Date.now(), Math.max(0, Math.round(latency * 1000) / 1000)])
    if (this.samples.length > this.maxSamples)
      this.samples.splice(0, this.samples.length - this.maxSamples)
  }

  /** Latency summary over the kept samples (ms), or nulls before the first one. */
  latency() {
    const sorted = this.samples.map((s) => s[1]).sort((a, b) => a - b)
    return {
      count: sorted.length,
      last: this.samples.length ? this.samples[this.samples.length - 1][1] : null,
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      max: sorted.length ? sorted[sorted.length - 1] : null,
    }
  }

  /** Everything the dashboard draws, as JSON. */
  snapshot() {
    return {
      tenantId: this.consumer.tenantId,
      at: Date.now(),
      health: this.consumer.health(),
      metrics: this.consumer.getMetrics(),
      latency: { ...this.latency(), samples: this.samples },
      connectionLog: this.connectionLog,
      sseClients: this.sseClients,
    }
  }

  close() {
    this.consumer.off('change', this._onChange)
    this.consumer.off('connection', this._onConnection)
  }
}

module.exports = { LiveStats, percentile }
