'use strict'
// `npx smart-crm-consumer doctor` (SPEC §10): the CLI run as a child process,
// with only the environment a user would give it, against a real redis-server
// and the Wrapper simulator over HTTP (publishing its canary events): a healthy
// setup passes every line and exits 0; each failure it names fails its line and
// exits non-zero; no secret ever appears in the output.
//
// The skewed clock is simulated on the doctor's side: the child is started with
// `--require __test__/fixtures/skewed-clock.js`, which moves this host's
// Date.now() by DOCTOR_TEST_CLOCK_OFFSET_MS (the shipped code has no test hook).

const test = require('ava')
const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { startRedis, freePort } = require('../tools/test-helpers/index.js')
const { startWrapperSim } = require('../tools/wrapper-sim.js')
const { SmartCRMConsumer } = require('../lib/index.js')
const { quietLogger } = require('./helpers/fixture.js')
const doctor = require('../lib/doctor.js')

const ROOT = path.join(__dirname, '..')
const BIN = path.join(ROOT, 'bin', 'smart-crm-consumer.js')
const SKEW = path.join(__dirname, 'fixtures', 'skewed-clock.js')

const TOKEN = 'tok-Zq8sL2vN0pXw'
const REDIS_PASSWORD = 'rpw-Kd93hFq1Lm'
const SECRET = 'sig-Vb71Tn2QcYe'
const SECRETS = [TOKEN, REDIS_PASSWORD, SECRET]

let seq = 0

/** Runs the CLI with exactly `env` (plus PATH); resolves to `{ code, stdout, stderr, lines }`. */
function runCli(args, env, { execArgv = [] } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...execArgv, BIN, ...args], {
      env: { PATH: process.env.PATH, ...env },
      cwd: ROOT,
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('error', reject)
    // 'close', not 'exit': the child may exit before its output is all read
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr, lines: stdout.trim().split('\n').filter(Boolean) })
    })
  })
}

/**
 * A private redis-server (with a password), a Wrapper simulator that requires
 * a bearer token and publishes signed events there, and the doctor's
 * environment for both. `canaryMs: 0` = the simulator publishes nothing.
 */
async function setup(t, { simSecret = SECRET, canaryMs = 50, sim: simOpts = {} } = {}) {
  const tenantId = `doc${process.pid}-${++seq}`
  const redis = await startRedis({ extraArgs: ['--requirepass', REDIS_PASSWORD] })
  const redisUrl = redis.url.replace('redis://', `redis://:${REDIS_PASSWORD}@`)
  const sim = await startWrapperSim({
    tenantId,
    token: TOKEN,
    redisUrl,
    signingSecret: simSecret,
    pageSize: 2,
    ...simOpts,
  })
  if (canaryMs > 0) sim.startCanary(canaryMs)
  t.teardown(async () => {
    await sim.stop()
    await redis.stop()
  })
  const env = {
    WRAPPER_URL: sim.url,
    REDIS_URL: redisUrl,
    WRAPPER_TOKEN: TOKEN,
    SIGNING_SECRET: SECRET,
  }
  const args = ['doctor', '--tenant', tenantId, '--listen-ms', '1000']
  return { tenantId, redis, redisUrl, sim, env, args }
}

function noSecret(t, r) {
  for (const s of SECRETS) {
    t.false(r.stdout.includes(s), `stdout holds a secret: ${r.stdout}`)
    t.false(r.stderr.includes(s), `stderr holds a secret: ${r.stderr}`)
  }
}

/** The line of check `name`. */
function line(r, name) {
  return r.lines.find((l) => l.replace(/^(pass|fail|skip) /, '').startsWith(`${name}:`))
}

