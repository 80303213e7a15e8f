'use strict'
// The dashboard: polls the pool view (GET /ops/pool) once a second and draws
// it: the pool's link, its totals, a row per loaded tenant, the recent loads
// and releases. Below, the detail of one tenant (GET /ops/pool/tenants/:id):
// the signed-in user's tenant at first (or ?tenant=), another one on a click
// in the table. Rates per second come from the difference between two polls;
// the latency samples come from the server (the Wrapper's canary).
;(function () {
  const params = new URLSearchParams(location.search)
  const intervalMs = Math.max(200, Number(params.get('interval')) || 1000)
  const WINDOW_MS = 3 * 60 * 1000
  const SVG = 'http://www.w3.org/2000/svg'
  const $ = (id) => document.getElementById(id)
  /** The tenant whose detail is shown (null: the viewer's, else the first loaded). */
  let selected = params.get('tenant')
  // The detail's history, for one load of one tenant.
  let previous = null
  let epsHistory = []
  let detailOf = null
  // The pool view's previous poll, for events/s.
  let previousPool = null

  const pct = (x) => `${(x * 100).toFixed(1)} %`
  const num = (x) => (x === null || x === undefined ? '–' : Number(x).toLocaleString('en'))
  const ms = (x) =>
    x === null || x === undefined
      ? '–'
      : x < 1
        ? `${Math.round(x * 1000)} µs`
        : `${x.toFixed(1)} ms`
  const bytes = (n) =>
    n < 1024
      ? `${n} B`
      : n < 1048576
        ? `${(n / 1024).toFixed(1)} KiB`
        : `${(n / 1048576).toFixed(1)} MiB`
  const ago = (t) => {
    if (!t) return 'never'
    const s = Math.max(0, (Date.now() - t) / 1000)
    return s < 1 ? 'just now' : s < 120 ? `${s.toFixed(0)} s ago` : `${(s / 60).toFixed(0)} min ago`
  }

  function kv(el, rows) {
    el.replaceChildren()
    for (const [k, v] of rows) {
      const dt = document.createElement('dt')
      dt.textContent = k
      const dd = document.createElement('dd')
      dd.textContent = v
      el.append(dt, dd)
    }
  }

  function badge(el, state, text) {
    el.className = `badge ${state}`
    el.textContent = text
  }

  function rates(m, el = $('rates')) {
    el.replaceChildren()
    const rows = [
      ['Critical', m.criticalHitRate, m.criticalHits, m.criticalMisses],
      ['Reference', m.referenceHitRate, m.referenceHits, m.referenceMisses],
      [
        'Overall',
        m.overallHitRate,
        m.criticalHits + m.referenceHits,
        m.criticalMisses + m.referenceMisses,
      ],
    ]
    for (const [label, rate, hits, misses] of rows) {
      const head = document.createElement('div')
      head.className = 'kv'
      head.innerHTML = '<dt></dt><dd></dd>'
      head.firstChild.textContent = `${label} · ${num(hits)} of ${num(hits + misses)}`
      head.lastChild.textContent = hits + misses === 0 ? 'no reads yet' : pct(rate)
      const bar = document.createElement('div')
      bar.className = 'bar'
      const fill = document.createElement('span')
      fill.style.width = `${(rate * 100).toFixed(1)}%`
      bar.append(fill)
      el.append(head, bar)
    }
  }

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name)
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v)
    if (text !== undefined) node.textContent = text
    return node
  }

  function niceMax(v) {
    if (!(v > 0)) return 1
    const p = 10 ** Math.floor(Math.log10(v))
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p
    return 10 * p
  }

  /** A time series as a line on a time axis, with optional horizontal marks. */
  function chart(svg, points, { format, marks = [], color = '#2f6fde', now }) {
    const w = svg.clientWidth || 800
    const h = svg.clientHeight || 200
    const pad = { l: 56, r: 12, t: 10, b: 22 }
    svg.setAttribute('viewBox', `0 0 ${w} ${h}`)
    svg.replaceChildren()
    // The time axis spans the data (30 s at least, 3 min at most).
    const span = points.length ? now - points[0][0] : 0
    const windowMs = Math.min(WINDOW_MS, Math.max(30_000, Math.ceil(span / 30_000) * 30_000))
    const t0 = now - windowMs
    const visible = points.filter((p) => p[0] >= t0)
    const top = niceMax(
      Math.max(0, ...visible.map((p) => p[1]), ...marks.map((m) => m.value)) * 1.1,
    )
    const x = (t) => pad.l + ((t - t0) / windowMs) * (w - pad.l - pad.r)
    const y = (v) => h - pad.b - (v / top) * (h - pad.t - pad.b)
    for (let i = 0; i <= 4; i++) {
      const v = (top / 4) * i
      svg.append(el('line', { x1: pad.l, x2: w - pad.r, y1: y(v), y2: y(v), stroke: '#e2e5eb' }))
      svg.append(el('text', { x: pad.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, format(v)))
    }
    const step = windowMs <= 60_000 ? 10 : 30
    for (let s = 0; s <= windowMs / 1000; s += step) {
      const t = now - s * 1000
      svg.append(
        el('text', { x: x(t), y: h - 6, 'text-anchor': 'middle' }, s === 0 ? 'now' : `-${s}s`),
      )
    }
    for (const m of marks) {
      if (m.value === null) continue
      svg.append(
        el('line', {
          x1: pad.l,
          x2: w - pad.r,
          y1: y(m.value),
          y2: y(m.value),
          stroke: m.color,
          'stroke-dasharray': '5 4',
        }),
      )
      svg.append(el('text', { x: w - pad.r - 4, y: y(m.value) - 4, 'text-anchor': 'end' }, m.label))
    }
    if (visible.length === 0) {
      svg.append(el('text', { x: w / 2, y: h / 2, 'text-anchor': 'middle' }, 'waiting for data…'))
      return
    }
    const d = visible.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ')
    svg.append(el('polyline', { points: d, fill: 'none', stroke: color, 'stroke-width': 1.8 }))
    if (visible.length <= 240) {
      for (const p of visible)
        svg.append(el('circle', { cx: x(p[0]), cy: y(p[1]), r: 2.2, fill: color }))
    }
  }

  const f1 = (v) => (v === null ? '–' : v.toFixed(v < 10 ? 1 : 0))
  const rateText = (rate, reads) => (reads === 0 ? '–' : pct(rate))

  /** The pool view: link, totals, one row per tenant, loads and releases. */
  function drawPool(v) {
    const p = v.pool
    badge($('pool-conn'), p.connected ? 'ok' : 'bad', p.connected ? 'link up' : 'link down')
    $('pool-count').textContent =
      `${p.tenants} tenant${p.tenants === 1 ? '' : 's'} loaded` +
      (p.degradedTenants.length ? `, ${p.degradedTenants.length} degraded` : '')
    $('updated').textContent = `updated ${new Date(v.at).toLocaleTimeString()}`
    document.body.dataset.tenants = String(p.tenants)
    kv($('pool-kv'), [
      ['Tenants loaded', num(p.tenants)],
      ['Loads in flight', num(p.loadsInFlight)],
      ['Loads / releases seen', `${num(p.loads)} / ${num(p.releases)}`],
      ['Degraded tenants', p.degradedTenants.length ? p.degradedTenants.join(', ') : 'none'],
      ['Link reconnects', num(p.reconnects)],
      ['Queue overflows', num(p.queueOverflows)],
    ])
    const t = v.totals
    rates(t, $('pool-rates'))

    // events/s, all tenants and each: the difference with the previous poll
    const dt = previousPool ? (v.at - previousPool.at) / 1000 : 0
    const perSecond = (now, before) => (dt > 0 && before !== undefined ? (now - before) / dt : null)
    $('pool-eps').textContent = f1(
      previousPool ? perSecond(t.eventsReceived, previousPool.received) : null,
    )
    kv($('pool-events'), [
      ['Received (total)', num(t.eventsReceived)],
      ['Applied (total)', num(t.eventsApplied)],
      ['Rejected (total)', num(t.eventsRejected)],
      ['Wrapper requests', num(t.wrapperRequests)],
    ])

    const ids = v.tenants.map((r) => r.tenantId)
    if (selected === null)
      selected = v.viewer && ids.includes(v.viewer) ? v.viewer : (ids[0] ?? null)
    const body = $('tenants').tBodies[0]
    body.replaceChildren()
    for (const r of v.tenants) {
      const tr = document.createElement('tr')
      tr.dataset.tenant = r.tenantId
      tr.tabIndex = 0
      if (r.tenantId === selected) tr.className = 'selected'
      const state = !r.connected ? 'disconnected' : r.degraded ? 'degraded' : 'ok'
      const before = previousPool ? previousPool.tenants[r.tenantId] : undefined
      const cells = [
        ['tenant', r.tenantId],
        ['state', state],
        ['criticalHitRate', rateText(r.criticalHitRate, r.criticalReads)],
        ['referenceHitRate', rateText(r.referenceHitRate, r.referenceReads)],
        ['reads', num(r.totalRequests)],
        ['eps', f1(perSecond(r.eventsReceived, before))],
        ['eventsReceived', num(r.eventsReceived)],
        ['eventsRejected', num(r.eventsRejected)],
        ['cacheSize', num(r.cacheSize)],
        ['latencyP50', ms(r.latencyP50)],
        ['sseClients', num(r.sseClients)],
      ]
      for (const [field, text] of cells) {
        const td = document.createElement('td')
        td.dataset.field = field
        td.textContent = text
        if (field === 'state') {
          const b = document.createElement('span')
          b.className = `badge ${state === 'ok' ? 'ok' : state === 'degraded' ? 'warn' : 'bad'}`
          b.textContent = text
          td.replaceChildren(b)
        }
        tr.append(td)
      }
      body.append(tr)
    }
    $('no-tenants').hidden = v.tenants.length > 0
    previousPool = {
      at: v.at,
      received: t.eventsReceived,
      tenants: Object.fromEntries(v.tenants.map((r) => [r.tenantId, r.eventsReceived])),
    }

    const log = $('pool-log')
    log.replaceChildren()
    for (const e of [...v.log].reverse().slice(0, 20)) {
      const li = document.createElement('li')
      const why = e.event === 'released' ? ` (${e.reason})` : ''
      li.textContent = `${new Date(e.at).toLocaleTimeString()}: ${e.tenantId} ${e.event}${why}`
      log.append(li)
    }
    if (v.log.length === 0) log.innerHTML = '<li class="muted">none yet</li>'
  }

  /** One tenant's detail. */
  function draw(s) {
    const m = s.metrics
    const h = s.health
    if (detailOf !== `${s.tenantId}@${s.loadedAt}`) {
      // another tenant, or the same one loaded again: its counters start over
      detailOf = `${s.tenantId}@${s.loadedAt}`
      previous = null
      epsHistory = []
    }
    $('not-loaded').hidden = true
    $('detail').hidden = false
    $('tenant').textContent = s.tenantId
    document.body.dataset.selected = s.tenantId
    badge($('conn'), h.connected ? 'ok' : 'bad', h.connected ? 'connected' : 'disconnected')
    badge(
      $('ready'),
      !h.ready ? 'warn' : h.degraded ? 'warn' : 'ok',
      !h.ready ? 'loading' : h.degraded ? `degraded: ${h.reason}` : 'healthy',
    )
    $('loaded-at').textContent = `loaded ${ago(s.loadedAt)}`
    rates(m)
    kv($('sizes'), [
      ['Critical entries', num(m.criticalCacheSize)],
      ['Reference entries', num(m.referenceCacheSize)],
      ['Reference bytes', bytes(m.referenceCacheBytes || 0)],
      ['Total entries', num(m.cacheSize)],
    ])

    const rejected = Object.values(m.eventsRejected || {}).reduce((a, b) => a + b, 0)
    let eps = null
    let rps = null
    let aps = null
    if (previous) {
      const dt = (s.at - previous.at) / 1000
      if (dt > 0) {
        eps = (m.eventsReceived - previous.received) / dt
        aps = (m.eventsApplied - previous.applied) / dt
        rps = (rejected - previous.rejected) / dt
        epsHistory.push([s.at, eps])
        while (epsHistory.length && epsHistory[0][0] < s.at - WINDOW_MS) epsHistory.shift()
      }
    }
    previous = { at: s.at, received: m.eventsReceived, applied: m.eventsApplied, rejected }
    $('eps').textContent = f1(eps)
    kv($('events'), [
      ['Applied / s', f1(aps)],
      ['Received (total)', num(m.eventsReceived)],
      ['Applied (total)', num(m.eventsApplied)],
      ['Browsers listening (SSE)', num(s.sseClients)],
    ])
    $('rejected').textContent = num(rejected)
    const reasons = Object.entries(m.eventsRejected || {}).filter(([, n]) => n > 0)
    kv($('reasons'), [
      ['Rejected / s', f1(rps)],
      ...(reasons.length ? reasons.map(([r, n]) => [r, num(n)]) : [['by reason', 'none']]),
    ])
    const changes = s.connectionLog.length - 1
    kv($('connection'), [
      ['Redis subscription', h.connected ? 'up' : 'down'],
      ['Last event', ago(h.lastEventAt)],
      ['Last full load', ago(h.lastSyncAt)],
      ['Reconnects', num(m.reconnects)],
      ['Resyncs', num(m.resyncs)],
      ['State changes seen', num(changes)],
    ])
    kv($('wrapper'), [
      ['Requests', num(m.wrapperRequests)],
      ['Errors', num(m.wrapperErrors)],
      ['Coalesced misses', num(m.coalescedRequests)],
      ['Stale served', num(m.staleServed)],
    ])

    const L = s.latency
    $('lat-last').textContent = ms(L.last)
    $('lat-p50').textContent = ms(L.p50)
    $('lat-p99').textContent = ms(L.p99)
    $('lat-max').textContent = ms(L.max)
    $('lat-count').textContent = `${L.count} samples of the Wrapper's canary`
    document.body.dataset.samples = String(L.count)
    chart($('latency-chart'), L.samples, {
      now: s.at,
      format: ms,
      marks: [
        { value: L.p50, label: 'p50', color: '#1f9d55' },
        { value: L.p99, label: 'p99', color: '#d98c00' },
      ],
    })
    chart($('eps-chart'), epsHistory, { now: s.at, format: (v) => f1(v), color: '#7b4bd6' })
  }

  function notLoaded(tenantId) {
    detailOf = null
    $('tenant').textContent = tenantId
    document.body.dataset.selected = tenantId
    $('not-loaded-id').textContent = tenantId
    $('not-loaded').hidden = false
    $('detail').hidden = true
    badge($('conn'), 'warn', 'not loaded')
    badge($('ready'), 'warn', 'not loaded')
    $('loaded-at').textContent = ''
  }

  const get = (path) => fetch(path, { credentials: 'same-origin', cache: 'no-store' })

  let timer = null
  let round = 0
  /** One round now; select() starts one at once, and only the latest round schedules the next. */
  async function poll() {
    clearTimeout(timer)
    const mine = ++round
    try {
      const res = await get('/ops/pool')
      if (!res.ok) throw new Error(`server answered ${res.status}`)
      const view = await res.json()
      $('signin').hidden = view.viewer !== null
      drawPool(view)
      if (selected !== null) {
        const id = selected
        const d = await get(`/ops/pool/tenants/${encodeURIComponent(id)}`)
        if (mine !== round || id !== selected) return // a newer round draws
        if (d.status === 404) notLoaded(id)
        else if (d.ok) draw(await d.json())
      } else $('detail').hidden = true
    } catch (err) {
      badge($('pool-conn'), 'bad', err instanceof TypeError ? 'app unreachable' : err.message)
    }
    if (mine === round) timer = setTimeout(poll, intervalMs)
  }

  function select(tenantId) {
    if (!tenantId || tenantId === selected) return
    selected = tenantId
    const url = new URL(location.href)
    url.searchParams.set('tenant', tenantId)
    history.replaceState(null, '', url)
    for (const tr of $('tenants').tBodies[0].rows)
      tr.classList.toggle('selected', tr.dataset.tenant === tenantId)
    poll()
  }
  $('tenants').addEventListener('click', (e) => {
    const tr = e.target.closest('tr[data-tenant]')
    if (tr) select(tr.dataset.tenant)
  })
  $('tenants').addEventListener('keydown', (e) => {
    const tr = e.target.closest('tr[data-tenant]')
    if (tr && (e.key === 'Enter' || e.key === ' ')) {
      e.preventDefault()
      select(tr.dataset.tenant)
    }
  })
  poll()
})()
