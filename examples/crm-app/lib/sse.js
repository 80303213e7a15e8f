'use strict'
// GET /api/events: Server-Sent Events for browsers (design 004's browser
// layer). Each authenticated client is attached to its own tenant's consumer
// (`req.crm`, set by the pool's tenant() middleware) only, so it hears that
// tenant's changes and nobody else's. When the pool releases a tenant, its
// streams are ended (`closeTenant`): the browser's EventSource reconnects
// after `retry`, and that request loads the tenant again.
//
//   event: ready            data: { tenantId, connected }
//   event: cache_invalidate data: { keys: ['credit:crm.leads.create', ...], eventTypes: [...] }
//   event: connection       data: { connected }   (the consumer's link to Redis)
//
// A storm of events costs a client one message per turn of the event loop:
// keys are collected in a Set and flushed on setImmediate; while the socket is
// backed up (a slow client) they keep collecting until it drains.

const HEARTBEAT_MS = 15_000

/**
 * @param {{ onOpen?(req): void, onClose?(req): void, ignoreKeys?: string[] }} [hooks]
 *   `ignoreKeys`: keys not forwarded (e.g. the propagation canary's)
 * @returns {import('express').RequestHandler & { closeAll(): void, closeTenant(id: string): void }}
 */
function eventsRoute(hooks = {}) {
  const ignored = new Set(hooks.ignoreKeys ?? [])
  const open = new Set()

  function events(req, res) {
    const consumer = req.crm
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no', // proxies (nginx) must not buffer the stream
    })
    const send = (event, data) => res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`)
    res.write('retry: 1000\n\n')
    send('ready', { tenantId: consumer.tenantId, connected: consumer.isConnected })

    const keys = new Set()
    const eventTypes = new Set()
    let scheduled = false
    const flush = () => {
      scheduled = false
      if (keys.size === 0 || res.writableEnded) return
      if (res.writableNeedDrain) {
        res.once('drain', schedule)
        return
      }
      send('cache_invalidate', { keys: [...keys], eventTypes: [...eventTypes] })
      keys.clear()
      eventTypes.clear()
    }
    const schedule = () => {
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
    }
    const onChange = (e) => {
      let forwarded = false
      for (const k of e.keys) {
        if (ignored.has(k)) continue
        keys.add(k)
        forwarded = true
      }
      if (!forwarded) return
      eventTypes.add(e.eventType)
      schedule()
    }
    const onConnection = (e) => send('connection', { connected: e.connected })
    consumer.on('change', onChange)
    consumer.on('connection', onConnection)
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS)
    heartbeat.unref()

    const client = {
      tenantId: consumer.tenantId,
      close() {
        if (!open.delete(client)) return
        clearInterval(heartbeat)
        consumer.off('change', onChange)
        consumer.off('connection', onConnection)
        if (hooks.onClose) hooks.onClose(req)
        res.end()
      },
    }
    open.add(client)
    if (hooks.onOpen) hooks.onOpen(req)
    res.on('close', () => client.close())
    res.on('error', () => client.close())
  }

  /** Ends every open stream (for shutdown). */
  events.closeAll = () => {
    for (const client of [...open]) client.close()
  }
  /** Ends the streams of one tenant (released by the pool). */
  events.closeTenant = (tenantId) => {
    for (const client of [...open]) if (client.tenantId === tenantId) client.close()
  }
  return events
}

module.exports = { eventsRoute }