test('a healthy setup: every check passes, one line each, exit 0, no secret in the output', async (t) => {
  const s = await setup(t, { sim: { etags: true } })
  // A live consumer of the tenant: the channels check sees its subscriptions.
  const consumer = new SmartCRMConsumer({
    tenantId: s.tenantId,
    wrapperUrl: s.sim.url,
    redisUrl: s.redisUrl,
    wrapperToken: TOKEN,
    signingSecret: SECRET,
    logger: quietLogger(),
  })
  t.teardown(() => consumer.shutdown())
  await consumer.initialize()
  const r = await runCli(s.args, s.env)
  t.is(r.code, 0, r.stdout + r.stderr)
  t.is(r.lines.length, doctor.ORDER.length, r.stdout)
  for (const l of r.lines) t.regex(l, /^pass /, l)
  t.deepEqual(
    r.lines.map((l) => l.slice(5, l.indexOf(':'))),
    doctor.ORDER,
  )
  t.regex(line(r, 'redis'), /redis:\/\/:\*\*\*@127\.0\.0\.1:\d+ answers PING/)
  t.regex(line(r, 'channels'), /1 subscriber on each/)
  t.regex(line(r, 'canary'), /received back/)
  t.regex(line(r, 'wrapper GET /api/users/access'), /200, 3 rows in 2 pages \(paged\)/)
  t.regex(line(r, 'wrapper GET /api/roles'), /ETag, 304 on If-None-Match/)
  t.regex(line(r, 'traffic'), /messages? in .* \(configs \d+\)/)
  t.regex(line(r, 'signing'), /(\d+) of \1 events? signed with a configured secret/)
  t.regex(line(r, 'config'), /bearer token set, signing secret set/)
  t.is(r.stderr, '')
  noSecret(t, r)
})

test('--json: one JSON object per check', async (t) => {
  const s = await setup(t)
  const r = await runCli([...s.args, '--json'], s.env)
  t.is(r.code, 0, r.stdout)
  const results = r.lines.map((l) => JSON.parse(l))
  t.deepEqual(
    results.map((x) => x.name),
    doctor.ORDER,
  )
  t.true(results.every((x) => x.status === 'pass' && typeof x.detail === 'string'))
  noSecret(t, r)
})

test('Redis down: the redis line fails (REDIS_UNAVAILABLE), its dependants are skipped, the Wrapper still checked', async (t) => {
  const s = await setup(t)
  const url = `redis://:${REDIS_PASSWORD}@127.0.0.1:${await freePort()}`
  const r = await runCli(s.args, { ...s.env, REDIS_URL: url })
  t.is(r.code, 1)
  t.regex(
    line(r, 'redis'),
    /^fail redis: REDIS_UNAVAILABLE: redis:\/\/:\*\*\*@127\.0\.0\.1:\d+: connection refused$/,
  )
  for (const name of ['redis topology', 'redis clock', 'channels', 'canary', 'traffic', 'signing'])
    t.regex(line(r, name), /^skip /, name)
  t.regex(line(r, 'wrapper'), /^pass /)
  t.regex(line(r, 'snapshot'), /^pass /)
  noSecret(t, r)
})

test('a wrong Redis password fails the redis line and names the refusal', async (t) => {
  const s = await setup(t)
  const r = await runCli(s.args, {
    ...s.env,
    REDIS_URL: `redis://:not-the-password-77@127.0.0.1:${s.redis.port}`,
  })
  t.is(r.code, 1)
  t.regex(line(r, 'redis'), /^fail redis: REDIS_UNAVAILABLE: .*Redis refused the credentials/)
  t.false(r.stdout.includes('not-the-password-77'))
})

test('a password in the URL for a Redis that has none: the redis line says so, not a bare ERR', async (t) => {
  const s = await setup(t)
  const open = await startRedis()
  t.teardown(() => open.stop())
  const r = await runCli(s.args, {
    ...s.env,
    REDIS_URL: open.url.replace('redis://', 'redis://:unneeded-pass-55@'),
  })
  t.is(r.code, 1)
  t.regex(
    line(r, 'redis'),
    /^fail redis: REDIS_UNAVAILABLE: .*gives a password but this Redis server has none/,
  )
  t.false(r.stdout.includes('unneeded-pass-55'))
})

