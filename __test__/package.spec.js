'use strict'
// The package as users load it: CommonJS and ESM entry points, the express
// subpath, the TypeScript types (compiled with tsc), and the signing helpers.

const test = require('ava')
const { spawn } = require('node:child_process')
const path = require('node:path')

const root = path.join(__dirname, '..')

function run(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: root, ...opts })
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    child.on('close', (code) => resolve({ code, out }))
  })
}

test('CommonJS require by package name', async (t) => {
  const r = await run(process.execPath, [
    '-e',
    `const m = require('smart-crm-consumer'); const e = require('smart-crm-consumer/express');
     console.log(typeof m.SmartCRMConsumer, typeof m.createPublisher, typeof e.requirePermission, typeof e.requireCredits, typeof e.metricsHandler)`,
  ])
  t.is(r.code, 0, r.out)
  t.is(r.out.trim(), 'function function function function function')
})

test('ESM import by package name', async (t) => {
  const r = await run(process.execPath, [
    '--input-type=module',
    '-e',
    `import { SmartCRMConsumer, createPublisher } from 'smart-crm-consumer'
     import def from 'smart-crm-consumer'
     import { requireCredits } from 'smart-crm-consumer/express'
     console.log(typeof SmartCRMConsumer, typeof createPublisher, typeof def.SmartCRMConsumer, typeof requireCredits)`,
  ])
  t.is(r.code, 0, r.out)
  t.is(r.out.trim(), 'function function function function')
})

test('the TypeScript types describe the public API (tsc --strict)', async (t) => {
  const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  const r = await run(process.execPath, [tsc, '-p', path.join(__dirname, 'types', 'tsconfig.json')])
  t.is(r.code, 0, r.out)
})

test('signMessage and canonicalize follow RFC 8785', (t) => {
  const { signMessage, canonicalize } = require('..')
  t.is(canonicalize({ b: 1, a: [3.0, 1e21, 1e-7, 0.1, -0] }), '{"a":[3,1e+21,1e-7,0.1,0],"b":1}')
  const msg = { eventType: 'x', tenantId: 't', data: {} }
  const sig = signMessage(msg, 'secret')
  t.regex(sig, /^[0-9a-f]{64}$/)
  t.is(
    signMessage({ ...msg, signature: 'ignored' }, 'secret'),
    sig,
    'the signature member is excluded',
  )
  t.is(
    signMessage(JSON.stringify({ data: {}, tenantId: 't', eventType: 'x' }), 'secret'),
    sig,
    'member order does not matter',
  )
  t.not(signMessage(msg, 'other'), sig)
})

test('the shipped signature test vectors match', (t) => {
  const { signMessage, canonicalize } = require('..')
  const { vectors } = require('../test-vectors/signatures.json')
  t.true(vectors.length >= 6)
  for (const v of vectors) {
    const msg = JSON.parse(v.message)
    delete msg.signature
    t.is(canonicalize(JSON.stringify(msg)), v.canonical, `${v.name}: canonical`)
    t.is(signMessage(v.message, v.secret), v.signature, `${v.name}: signature`)
  }
})
