'use strict'
// Tracing through @opentelemetry/api (SPEC §10): with the OpenTelemetry SDK
// registered (BasicTracerProvider + InMemorySpanExporter, AsyncLocalStorage
// context), Wrapper requests, full loads and reference misses are spans,
// children of the caller's active span, whose attributes hold no id, token or
// secret, with status ERROR on failures. Without @opentelemetry/api (hidden
// from a child process) nothing is loaded and every call works the same.

const test = require('ava')
const path = require('node:path')
const { spawn } = require('node:child_process')

const api = require('@opentelemetry/api')
const {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} = require('@opentelemetry/sdk-trace-base')
const { AsyncLocalStorageContextManager } = require('@opentelemetry/context-async-hooks')

const { setup, waitFor, quietLogger } = require('./helpers/fixture.js')
const { startRedis } = require('../tools/test-helpers/index.js')
const { startWrapperSim } = require('../tools/wrapper-sim.js')
const { signMessage, SmartCRMConsumer } = require('../lib/index.js')

const exporter = new InMemorySpanExporter()
api.context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
api.trace.setGlobalTracerProvider(
  new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }),
)
const appTracer = api.trace.getTracer('the-app')

const TOKEN = 'bearer-Tk83hQ'
const SECRET = 'signing-Sx72Lp'

/** Finished spans of one tenant (tests run concurrently; each has its own tenant). */
function spansOf(tenantId) {
  return exporter
    .getFinishedSpans()
    .filter((s) => s.attributes['crm.tenant.id'] === tenantId || s.attributes.tenant === tenantId)
}

const parentId = (s) => s.parentSpanContext?.spanId

/** Runs `fn` inside an active span of the app's own; resolves to `{ parent, value }`. */
function inAppSpan(tenantId, fn) {
  return appTracer.startActiveSpan('app request', { attributes: { tenant: tenantId } }, (parent) =>
    Promise.resolve()
      .then(fn)
      .then(
        (value) => {
          parent.end()
          return { parent, value }
        },
        (err) => {
          parent.end()
          throw err
        },
      ),
  )
}

