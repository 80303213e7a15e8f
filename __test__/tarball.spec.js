'use strict'
// The tarball users install: `npm pack` of this repository. It must hold the
// native addon, the JS and the types (everything package.json points at), and
// nothing of the build or the tests; and installed on its own it must load.

const test = require('ava')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')

const root = path.join(__dirname, '..')
const pkg = require('../package.json')

function run(cmd, args, cwd) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, npm_config_loglevel: 'error' } })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('close', (code) => resolve({ code, out, err }))
  })
}

/** Every file path package.json's main, types and exports point at. */
function declaredFiles(p) {
  const found = new Set([p.main, p.types].filter(Boolean))
  const walk = (v) => {
    if (typeof v === 'string') found.add(v)
    else if (v && typeof v === 'object') Object.values(v).forEach(walk)
  }
  walk(p.exports)
  walk(p.bin)
  return [...found].map((f) => f.replace(/^\.\//, ''))
}

let packed // { dir, tarball, entries }

test.before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smart-crm-tarball-'))
  const r = await run('npm', ['pack', '--json', '--pack-destination', dir], root)
  if (r.code !== 0) throw new Error(`npm pack failed: ${r.err}`)
  const [info] = JSON.parse(r.out)
  const tarball = path.join(dir, info.filename)
  const list = await run('tar', ['-tzf', tarball], dir)
  if (list.code !== 0) throw new Error(`tar -tzf failed: ${list.err}`)
  const entries = list.out
    .split('\n')
    .filter(Boolean)
    .map((e) => e.replace(/^package\//, ''))
  packed = { dir, tarball, entries, info }
})

test.after.always(() => {
  if (packed) fs.rmSync(packed.dir, { recursive: true, force: true })
})

test('holds the release .node binary', (t) => {
  const binaries = packed.entries.filter((e) => e.endsWith('.node'))
  t.true(binaries.includes('smart-crm-consumer.linux-x64-gnu.node'), binaries.join(', '))
  const entry = packed.info.files.find((f) => f.path === 'smart-crm-consumer.linux-x64-gnu.node')
  t.truthy(entry)
  // A debug build is ~86 MB, a release build ~7 MB (FIELD-NOTES): ship the release one.
  t.true(entry.size > 1e6 && entry.size < 30e6, `${entry.size} bytes`)
})

test('holds the JS and the types: every file package.json points at', (t) => {
  for (const f of [
    'package.json',
    'index.js',
    'index.d.ts',
    'lib/index.js',
    'lib/index.mjs',
    'lib/index.d.ts',
    'lib/express.js',
    'lib/express.mjs',
    'lib/express.d.ts',
    ...declaredFiles(pkg),
  ]) {
    t.true(packed.entries.includes(f), `${f} is missing from the tarball`)
  }
  // Every module the JS requires relatively is in the tarball too.
  for (const f of packed.entries.filter((e) => /^(bin|lib|tools)\/.*\.js$/.test(e))) {
    const src = fs.readFileSync(path.join(root, f), 'utf8')
    for (const [, rel] of src.matchAll(/require\('(\.\.?\/[^']+)'\)/g)) {
      const target = path.posix.normalize(path.posix.join(path.posix.dirname(f), rel))
      t.true(packed.entries.includes(target), `${f} requires ${rel}, not in the tarball`)
    }
  }
})

test("every entry of package.json's files list that exists here is in the tarball", (t) => {
  for (const entry of pkg.files) {
    if (entry.includes('*')) {
      const re = new RegExp(`^${entry.replace(/\./g, '\\.').replace(/\*/g, '[^/]*')}$`)
      const here = fs.readdirSync(root).filter((f) => re.test(f))
      for (const f of here) t.true(packed.entries.includes(f), `${f} (${entry})`)
      continue
    }
    const p = path.join(root, entry)
    if (!fs.existsSync(p)) continue
    const name = entry.replace(/\/$/, '')
    const shipped = fs.statSync(p).isDirectory()
      ? packed.entries.some((e) => e.startsWith(`${name}/`))
      : packed.entries.includes(name)
    t.true(shipped, `${entry} is in package.json's files but not in the tarball`)
  }
})

test('holds no build output, sources of the build, or tests', (t) => {
  const forbidden = [
    /^target\//,
    /^__test__\//,
    /^test\//,
    /(^|\/)[^/]*\.(spec|test)\.[cm]?[jt]s$/,
    /^examples\//,
    /^bench\//,
    /^crates\//,
    /^src\//,
    /^Cargo\.(toml|lock)$/,
    /^node_modules\//,
    /\.tgz$/,
  ]
  const bad = packed.entries.filter((e) => forbidden.some((re) => re.test(e)))
  t.deepEqual(bad, [])
})

test('installed on its own, it loads: CommonJS, ESM, the express subpath and the addon', async (t) => {
  const app = path.join(packed.dir, 'app')
  fs.mkdirSync(app)
  fs.writeFileSync(path.join(app, 'package.json'), '{ "name": "tarball-check", "private": true }\n')
  const install = await run(
    'npm',
    ['install', '--no-save', '--no-package-lock', '--no-audit', '--no-fund', packed.tarball],
    app,
  )
  t.is(install.code, 0, install.err)
  const cjs = await run(
    process.execPath,
    [
      '-e',
      `const { SmartCRMConsumer } = require('smart-crm-consumer')
       const { requireCredits } = require('smart-crm-consumer/express')
       const { createTestConsumer } = require('smart-crm-consumer/testing')
       const c = new SmartCRMConsumer({ tenantId: 't', wrapperUrl: 'http://127.0.0.1:9' })
       console.log(typeof requireCredits, c.getCreditCost('x'), require.resolve('smart-crm-consumer'))
       c.shutdown()
       createTestConsumer('t').initialize()`,
    ],
    app,
  )
  t.is(cjs.code, 0, cjs.err)
  t.regex(cjs.out, /^function null .*node_modules\/smart-crm-consumer\/lib\/index\.js$/m)
  const esm = await run(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `import { SmartCRMConsumer } from 'smart-crm-consumer'
       import { metricsHandler } from 'smart-crm-consumer/express'
       console.log(typeof SmartCRMConsumer, typeof metricsHandler)`,
    ],
    app,
  )
  t.is(esm.code, 0, esm.err)
  t.is(esm.out.trim(), 'function function')
  // The command line is linked into node_modules/.bin (`npx smart-crm-consumer doctor`).
  const bin = await run(
    path.join(app, 'node_modules', '.bin', 'smart-crm-consumer'),
    ['doctor', '--help'],
    app,
  )
  t.is(bin.code, 0, bin.err)
  t.regex(bin.out, /^usage: smart-crm-consumer doctor/)
})
