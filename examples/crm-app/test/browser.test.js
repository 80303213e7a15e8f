'use strict'
// End to end in a real browser: Debian's chromium driven by playwright-core.
// Opens the dashboard and the cost page, changes the cost at the Wrapper
// simulator (its admin API, which publishes the signed event), and asserts the
// page shows the new cost within 1 s, without a reload. The dashboard's pool
// view: a row per loaded tenant with its own figures, a tenant's detail on a
// click, a release and a reload shown as they happen. Screenshots of the pages
// are kept in artifacts/ (gitignored).

const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { performance } = require('node:perf_hooks')
const { chromium } = require('playwright-core')

const { startApp } = require('./helpers.js')

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'
const ARTIFACTS = path.join(__dirname, '..', 'artifacts')
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

let s
let context
let profileDir

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: install it with  apt-get install -y chromium`)
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true })
  s = await startApp({ canaryMs: 250 })
  profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'crm-app-chromium-'))
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1280, height: 900 },
  })
})

after(async () => {
  if (context) await context.close()
  if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true })
  if (s) await s.stop()
})

test('the cost page shows a cost changed at the Wrapper within 1 s, without a reload', async (t) => {
  const dashboard = await context.newPage()
  await dashboard.goto(`${s.url}/auth/demo-login?token=demo-dana&next=/dashboard`)
  assert.equal(new URL(dashboard.url()).pathname, '/dashboard')
  await dashboard.waitForFunction(
    () =>
      document.getElementById('conn').textContent === 'connected' &&
      Number(document.body.dataset.samples) >= 3,
    null,
    { timeout: 15_000 },
  )
  assert.equal(await dashboard.textContent('#tenant'), 'acme')

  const page = await context.newPage()
  const errors = []
  page.on('pageerror', (err) => errors.push(err.message))
  await page.goto(`${s.url}/cost?operation=crm.leads.create`)
  await page.waitForFunction(
    () =>
      document.getElementById('cost').dataset.value === '2.5' &&
      document.getElementById('live').textContent === 'live',
    null,
    { timeout: 10_000 },
  )
  await page.evaluate(() => (window.__sameDocument = true))
  let navigations = 0
  page.on('framenavigated', (frame) => {
    if (frame === page.mainFrame()) navigations++
  })

  const t0 = performance.now()
  const shown = page.waitForFunction(
    () => document.getElementById('cost').dataset.value === '7.5',
    null,
    { timeout: 1000, polling: 'raf' },
  )
  await s.wrapper('acme').setCreditCost('crm.leads.create', 7.5)
  await shown
  const elapsed = performance.now() - t0
  assert.ok(elapsed < 1000, `shown after ${elapsed.toFixed(0)} ms`)
  t.diagnostic(`Wrapper change -> shown in the browser: ${elapsed.toFixed(1)} ms`)

  assert.equal(await page.evaluate(() => window.__sameDocument), true, 'no reload')
  assert.equal(navigations, 0)
  assert.equal(await page.textContent('#cost'), '7.5')
  assert.match(await page.textContent('#history'), /2\.5 → 7\.5/)
  assert.equal(
    await page.evaluate(() => JSON.parse(localStorage.getItem('credit:crm.leads.create')).value),
    7.5,
  )
  assert.deepEqual(errors, [])

  // A second change, the other way, arrives the same way.
  const t1 = performance.now()
  const back = page.waitForFunction(
    () => document.getElementById('cost').dataset.value === '3',
    null,
    { timeout: 1000, polling: 'raf' },
  )
  await s.wrapper('acme').setCreditCost('crm.leads.create', 3)
  await back
  assert.ok(performance.now() - t1 < 1000)

  await page.screenshot({ path: path.join(ARTIFACTS, 'cost-page.png') })

  // Some reference reads (Dana may read profiles), so both tiers show a hit rate.
  const statuses = await page.evaluate(async () => {
    const out = []
    for (const id of ['u-dana', 'u-alice', 'u-dana', 'u-alice', 'u-dana']) {
      out.push((await fetch(`/api/users/${id}`)).status)
    }
    return out
  })
  assert.deepEqual(statuses, [200, 200, 200, 200, 200])

  // The dashboard has counted those events by its next poll.
  await dashboard.waitForFunction(() => Number(document.body.dataset.samples) >= 8, null, {
    timeout: 15_000,
  })
  await dashboard.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true })
  assert.ok(fs.statSync(path.join(ARTIFACTS, 'dashboard.png')).size > 10_000)
})

test('the cost page of a user of another tenant does not move', async () => {
  const other = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS })
  try {
    const ctx = await other.newContext()
    const page = await ctx.newPage()
    await page.goto(`${s.url}/auth/demo-login?token=demo-globex-alice&next=/cost`)
    await page.waitForFunction(
      () =>
        document.getElementById('cost').dataset.value === '4' &&
        document.getElementById('live').textContent === 'live',
      null,
      { timeout: 10_000 },
    )
    // Every value the page shows from now on.
    await page.evaluate(() => {
      const cost = document.getElementById('cost')
      window.__values = []
      new MutationObserver(() => window.__values.push(cost.dataset.value)).observe(cost, {
        attributes: true,
        attributeFilter: ['data-value'],
      })
    })
    // acme's change is not globex's: when globex's own later change shows,
    // acme's value has never appeared.
    await s.wrapper('acme').setCreditCost('crm.leads.create', 9)
    await s.wrapper('globex').setCreditCost('crm.leads.create', 2)
    await page.waitForFunction(() => document.getElementById('cost').dataset.value === '2', null, {
      timeout: 1000,
    })
    const values = await page.evaluate(() => window.__values)
    assert.ok(values.includes('2'), JSON.stringify(values))
    assert.ok(!values.includes('9'), JSON.stringify(values))
  } finally {
    await other.close()
  }
})

test("the dashboard's pool view: a row per tenant, its own figures, its detail on a click", async () => {
  const page = await context.newPage() // signed in as Dana (acme) by the first test
  const errors = []
  page.on('pageerror', (err) => errors.push(err.message))
  await page.goto(`${s.url}/dashboard`)
  const cell = (tenant, field) =>
    page.textContent(`#tenants tr[data-tenant="${tenant}"] td[data-field="${field}"]`)
  await page.waitForFunction(
    () =>
      document.getElementById('pool-conn').textContent === 'link up' &&
      document.querySelectorAll('#tenants tbody tr').length === 2,
    null,
    { timeout: 10_000 },
  )
  assert.deepEqual(
    await page.$$eval('#tenants tbody tr', (rows) => rows.map((r) => r.dataset.tenant)),
    ['acme', 'globex'],
  )
  assert.equal(await page.textContent('#pool-count'), '2 tenants loaded')
  // Dana's tenant is the one shown first.
  assert.equal(await page.getAttribute('#tenants tr.selected', 'data-tenant'), 'acme')
  assert.equal(await page.textContent('#tenant'), 'acme')

  // Reads of globex's reference data show in globex's row, not in acme's.
  const acmeRefBefore = await cell('acme', 'referenceHitRate')
  assert.equal(await cell('globex', 'referenceHitRate'), '–')
  for (let i = 0; i < 2; i++) {
    const r = await fetch(`${s.url}/api/users/u-alice`, {
      headers: { Authorization: 'Bearer demo-globex-alice' },
    })
    assert.equal(r.status, 200)
  }
  await page.waitForFunction(
    () =>
      document.querySelector('#tenants tr[data-tenant="globex"] td[data-field="referenceHitRate"]')
        .textContent === '50.0 %',
    null,
    { timeout: 5000 },
  )
  assert.equal(await cell('acme', 'referenceHitRate'), acmeRefBefore)

  // A click on globex's row shows its detail.
  await page.click('#tenants tr[data-tenant="globex"]')
  await page.waitForFunction(
    () =>
      document.getElementById('tenant').textContent === 'globex' &&
      document.getElementById('conn').textContent === 'connected',
    null,
    { timeout: 5000 },
  )
  assert.equal(await page.getAttribute('#tenants tr.selected', 'data-tenant'), 'globex')
  assert.equal(new URL(page.url()).searchParams.get('tenant'), 'globex')
  assert.match(await page.textContent('#rates'), /Reference · 1 of 2/)
  await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-pool.png'), fullPage: true })

  // Released: its row goes, its detail says so, the log shows it; its next request loads it again.
  await s.pool.release('globex')
  await page.waitForFunction(
    () =>
      document.querySelectorAll('#tenants tbody tr').length === 1 &&
      !document.getElementById('not-loaded').hidden,
    null,
    { timeout: 5000 },
  )
  assert.match(await page.textContent('#pool-log'), /globex released \(release\)/)
  const r = await fetch(`${s.url}/api/credits/check/crm.leads.create`, {
    headers: { Authorization: 'Bearer demo-globex-alice' },
  })
  assert.equal(r.status, 200)
  await page.waitForFunction(
    () =>
      document.querySelectorAll('#tenants tbody tr').length === 2 &&
      document.getElementById('not-loaded').hidden &&
      document.getElementById('tenant').textContent === 'globex',
    null,
    { timeout: 5000 },
  )
  assert.match(await page.textContent('#pool-log li'), /globex loaded/)
  // A fresh load: its reference reads start over.
  assert.equal(await cell('globex', 'referenceHitRate'), '–')
  assert.deepEqual(errors, [])
})
