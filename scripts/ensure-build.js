'use strict'
// Builds the native addon (release) when it is missing or older than its
// sources, so `npm test` and `npm run demo` work on a fresh clone. Set
// SMART_CRM_SKIP_BUILD=1 to use whatever binary is present.

const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const root = path.join(__dirname, '..')
const binary = path.join(root, 'smart-crm-consumer.linux-x64-gnu.node')

function newestMtime(dir) {
  let newest = 0
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name)
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(p))
    else if (/\.(rs|toml)$/.test(entry.name)) newest = Math.max(newest, fs.statSync(p).mtimeMs)
  }
  return newest
}

function needsBuild() {
  if (process.env.SMART_CRM_SKIP_BUILD === '1') return false
  if (!fs.existsSync(binary)) return true
  const sources = Math.max(
    newestMtime(path.join(root, 'src')),
    newestMtime(path.join(root, 'crates')),
    fs.statSync(path.join(root, 'Cargo.toml')).mtimeMs,
  )
  return sources > fs.statSync(binary).mtimeMs
}

if (needsBuild()) {
  console.log('[ensure-build] building the native addon (release) ...')
  const r = spawnSync('npx', ['napi', 'build', '--platform', '--release'], {
    cwd: root,
    stdio: 'inherit',
  })
  if (r.status !== 0) process.exit(r.status ?? 1)
}
