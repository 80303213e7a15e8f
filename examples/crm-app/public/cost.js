'use strict'
// The cost page: shows one operation's cost and keeps it current.
//
// Design 004's browser layer: the value is kept in localStorage under its
// cache key (`credit:{operationCode}`) and shown at once on the next visit;
// the server's `cache_invalidate` messages (GET /api/events, this tenant's
// changes) drop the key and the page fetches the new value. After every
// (re)connect of the stream the page fetches again: messages sent while it
// was away are gone.
;(function () {
  const params = new URLSearchParams(location.search)
  const operation = params.get('operation') || 'crm.leads.create'
  const cacheKey = `credit:${operation}`
  const $ = (id) => document.getElementById(id)
  const costEl = $('cost')
  const liveEl = $('live')
  let seq = 0
  let shown = null

  $('operation').textContent = operation
  $('op-input').value = operation
  document.title = `Cost of ${operation}`

  function setLive(state, text) {
    liveEl.className = `badge ${state}`
    liveEl.textContent = text
  }

  function render(value, source) {
    const text = value === null ? 'not configured' : String(value)
    if (shown !== null && shown !== text) {
      const li = document.createElement('li')
      li.textContent = `${new Date().toLocaleTimeString()}: ${shown} → ${text}`
      $('history').prepend(li)
      costEl.classList.add('flash')
      setTimeout(() => costEl.classList.remove('flash'), 800)
    }
    shown = text
    costEl.textContent = text
    costEl.dataset.value = value === null ? 'none' : String(value)
    costEl.dataset.source = source
    $('updated').textContent =
      `${source === 'storage' ? 'from this browser' : 'from the server'}, ${new Date().toLocaleTimeString()}`
  }

  function fromStorage() {
    try {
      const held = JSON.parse(localStorage.getItem(cacheKey))
      if (held && 'value' in held) render(held.value, 'storage')
    } catch {
      localStorage.removeItem(cacheKey)
    }
  }

  async function refresh() {
    const mine = ++seq
    let res
    try {
      res = await fetch(`/api/credits/check/${encodeURIComponent(operation)}`, {
        credentials: 'same-origin',
        cache: 'no-store',
      })
    } catch {
      return // offline: keep what is shown; the stream's reconnect fetches again
    }
    if (mine !== seq) return // a newer fetch has started: its answer wins
    if (res.status === 401) {
      $('signin').hidden = false
      setLive('bad', 'signed out')
      return
    }
    if (res.status === 403) {
      // a tenant the Wrapper refuses, or an account that is not active
      const body = await res.json().catch(() => ({}))
      if (mine === seq) setLive('bad', body.error || 'not allowed')
      return
    }
    if (res.status === 404) {
      localStorage.removeItem(cacheKey)
      render(null, 'server')
      return
    }
    if (!res.ok) return
    const body = await res.json()
    if (mine !== seq) return
    localStorage.setItem(cacheKey, JSON.stringify({ value: body.creditCost, at: Date.now() }))
    render(body.creditCost, 'server')
  }

  fromStorage()
  const stream = new EventSource('/api/events')
  stream.addEventListener('ready', () => {
    setLive('ok', 'live')
    refresh()
  })
  stream.addEventListener('cache_invalidate', (e) => {
    const { keys } = JSON.parse(e.data)
    if (keys.includes(cacheKey)) {
      localStorage.removeItem(cacheKey)
      refresh()
    }
  })
  stream.addEventListener('connection', (e) => {
    const { connected } = JSON.parse(e.data)
    setLive(connected ? 'ok' : 'warn', connected ? 'live' : 'server lost Redis')
    if (connected) refresh()
  })
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) setLive('bad', 'stream closed')
    else setLive('warn', 'reconnecting')
    refresh()
  }
  $('pick').addEventListener('submit', (e) => {
    e.preventDefault()
    const op = $('op-input').value.trim()
    if (op) location.search = `?operation=${encodeURIComponent(op)}`
  })
})()
