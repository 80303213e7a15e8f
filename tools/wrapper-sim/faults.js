'use strict'
// Wrapper simulator: requests on demand. Faults (errors, delays, resets, hangs,
// truncated, invalid or endless bodies), gates that hold requests, waiters for
// the next matching request, and counting of the request log.

const { JSON_TYPE, send, bodyText } = require('./http.js')

/** A string prefix of the raw path, a RegExp on the raw path, or a predicate on the request record. */
function toMatcher(match) {
  if (match === undefined || match === null) return () => true
  if (typeof match === 'string') return (r) => r.path.startsWith(match)
  if (match instanceof RegExp) {
    return (r) => {
      match.lastIndex = 0
      return match.test(r.path)
    }
  }
  if (typeof match === 'function') return (r) => Boolean(match(r))
  throw new TypeError('match must be a string prefix, a RegExp or a function')
}

/** Methods of WrapperSim (copied onto its prototype by index.js). */
class FaultMethods {
  _takeFault(record) {
    for (const fault of this._faults) {
      if (fault.remaining > 0 && fault.match(record)) {
        fault.remaining--
        fault.applied++
        if (fault.remaining === 0) this._faults.splice(this._faults.indexOf(fault), 1)
        return fault.spec
      }
    }
    return null
  }

  async _applyFault(spec, req, res, respond) {
    if (spec.delayMs) {
      await this._sleep(spec.delayMs)
      if (this._stopped) return
    }
    const overrides = 'json' in spec || 'body' in spec || 'status' in spec
    // `apply: true` runs the real handler (and its side effects) before misbehaving
    const normal = spec.apply || spec.truncate || !overrides ? respond() : null
    if (spec.hang) return // answered never; stop() destroys the socket
    if (spec.flood) return this._flood(spec, res)
    if (spec.reset) {
      req.socket.destroy()
      return
    }
    if (spec.truncate) {
      const body = bodyText(normal)
      res.writeHead(normal.status, {
        'Content-Type': JSON_TYPE,
        'Content-Length': body.length + 64,
      })
      res.write(body.subarray(0, Math.floor(body.length / 2)), () => req.socket.destroy())
      return
    }
    const headers = spec.headers
    if ('json' in spec) return send(res, { status: spec.status ?? 200, json: spec.json, headers })
    if ('body' in spec) {
      const raw =
        typeof spec.body === 'string' || Buffer.isBuffer(spec.body)
          ? spec.body
          : JSON.stringify(spec.body)
      return send(res, { status: spec.status ?? 200, raw, headers })
    }
    if ('status' in spec)
      return send(res, { status: spec.status, json: { error: 'injected fault' }, headers })
    send(res, normal)
  }

  /**
   * A response whose chunked body (no Content-Length) never ends: `[0,0,0,…`
   * written as fast as the client reads, until it goes away or the sim stops.
   */
  _flood(spec, res) {
    res.writeHead(spec.status ?? 200, { 'Content-Type': JSON_TYPE, ...spec.headers })
    res.write('[')
    const chunk = Buffer.from('0,'.repeat(8192))
    const pump = () => {
      while (!res.destroyed && !this._stopped) {
        spec.floodedBytes = (spec.floodedBytes ?? 0) + chunk.length
        if (!res.write(chunk)) return // resumed on 'drain'
      }
    }
    res.on('drain', pump)
    pump()
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const entry = { resolve }
      entry.timer = setTimeout(() => {
        this._sleeps.delete(entry)
        resolve()
      }, ms)
      this._sleeps.add(entry)
    })
  }

  // --- public API

  /**
   * Makes matching requests misbehave. `spec`: `{ status, body?, times? }`,
   * `{ delayMs, times? }` (then answers normally, or as the other fields say),
   * `{ reset: true }`, `{ hang: true }`, `{ truncate: true }`, `{ flood: true }` (a 200
   * whose chunked body never ends; `spec.floodedBytes` counts what was written),
   * `{ body: 'not json', status? }`, `{ json: value, status? }`; optional
   * `headers`, and `apply: true` to run the real handler first (e.g. a deduction
   * that is applied but whose answer is lost). `times` defaults to unlimited.
   * The first registered fault that matches applies.
   *
   * @param {string|RegExp|Function} match raw-path prefix, RegExp, or predicate on the request record
   * @param {object} spec
   * @returns {{ remove(): void, readonly applied: number }}
   */
  fault(match, spec) {
    if (!spec || typeof spec !== 'object') throw new TypeError('fault spec must be an object')
    const fault = { match: toMatcher(match), spec, remaining: spec.times ?? Infinity, applied: 0 }
    this._faults.push(fault)
    return {
      remove: () => {
        const i = this._faults.indexOf(fault)
        if (i !== -1) this._faults.splice(i, 1)
      },
      get applied() {
        return fault.applied
      },
    }
  }

  /** Removes every fault. */
  clearFaults() {
    this._faults.length = 0
  }

  /**
   * Holds matching requests until `release()` (then lets later ones through).
   *
   * @returns {{ release(): void, readonly waiting: number }}
   */
  gate(match) {
    const gate = { match: toMatcher(match), held: [] }
    this._gates.add(gate)
    return {
      release: () => {
        this._gates.delete(gate)
        for (const resolve of gate.held.splice(0)) resolve()
      },
      get waiting() {
        return gate.held.length
      },
    }
  }

  /**
   * Resolves to the record of the next matching request arriving after this
   * call; rejects after `timeoutMs`.
   */
  waitForRequest(match, { timeoutMs = 5000 } = {}) {
    const matcher = toMatcher(match)
    return new Promise((resolve, reject) => {
      const waiter = {
        match: matcher,
        resolve: (record) => {
          this._waiters.delete(waiter)
          clearTimeout(waiter.timer)
          resolve(record)
        },
        reject: (err) => {
          this._waiters.delete(waiter)
          clearTimeout(waiter.timer)
          reject(err)
        },
      }
      waiter.timer = setTimeout(
        () =>
          waiter.reject(new Error(`waitForRequest: no matching request within ${timeoutMs} ms`)),
        timeoutMs,
      )
      this._waiters.add(waiter)
    })
  }

  /** How many logged requests match (all when no match is given). */
  count(match) {
    return this.requests.filter(toMatcher(match)).length
  }

  /** Forgets the request log (the array stays the same object). */
  resetCounts() {
    this.requests.length = 0
  }
}

module.exports = { FaultMethods }
