'use strict'
// Load comparison (not part of the tests): the same app built on
// smart-crm-consumer and on the pure-JS baseline (bench/baselines/js-consumer.js
// through load/js-baseline.js), each driven by autocannon from a second
// process, quiet and under an event storm (a third process publishing signed
// change events). Writes LOAD-RESULTS.md and load/.tmp/results.json.
//
//   npm --prefix examples/crm-app run load                  # 30 s per run, 8 runs
//   node load/run.js --duration 5 --only smart              # a quick look
//
// Options: --duration S (30), --warmup S (5), --connections N (20),
//          --rate EVENTS_PER_S (5000), --only smart|js, --out FILE (LOAD-RESULTS.md);
//          or --from load/.tmp/results.json to rewrite the report of the last run.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { fork, spawn } = require('node:child_process')
const { randomBytes } = require('node:crypto')

const { startRedis, waitFor } = require('smart-crm-consumer/test-helpers')

const APP_DIR = path.join(__dirname, '..')
const DRIVER = path.join(__dirname, 'drive.js')
const TMP = path.join(__dirname, '.tmp')

const ENDPOINTS = [
  // a new lead body per request, so each is a new lead (a new idempotency key)
  { name: 'POST /api/leads', path: '/api/leads', method: 'POST', lead: true },
  {
    name: 'GET /api/permissions/check',
    path: '/api/permissions/check?permission=crm.leads.create',
  },
]

function parseArgs(argv) {
  const o = { duration: 30, warmup: 5, connections: 20, rate: 5000, only: null, out: null }
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '')
    if (!(k in o) || i + 1 >= argv.length)
      throw new Error(`unknown or incomplete option ${argv[i]}`)
    o[k] = ['only', 'out'].includes(k) ? argv[i + 1] : Number(argv[i + 1])
  }
  return o
}

/** CPU seconds (user + system) of a process so far, from /proc. */
function cpuSeconds(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12])) / 100
}

function once(child, type) {
  return new Promise((resolve, reject) => {
    const onMessage = (m) => {
      if (m && m.type === type) {
        child.off('message', onMessage)
        resolve(m)
      }
    }
    child.on('message', onMessage)
    child.once('exit', (code) => reject(new Error(`child exited (${code}) before '${type}'`)))
  })
}

async function startServer(impl, redisUrl, signingSecret) {
  const child = fork(path.join(APP_DIR, 'server.js'), [], {
    cwd: APP_DIR,
    env: {
      ...process.env,
      PORT: '0',
      CRM_CONSUMER: impl,
      TENANTS: 'acme',
      REDIS_URL: redisUrl,
      SIGNING_SECRET: signingSecret,
      CANARY_MS: '1000',
    },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  })
  const { url, wrapper } = await once(child, 'listening')
  return {
    child,
    url,
    wrapper,
    async stop() {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
    },
  }
}

async function dashboard(url) {
  const res = await fetch(`${url}/api/dashboard`, {
    headers: { Authorization: 'Bearer demo-dana' },
  })
  return res.json()
}

/** Runs autocannon in its own process (load/drive.js); resolves to its JSON result. */
function autocannon(url, endpoint, { duration, connections }) {
  const config = {
    url: url + endpoint.path,
    method: endpoint.method ?? 'GET',
    lead: Boolean(endpoint.lead),
    token: 'demo-alice',
    connections,
    duration,
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DRIVER, JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`autocannon exited ${code}: ${err}`))
      resolve(JSON.parse(out.trim().split('\n').pop()))
    })
  })
}

async function startStorm(redisUrl, signingSecret, rate) {
  const config = JSON.stringify({ redisUrl, tenantId: 'acme', signingSecret, rate })
  const child = fork(path.join(__dirname, 'storm.js'), [config], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  await once(child, 'started')
  return {
    async stop() {
      const done = once(child, 'done')
      child.send('stop')
      return done
    },
  }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]
}

async function measure(server, endpoint, opts) {
  const before = await dashboard(server.url)
  const cpu0 = cpuSeconds(server.child.pid)
  const t0 = Date.now()
  const r = await autocannon(server.url, endpoint, opts)
  const seconds = (Date.now() - t0) / 1000
  const cpu = (cpuSeconds(server.child.pid) - cpu0) / seconds
  const after = await dashboard(server.url)
  const canary = after.latency.samples
    .filter(([at]) => at >= t0)
    .map(([, ms]) => ms)
    .sort((a, b) => a - b)
  return {
    endpoint: endpoint.name,
    requestsPerSec: r.requests.average,
    totalRequests: r.requests.total,
    p50: r.latency.p50,
    p99: r.latency.p99,
    errors: r.errors + r.timeouts,
    non2xx: r.non2xx,
    appCpu: cpu,
    eventsAppliedPerSec: (after.metrics.eventsApplied - before.metrics.eventsApplied) / seconds,
    eventsReceivedPerSec: (after.metrics.eventsReceived - before.metrics.eventsReceived) / seconds,
    canaryP50: percentile(canary, 50),
    canaryP99: percentile(canary, 99),
    canarySamples: canary.length,
  }
}

