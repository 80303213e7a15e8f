'use strict'
// Shared by the app's tests: the real stack (redis-server, the multi-tenant
// simulator process, a tenant pool from the installed tarball) and the app on
// a port.

const { waitFor } = require('smart-crm-consumer/test-helpers')
const { startStack } = require('../lib/stack.js')
const { createApp } = require('../app.js')

/** Starts the stack and the app (listening on a free port); `stop()` tears both down. */
async function startApp(stackOptions = {}) {
  const stack = await startStack(stackOptions)
  const app = createApp({ pool: stack.pool })
  const server = app.listen(0, '127.0.0.1')
  await new Promise((resolve, reject) => {
    server.once('listening', resolve)
    server.once('error', reject)
  })
  const url = `http://127.0.0.1:${server.address().port}`
  return {
    ...stack,
    app,
    server,
    url,
    /** The simulator: `{ url, tenants, tenant(id) }`. */
    sim: stack.wrapper,
    /** The loaded consumer of `tenant` in the pool, or null. */
    consumer: (tenant) => stack.pool.peek(tenant),
    /** The admin API of `tenant` at the simulator. */
    wrapper: (tenant) => stack.wrapper.tenant(tenant),
    async stop() {
      app.locals.crm.shutdown()
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
      await stack.stop()
    },
  }
}

const auth = (token) => ({ Authorization: `Bearer ${token}` })

/**
 * Reads a Server-Sent Events stream: every message (`{ event, data }`) is kept
 * in `messages`; `first(predicate, timeoutMs)` resolves to the first one, already
 * received or still to come, that matches.
 */
async function openEvents(url, headers = {}) {
  const controller = new AbortController()
  const res = await fetch(url, { headers, signal: controller.signal })
  const messages = []
  const waiters = new Set()
  let buffer = ''
  const deliver = (msg) => {
    messages.push(msg)
    for (const w of [...waiters]) {
      if (w.match(msg)) {
        waiters.delete(w)
        clearTimeout(w.timer)
        w.resolve(msg)
      }
    }
  }
  const done = (async () => {
    if (!res.ok) return
    const decoder = new TextDecoder()
    try {
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk, { stream: true })
        let i
        while ((i = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, i)
          buffer = buffer.slice(i + 2)
          let event = 'message'
          const data = []
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) event = line.slice(7)
            else if (line.startsWith('data: ')) data.push(line.slice(6))
          }
          if (data.length) deliver({ event, data: JSON.parse(data.join('\n')) })
        }
      }
    } catch {
      // aborted
    }
  })()
  return {
    status: res.status,
    headers: res.headers,
    messages,
    /** Resolves when the stream has ended (the server closed it, or close()). */
    ended: done,
    first(match, timeoutMs = 5000) {
      const found = messages.find(match)
      if (found) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const w = { match, resolve }
        w.timer = setTimeout(() => {
          waiters.delete(w)
          reject(new Error(`no matching SSE message within ${timeoutMs} ms`))
        }, timeoutMs)
        waiters.add(w)
      })
    },
    async close() {
      controller.abort()
      await done
    },
  }
}

module.exports = { startApp, auth, openEvents, waitFor }