test('Wrapper 401: the wrapper line fails naming WRAPPER_AUTH; neither token is printed', async (t) => {
  const s = await setup(t)
  const wrong = 'wrong-tok-Pq0zX91'
  const r = await runCli(s.args, { ...s.env, WRAPPER_TOKEN: wrong })
  t.is(r.code, 1)
  t.regex(
    line(r, 'wrapper'),
    /^fail wrapper: WRAPPER_AUTH: HTTP 401 for GET \/api\/credits\/configs/,
  )
  t.regex(line(r, 'wrapper GET /api/roles'), /^skip /)
  t.regex(line(r, 'redis'), /^pass /)
  t.false(r.stdout.includes(wrong) || r.stderr.includes(wrong))
  noSecret(t, r)
})

test('no traffic on the tenant channels: the traffic line fails', async (t) => {
  const s = await setup(t, { canaryMs: 0 })
  const r = await runCli(s.args, s.env)
  t.is(r.code, 1)
  t.regex(
    line(r, 'traffic'),
    new RegExp(`^fail traffic: no traffic on channel crm:${s.tenantId}:\\* within`),
  )
  // The doctor's own canary is not traffic, and it did come back.
  t.regex(line(r, 'canary'), /^pass /)
  t.regex(line(r, 'events'), /^skip /)
  noSecret(t, r)
})

test('traffic for the tenant under another prefix: the traffic line says so', async (t) => {
  const s = await setup(t, { sim: { channelPrefix: 'crm2' } })
  const r = await runCli(s.args, s.env)
  t.is(r.code, 1)
  t.regex(line(r, 'traffic'), /^fail traffic: no traffic on channel .*under another prefix: crm2:/)
})

test('a skewed clock on this host: the Redis and Wrapper clock lines fail', async (t) => {
  const s = await setup(t)
  const offset = 10 * 60_000
  const r = await runCli(
    s.args,
    { ...s.env, DOCTOR_TEST_CLOCK_OFFSET_MS: String(offset) },
    { execArgv: ['--require', SKEW] },
  )
  t.is(r.code, 1)
  t.regex(
    line(r, 'redis clock'),
    /^fail redis clock: Redis's clock \(TIME\) is 600\.0 s behind this host/,
  )
  t.regex(
    line(r, 'wrapper clock'),
    /^fail wrapper clock: the Wrapper's clock \(Date header\) is (599|600)\.\d s behind/,
  )
  // The events arrive stamped by the simulator's (real) clock: 10 minutes in this host's past.
  t.regex(line(r, 'event clock'), /^fail event clock: .*outside the ±5 min window/)
  // A small skew within --max-clock-skew-ms passes.
  const small = await runCli(
    [...s.args, '--max-clock-skew-ms', '5000'],
    { ...s.env, DOCTOR_TEST_CLOCK_OFFSET_MS: '-2000' },
    { execArgv: ['--require', SKEW] },
  )
  t.regex(
    line(small, 'redis clock'),
    /^pass redis clock: Redis's clock \(TIME\) is (199|200)\d ms ahead/,
  )
  t.regex(line(small, 'wrapper clock'), /^pass /)
  noSecret(t, r)
})

test('unsigned events while a signing secret is set: the signing line fails', async (t) => {
  const s = await setup(t, { simSecret: null })
  const r = await runCli(s.args, s.env)
  t.is(r.code, 1)
  t.regex(
    line(r, 'signing'),
    /^fail signing: (\d+) unsigned of \1 events? while a signing secret is set/,
  )
  t.regex(line(r, 'events'), /^pass /)
  // Without a secret the same events pass, with a warning in plain words.
  const { SIGNING_SECRET, ...unsignedEnv } = s.env
  const r2 = await runCli(s.args, unsignedEnv)
  t.is(r2.code, 0, r2.stdout)
  t.regex(line(r2, 'signing'), /^pass signing: no signing secret: consumers accept unsigned events/)
  noSecret(t, r)
})

test('events signed with another secret: the signing line fails (badly signed)', async (t) => {
  const s = await setup(t, { simSecret: 'another-secret-Hs8' })
  const r = await runCli(s.args, s.env)
  t.is(r.code, 1)
  t.regex(line(r, 'signing'), /^fail signing: \d+ badly signed/)
  t.false(r.stdout.includes('another-secret-Hs8'))
  noSecret(t, r)
  // With the secrets of a rotation (a file, one per line) they pass.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'doctor-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const file = path.join(dir, 'secrets')
  fs.writeFileSync(file, `${SECRET}\nanother-secret-Hs8\n`)
  const r2 = await runCli([...s.args, '--signing-secret-file', file], s.env)
  t.is(r2.code, 0, r2.stdout)
  t.regex(line(r2, 'signing'), /signed with a configured secret \(secret 1: 0, secret 2: \d+\)/)
  t.false(r2.stdout.includes('another-secret-Hs8'))
})