function fmt(n, digits = 0) {
  return n === null || n === undefined
    ? '–'
    : n.toLocaleString('en', { maximumFractionDigits: digits, minimumFractionDigits: digits })
}

/** Writes `text`, formatted by the repository's prettier when it is installed. */
async function writeFormatted(file, text, parser) {
  try {
    const prettier = require('prettier')
    const config = await prettier.resolveConfig(file)
    text = await prettier.format(text, { ...config, parser })
  } catch (err) {
    if (err.code !== 'MODULE_NOT_FOUND') throw err
  }
  fs.writeFileSync(file, text)
}

const writeReport = (out, run) => writeFormatted(out, report(run), 'markdown')

function report({ results, opts, started, storms, argv, machine, loadBefore, loadAfter }) {
  const lines = [
    '# Load results: crm-app on smart-crm-consumer vs. the pure-JS baseline',
    '',
    'Made by (from the repository root; not part of CI):',
    '',
    '```sh',
    `npm --prefix examples/crm-app run load${argv.length ? ` -- ${argv.join(' ')}` : ''}`,
    '```',
    '',
    `Run ${started} on ${machine}.` +
      (loadBefore
        ? ` Load average (1/5/15 min) before: ${loadBefore.map((l) => l.toFixed(2)).join(' / ')}; ` +
          `after: ${loadAfter.map((l) => l.toFixed(2)).join(' / ')}.`
        : ''),
    '',
    'Each row: autocannon in its own process, ' +
      `${opts.connections} connections, ${opts.duration} s (after a ${opts.warmup} s warm-up per endpoint), ` +
      'as `u-alice` (Bearer token). Each app (server.js, one tenant) runs in its own process with ' +
      'its Wrapper simulator (another process) and its own redis-server; both apps are up for ' +
      'the whole run and the rows alternate between them (smart, js, smart, js, …), so a change ' +
      "in the machine's other load affects both alike. " +
      `"storm": a fourth process publishes signed \`credit-config-changed\` events at ${fmt(opts.rate)}/s ` +
      "on the tenant's channel during the run. The same app code runs on both consumers " +
      '(`CRM_CONSUMER=smart|js`); the baseline is `bench/baselines/js-consumer.js` through ' +
      '`load/js-baseline.js`.',
    '',
    '| consumer | condition | endpoint | req/s | p50 ms | p99 ms | errors / non-2xx | app CPU | events applied/s | canary p50 / p99 ms |',
    '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const r of results) {
    lines.push(
      `| ${r.impl} | ${r.condition} | \`${r.endpoint}\` | ${fmt(r.requestsPerSec)} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${r.errors} / ${r.non2xx} | ${fmt(r.appCpu * 100)} % | ${fmt(r.eventsAppliedPerSec)} | ${fmt(r.canaryP50, 2)} / ${fmt(r.canaryP99, 2)} |`,
    )
  }
  lines.push('')
  const pairs = []
  for (const e of ENDPOINTS) {
    for (const c of ['quiet', 'storm']) {
      const a = results.find(
        (r) => r.impl === 'smart' && r.condition === c && r.endpoint === e.name,
      )
      const b = results.find((r) => r.impl === 'js' && r.condition === c && r.endpoint === e.name)
      if (a && b) {
        pairs.push(
          `| \`${e.name}\` | ${c} | ${(a.requestsPerSec / b.requestsPerSec).toFixed(2)}× | ${(a.p99 / b.p99).toFixed(2)}× |`,
        )
      }
    }
  }
  if (pairs.length) {
    lines.push(
      'smart-crm-consumer relative to the baseline (req/s: higher is better; p99: lower is better):',
      '',
    )
    lines.push(
      '| endpoint | condition | req/s | p99 |',
      '| --- | --- | ---: | ---: |',
      ...pairs,
      '',
    )
  }
  if (storms.length) {
    lines.push(
      'Storms as published: ' +
        storms
          .map((s) => `${s.impl}/${s.endpoint}: ${fmt(s.rate)} events/s (${s.failed} failed)`)
          .join('; ') +
        '.',
      '',
    )
  }
  lines.push(
    'Notes:',
    '',
    '- Both apps run the same code (`app.js`); only the consumer differs. The lead path calls ' +
      'the Wrapper twice per request (balance, then deduct) and reads the profile from the ' +
      "consumer's cache: the baseline makes those calls with `fetch` on the main thread, as the " +
      'design writes them; smart-crm-consumer makes them in its Rust core, off the main thread. ' +
      'The permission check is one in-memory lookup on both, so that row mostly measures ' +
      'Express and HTTP.',
    '- Under the storm both consumers apply every event (events applied/s). The baseline ' +
      'parses and applies each message on the main thread and checks neither signatures nor ' +
      'versions; smart-crm-consumer validates each one, verifies its signature and version, ' +
      'applies it in its core and hands the JS side batches. The canary column shows how ' +
      'late a change reaches the app meanwhile.',
    '- Everything (autocannon, the app, the simulator, Redis, the storm publisher) shares ' +
      "this machine's cores, and other work on the machine is not excluded: the rows compare " +
      'the two consumers under the same conditions, they are not capacity figures. Expect ' +
      '±10–30 % between runs on this VM (FIELD-NOTES); compare within one run.',
    '',
    "Columns: req/s is autocannon's average; p50/p99 its latency percentiles; app CPU the " +
      "server process's user+system time over wall time (100 % = one core); events applied/s from " +
      "the consumer's own counters; canary: Wrapper → app propagation of the 1/s canary during the run.",
    '',
  )
  return lines.join('\n')
}