/** No attribute value and no status message holds an id, the token or the secret. */
function noIdsOrSecrets(t, spans, ids) {
  for (const s of spans) {
    const texts = [s.name, s.status.message ?? '', ...Object.values(s.attributes).map(String)]
    for (const text of texts) {
      for (const bad of [TOKEN, SECRET, ...ids]) t.false(text.includes(bad), `${s.name}: ${text}`)
      t.false(/https?:\/\//.test(text), `${s.name}: a URL in ${text}`)
    }
  }
}

async function traced(t, opts = {}) {
  return setup(t, {
    sim: { token: TOKEN, ...opts.sim },
    consumer: { wrapperToken: TOKEN, signingSecret: SECRET, ...opts.consumer },
    init: opts.init ?? true,
  })
}

test('getUserCredits and deductCredits: CLIENT spans under the caller’s span, route templates, no ids', async (t) => {
  const { consumer, tenantId } = await traced(t)
  const { parent, value } = await inAppSpan(tenantId, async () => {
    const available = await consumer.getUserCredits('u-alice')
    const deducted = await consumer.deductCredits('u-alice', 1, {
      operationCode: 'crm.leads.create',
      idempotencyKey: 'idem-key-5521',
    })
    return { available, deducted }
  })
  t.is(typeof value.available, 'number')
  const spans = spansOf(tenantId)
  const get = spans.find((s) => s.name === 'GET /api/users/{id}/credits')
  const post = spans.find((s) => s.name === 'POST /api/users/{id}/credits/deduct')
  t.truthy(get, spans.map((s) => s.name).join(', '))
  t.truthy(post)
  for (const [s, method, op] of [
    [get, 'GET', 'getUserCredits'],
    [post, 'POST', 'deductCredits'],
  ]) {
    t.is(s.kind, api.SpanKind.CLIENT)
    t.is(parentId(s), parent.spanContext().spanId, `${s.name} is a child of the app's span`)
    t.is(s.spanContext().traceId, parent.spanContext().traceId)
    t.is(s.attributes['http.request.method'], method)
    t.is(s.attributes['url.template'], s.name.split(' ')[1])
    t.is(s.attributes['crm.operation'], op)
    t.is(s.attributes['crm.result'], 'ok')
    t.is(s.status.code, api.SpanStatusCode.UNSET)
  }
  noIdsOrSecrets(t, spans, ['u-alice', 'idem-key-5521'])
})

test('a reference miss is a span under the caller’s span; a hit makes none', async (t) => {
  const { consumer, tenantId } = await traced(t)
  const { parent } = await inAppSpan(tenantId, () => consumer.getUserProfile('u-carol'))
  const misses = () =>
    spansOf(tenantId).filter((s) => s.name === 'smart-crm-consumer getUserProfile')
  t.is(misses().length, 1)
  const [miss] = misses()
  t.is(parentId(miss), parent.spanContext().spanId)
  t.is(miss.kind, api.SpanKind.INTERNAL)
  t.like(miss.attributes, {
    'crm.operation': 'getUserProfile',
    'crm.cache.key_type': 'user',
    'crm.cache.result': 'miss',
    'url.template': '/api/users/{id}/profile',
    'crm.result': 'ok',
  })
  // A hit: answered from the cache, no span.
  await inAppSpan(tenantId, () => consumer.getUserProfile('u-carol'))
  t.is(misses().length, 1)
  // The other kinds name their own routes.
  await consumer.getHierarchy('org-1')
  const h = spansOf(tenantId).find((s) => s.name === 'smart-crm-consumer getHierarchy')
  t.is(h.attributes['url.template'], '/api/hierarchy/{id}')
  t.is(parentId(h), undefined, 'no active span: a root span')
  noIdsOrSecrets(t, spansOf(tenantId), ['u-carol', 'org-1'])
})

test('failures: status ERROR with the code, never the message (which names the path)', async (t) => {
  const { consumer, tenantId, sim } = await traced(t, {
    consumer: { circuitBreaker: { failures: 100, coolDownMs: 5000 } },
  })
  await t.throwsAsync(consumer.getUserProfile('nobody-7731'), { code: 'NOT_FOUND' })
  sim.fault(/^\/api\/users\/u-alice\/credits$/, { status: 503 })
  await t.throwsAsync(consumer.getUserCredits('u-alice'), { code: 'WRAPPER_UNAVAILABLE' })
  await t.throwsAsync(
    consumer.deductCredits('u-alice', 1e9, { operationCode: 'crm.leads.create' }),
    { code: 'INSUFFICIENT_CREDITS' },
  )
  const spans = spansOf(tenantId)
  for (const [name, code] of [
    ['smart-crm-consumer getUserProfile', 'NOT_FOUND'],
    ['GET /api/users/{id}/credits', 'WRAPPER_UNAVAILABLE'],
    ['POST /api/users/{id}/credits/deduct', 'INSUFFICIENT_CREDITS'],
  ]) {
    const s = spans.find((x) => x.name === name)
    t.truthy(s, name)
    t.is(s.status.code, api.SpanStatusCode.ERROR, name)
    t.is(s.status.message, code)
    t.is(s.attributes['error.type'], code)
    t.is(s.attributes['crm.result'], code)
    t.is(s.events.length, 0, 'no exception event (its message would name the path)')
  }
  noIdsOrSecrets(t, spans, ['nobody-7731', 'u-alice'])
})

test('full loads: the initial one under initialize() under the caller’s span, with the core’s times; later ones are root spans', async (t) => {
  const { consumer, tenantId, publish, event } = await traced(t, { init: false })
  const before = Date.now()
  const { parent } = await inAppSpan(tenantId, () => consumer.initialize())
  const after = Date.now()
  const init = spansOf(tenantId).find((x) => x.name === 'smart-crm-consumer initialize')
  t.truthy(init)
  t.is(parentId(init), parent.spanContext().spanId)
  t.is(init.attributes['crm.result'], 'ok')
  const load = spansOf(tenantId).find((x) => x.name === 'smart-crm-consumer full load')
  t.truthy(load)
  t.is(load.attributes['crm.load.reason'], 'initial')
  t.is(load.attributes['crm.load.source'], 'wrapper')
  t.is(parentId(load), init.spanContext().spanId)
  t.is(load.spanContext().traceId, parent.spanContext().traceId)
  const ms = (hr) => hr[0] * 1000 + hr[1] / 1e6
  t.true(ms(load.startTime) >= before - 1 && ms(load.endTime) <= after + 1, 'within initialize()')
  t.true(ms(load.endTime) >= ms(load.startTime))
  // A reload asked by the Wrapper: a root span, though the native callback was
  // set up inside the app's span.
  const resync = event('resync-required', {})
  resync.signature = signMessage(resync, SECRET)
  await inAppSpan(tenantId, () => publish('control', resync))
  await waitFor(() =>
    spansOf(tenantId).some((x) => x.attributes['crm.load.reason'] === 'resync-required'),
  )
  const again = spansOf(tenantId).find((x) => x.attributes['crm.load.reason'] === 'resync-required')
  t.is(again.name, 'smart-crm-consumer full load')
  t.is(parentId(again), undefined)
  t.not(again.spanContext().traceId, parent.spanContext().traceId)
  noIdsOrSecrets(t, spansOf(tenantId), [])
})

test('a full load from the shared snapshot (SPEC §7) says so: crm.load.source snapshot', async (t) => {
  const redis = await startRedis()
  const tenantId = `trs${process.pid}`
  const sim = await startWrapperSim({ tenantId, redisUrl: redis.url })
  const base = {
    tenantId,
    wrapperUrl: sim.url,
    redisUrl: redis.url,
    transport: 'stream',
    resyncJitterMs: 0,
    logger: quietLogger(),
  }
  const first = new SmartCRMConsumer(base)
  const second = new SmartCRMConsumer(base)
  t.teardown(async () => {
    await first.shutdown()
    await second.shutdown()
    await sim.stop()
    await redis.stop()
  })
  await first.initialize()
  // The Wrapper is down: the second instance loads from the snapshot the first stored.
  sim.fault('/api/', { status: 503, json: { error: 'down' } })
  await second.initialize()
  t.is(second.health().source, 'snapshot')
  const loads = spansOf(tenantId).filter((x) => x.name === 'smart-crm-consumer full load')
  t.deepEqual(loads.map((x) => x.attributes['crm.load.source']).sort(), ['snapshot', 'wrapper'])
})

test('initialize() refused by the Wrapper: its span ends with ERROR and WRAPPER_AUTH', async (t) => {
  const { consumer, tenantId } = await traced(t, {
    init: false,
    consumer: { wrapperToken: 'wrong-token-4410', initTimeoutMs: 3000 },
  })
  await t.throwsAsync(
    inAppSpan(tenantId, () => consumer.initialize()),
    { code: 'WRAPPER_AUTH' },
  )
  const init = spansOf(tenantId).find((x) => x.name === 'smart-crm-consumer initialize')
  t.is(init.status.code, api.SpanStatusCode.ERROR)
  t.is(init.attributes['error.type'], 'WRAPPER_AUTH')
  t.false(spansOf(tenantId).some((x) => x.name === 'smart-crm-consumer full load'))
  noIdsOrSecrets(t, spansOf(tenantId), ['wrong-token-4410'])
})

/** Runs `code` in a child Node (optionally with `-r preload`); resolves to its parsed JSON stdout. */
function child(code, env, preload) {
  return new Promise((resolve, reject) => {
    const args = preload ? ['-r', preload, '-e', code] : ['-e', code]
    const p = spawn(process.execPath, args, {
      env: { PATH: process.env.PATH, ...env },
      cwd: path.join(__dirname, '..'),
    })
    let out = ''
    let err = ''
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d) => (err += d))
    const timer = setTimeout(() => p.kill('SIGKILL'), 30_000)
    p.on('exit', (c) => {
      clearTimeout(timer)
      if (c === 0) resolve(JSON.parse(out.trim().split('\n').pop()))
      else reject(new Error(`child exited with ${c}: ${err}`))
    })
  })
}