test('a Wrapper list with a paging cycle fails its line as INVALID_RESPONSE', async (t) => {
  const s = await setup(t, { sim: { cursors: ['a', 'b', 'a'], pageSize: undefined } })
  const r = await runCli(s.args, s.env)
  t.is(r.code, 1)
  t.regex(line(r, 'wrapper'), /^pass /)
  t.regex(line(r, 'wrapper GET /api/roles'), /^fail .*INVALID_RESPONSE: .*paging cycle/)
  t.regex(line(r, 'snapshot'), /^skip /)
})

test('usage: secrets are refused as flags, unknown arguments and commands exit 2', async (t) => {
  for (const flag of ['--token', '--signing-secret', '--token=abc123secret']) {
    const r = await runCli(['doctor', flag, 'abc123secret'], {})
    t.is(r.code, 2, flag)
    t.regex(r.stderr, /is not accepted: a secret on the command line is visible/)
    t.false(r.stderr.includes('abc123secret'))
  }
  t.is((await runCli(['doctor', '--bogus'], {})).code, 2)
  t.is((await runCli(['frobnicate'], {})).code, 2)
  const help = await runCli(['doctor', '--help'], {})
  t.is(help.code, 0)
  t.regex(help.stdout, /usage: smart-crm-consumer doctor/)
  // Nothing configured: the config line fails and names what is missing.
  const bare = await runCli(['doctor'], {})
  t.is(bare.code, 1)
  t.regex(line(bare, 'config'), /^fail config: no tenant id: pass --tenant or set TENANT_ID/)
})

test('an invalid option is refused by the consumer’s own validation', async (t) => {
  const r = await runCli(['doctor', '--tenant', 'acme', '--wrapper', 'ftp://nope'], {})
  t.is(r.code, 1)
  t.regex(line(r, 'config'), /^fail config: the consumer refuses these options: .*wrapperUrl/)
})

test('redact, displayUrl and skewOf', (t) => {
  t.is(doctor.redact('a s3cr3t b s3cr3t', ['s3cr3t']), 'a *** b ***')
  t.is(doctor.redact('x p%40ss y p@ss', ['p@ss']), 'x *** y ***')
  t.is(doctor.redact('abcdef', ['abc', 'abcdef']), '***')
  t.is(doctor.displayUrl('redis://user:pw@h:6379/0'), 'redis://user:***@h:6379/0')
  t.is(doctor.displayUrl('http://w:8080/base/?token=x'), 'http://w:8080/base')
  t.deepEqual(
    doctor.skewOf([
      { lo: -5, hi: 10 },
      { lo: 0, hi: 20 },
    ]),
    {
      estimate: 5,
      lo: 0,
      hi: 10,
      minAbs: 0,
    },
  )
  t.is(doctor.skewOf([{ lo: 100, hi: 200 }]).minAbs, 100)
  t.is(doctor.skewOf([{ lo: -300, hi: -200 }]).minAbs, 200)
})

test('package.json: the bin is shipped and runnable', (t) => {
  const pkg = require('../package.json')
  t.is(pkg.bin['smart-crm-consumer'], 'bin/smart-crm-consumer.js')
  t.true(pkg.files.includes('bin/'))
  t.true(fs.readFileSync(BIN, 'utf8').startsWith('#!/usr/bin/env node\n'))
  t.truthy(fs.statSync(BIN).mode & 0o111, 'executable')
  // The doctor needs no devDependency: everything it requires is Node's or the package's.
  const src = fs.readFileSync(path.join(ROOT, 'lib', 'doctor.js'), 'utf8')
  for (const m of src.matchAll(/require\('([^']+)'\)/g))
    t.true(m[1].startsWith('node:') || m[1].startsWith('./'), m[1])
})