async function main() {
  const argv = process.argv.slice(2)
  // --from FILE: rewrite the report from an earlier run's results.json
  if (argv[0] === '--from') {
    const run = JSON.parse(fs.readFileSync(argv[1], 'utf8'))
    const out = run.opts.out ?? path.join(APP_DIR, 'LOAD-RESULTS.md')
    await writeReport(out, run)
    process.stderr.write(`[load] wrote ${out} from ${argv[1]}\n`)
    return
  }
  const opts = parseArgs(argv)
  const cpu = os.cpus()
  const machine =
    `${cpu.length} × ${cpu[0].model.trim()}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
    `Node ${process.version}, ${os.type()} ${os.release()}`
  const impls = opts.only ? [opts.only] : ['smart', 'js']
  const started = new Date().toISOString()
  const loadBefore = os.loadavg()
  fs.mkdirSync(TMP, { recursive: true })
  const signingSecret = randomBytes(32).toString('hex')
  const results = []
  const storms = []
  // Both apps run side by side, each with its own redis-server (so a storm
  // reaches only the app it is for), and the rows alternate between them: a
  // change in the machine's other load during the run hits both alike. The app
  // not being measured is idle (one canary event a second).
  const servers = new Map()
  try {
    for (const impl of impls) {
      const redis = await startRedis()
      servers.set(impl, { redis })
      const server = await startServer(impl, redis.url, signingSecret)
      servers.set(impl, { redis, server })
      // Enough credits for every lead of every run.
      await fetch(`${server.wrapper}/admin/balances/u-alice`, {
        method: 'PUT',
        headers: { 'X-Tenant-Id': 'acme' },
        body: JSON.stringify({ available: 1e12 }),
      })
    }
    for (const [impl, { server }] of servers) {
      for (const e of ENDPOINTS) {
        process.stderr.write(`[load] ${impl}: warm-up ${e.name}\n`)
        await autocannon(server.url, e, { ...opts, duration: opts.warmup })
      }
    }
    for (const condition of ['quiet', 'storm']) {
      for (const e of ENDPOINTS) {
        for (const [impl, { redis, server }] of servers) {
          let storm = null
          if (condition === 'storm') {
            storm = await startStorm(redis.url, signingSecret, opts.rate)
            // under way once the app has received a second's worth of it
            const base = (await dashboard(server.url)).metrics.eventsReceived
            await waitFor(
              async () => (await dashboard(server.url)).metrics.eventsReceived - base >= opts.rate,
              { timeout: 20_000, interval: 50, message: 'the storm to reach the app' },
            )
          }
          process.stderr.write(`[load] ${impl} ${condition} ${e.name}: ${opts.duration} s\n`)
          try {
            const r = await measure(server, e, opts)
            results.push({ impl, condition, ...r, loadavg: os.loadavg()[0] })
            process.stderr.write(`[load]   ${JSON.stringify(results[results.length - 1])}\n`)
          } finally {
            if (storm) storms.push({ impl, endpoint: e.name, ...(await storm.stop()) })
          }
        }
      }
    }
  } finally {
    for (const { redis, server } of servers.values()) {
      if (server) await server.stop()
      await redis.stop()
    }
  }
  const loadAfter = os.loadavg()
  results.sort((a, b) => impls.indexOf(a.impl) - impls.indexOf(b.impl))
  const run = { started, argv, machine, loadBefore, loadAfter, opts, results, storms }
  await writeFormatted(path.join(TMP, 'results.json'), JSON.stringify(run), 'json')
  const out = opts.out ?? path.join(APP_DIR, 'LOAD-RESULTS.md')
  await writeReport(out, run)
  process.stderr.write(`[load] wrote ${out}\n`)
}

if (require.main === module) {
  main().catch((err) => {
    console.error(err)
    process.exit(1)
  })
}

module.exports = { report }