const CHILD = `
const { SmartCRMConsumer } = require('./lib/index.js')
;(async () => {
  const c = new SmartCRMConsumer({ tenantId: process.env.TENANT, wrapperUrl: process.env.WRAPPER_URL,
    redisUrl: process.env.REDIS_URL, logger: { debug() {}, info() {}, warn() {}, error() {} } })
  await c.initialize()
  const profile = await c.getUserProfile('u-alice')
  const available = await c.getUserCredits('u-alice')
  const { remaining } = await c.deductCredits('u-alice', 1, { operationCode: 'crm.leads.create' })
  const nf = await c.getUserProfile('nobody').catch((e) => e.code)
  await c.shutdown()
  const loaded = Object.keys(require.cache).filter((k) => k.includes('@opentelemetry'))
  console.log(JSON.stringify({ name: profile.name, available, remaining, nf, loaded,
    attempts: globalThis.__otelAttempts ?? null, state: require('./lib/tracing.js')._state() }))
})().catch((e) => { console.error(e); process.exit(1) })
`

async function childSetup(t) {
  const tenantId = `trc${process.pid}-${Math.random().toString(36).slice(2, 8)}`
  const redis = await startRedis()
  const sim = await startWrapperSim({ tenantId })
  t.teardown(async () => {
    await sim.stop()
    await redis.stop()
  })
  return { TENANT: tenantId, WRAPPER_URL: sim.url, REDIS_URL: redis.url }
}

