'use strict'
// Completes package-lock.json for `npm ci` when the registry this machine sees
// does not serve other platforms' optional binaries (a partial npm mirror).
//
// Packages such as @napi-rs/lzma list one optional dependency per platform.
// When the registry answers 404 for the foreign ones, `npm install` leaves them
// out of the lock file and `npm ci` then refuses the lock as "out of sync".
// This adds each missing optional platform package as an optional entry with
// the os/cpu/libc its name declares, so `npm ci` accepts the lock and skips it
// on this platform, exactly as it would with a complete registry.
// Run it after `npm install` whenever the lock file changes.

const fs = require('node:fs')
const path = require('node:path')

const lockPath = path.join(__dirname, '..', 'package-lock.json')
const lock = JSON.parse(fs.readFileSync(lockPath, 'utf8'))

const OS = ['android', 'darwin', 'freebsd', 'linux', 'win32', 'openharmony']
const CPU = {
  arm: 'arm',
  arm64: 'arm64',
  x64: 'x64',
  ia32: 'ia32',
  ppc64: 'ppc64',
  riscv64: 'riscv64',
  s390x: 's390x',
  loong64: 'loong64',
  wasm32: 'wasm32',
}

/** os/cpu/libc of a platform package from its name's suffix, e.g. `linux-arm64-musl`. */
function platformOf(name) {
  const parts = name.split('/').pop().split('-')
  if (parts.includes('wasm32')) return { cpu: ['wasm32'] }
  const osIdx = parts.findIndex((p) => OS.includes(p))
  if (osIdx < 0) return null
  const cpu = CPU[parts[osIdx + 1]]
  if (!cpu) return null
  const out = { os: [parts[osIdx]], cpu: [cpu] }
  const rest = parts.slice(osIdx + 2)
  if (rest.includes('musl')) out.libc = ['musl']
  else if (rest.some((p) => p.startsWith('gnu'))) out.libc = ['glibc']
  return out
}

let added = 0
for (const [key, entry] of Object.entries(lock.packages)) {
  if (!entry.optionalDependencies) continue
  const base = key.slice(0, key.lastIndexOf('node_modules/') + 'node_modules/'.length)
  for (const [dep, version] of Object.entries(entry.optionalDependencies)) {
    const depKey = `${base}${dep}`
    if (lock.packages[depKey] || lock.packages[`node_modules/${dep}`]) continue
    const platform = platformOf(dep)
    if (!platform) continue
    lock.packages[depKey] = {
      version,
      ...(entry.dev ? { dev: true } : {}),
      optional: true,
      ...platform,
    }
    added++
  }
}
fs.writeFileSync(lockPath, JSON.stringify(lock, null, 2) + '\n')
console.log(`complete-lock: added ${added} optional platform entries`)