test('without @opentelemetry/api: nothing is loaded, it is looked for once, every call works', async (t) => {
  const env = await childSetup(t)
  const r = await child(CHILD, env, path.join(__dirname, 'fixtures', 'hide-otel.js'))
  t.like(r, { name: 'Alice Example', nf: 'NOT_FOUND', state: false })
  t.is(r.remaining, r.available - 1)
  t.deepEqual(r.loaded, [])
  t.is(r.attempts, 1, 'one failed require, then never again')
})

test('with @opentelemetry/api but no SDK registered: the no-op tracer answers, every call works', async (t) => {
  const env = await childSetup(t)
  const r = await child(CHILD, env)
  t.like(r, { name: 'Alice Example', nf: 'NOT_FOUND', state: true })
  t.true(r.loaded.some((k) => k.includes('@opentelemetry/api')))
})

test('a pool tenant’s initial load is under pool.tenant()’s caller span', async (t) => {
  const { createTenantPool } = require('../lib/index.js')
  const redis = await startRedis()
  const tenantId = `trp${process.pid}`
  const sim = await startWrapperSim({ tenantId })
  const pool = createTenantPool({
    wrapperUrl: sim.url,
    redisUrl: redis.url,
    logger: quietLogger(),
  })
  t.teardown(async () => {
    await pool.shutdown()
    await sim.stop()
    await redis.stop()
  })
  const { parent } = await inAppSpan(tenantId, () => pool.tenant(tenantId))
  const init = spansOf(tenantId).find((x) => x.name === 'smart-crm-consumer initialize')
  const load = spansOf(tenantId).find((x) => x.name === 'smart-crm-consumer full load')
  t.is(parentId(init), parent.spanContext().spanId)
  t.is(parentId(load), init.spanContext().spanId)
})

test('an SDK registered after the consumer started still gets its spans', async (t) => {
  const env = await childSetup(t)
  const r = await child(
    `
    const api = require('@opentelemetry/api')
    const { SmartCRMConsumer } = require('./lib/index.js')
    ;(async () => {
      const c = new SmartCRMConsumer({ tenantId: process.env.TENANT, wrapperUrl: process.env.WRAPPER_URL,
        redisUrl: process.env.REDIS_URL, logger: { debug() {}, info() {}, warn() {}, error() {} } })
      await c.initialize() // the API is loaded here, with no SDK yet
      const { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base')
      const exporter = new InMemorySpanExporter()
      api.trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }))
      await c.getUserProfile('u-alice')
      await c.shutdown()
      console.log(JSON.stringify(exporter.getFinishedSpans().map((s) => s.name)))
    })().catch((e) => { console.error(e); process.exit(1) })
    `,
    env,
  )
  t.deepEqual(r, ['smart-crm-consumer getUserProfile'])
})
