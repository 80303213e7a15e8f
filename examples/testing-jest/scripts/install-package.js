'use strict'
// Packs the package at the repository root with `npm pack` and installs the
// tarball here, with the example's other dependencies: the tests use exactly
// what a user would get from the registry, never the source tree (the same
// steps as examples/crm-app/scripts/install-package.js).
//
//   node scripts/install-package.js     (run by `npm test`, or `npm run install-package`)

const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const here = path.join(__dirname, '..')
const root = path.join(here, '..', '..')
const packDir = path.join(here, '.pack')
const tarball = path.join(packDir, 'smart-crm-consumer.tgz')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

function run(args, cwd, capture) {
  const r = spawnSync(npm, args, {
    cwd,
    stdio: capture ? ['ignore', 'pipe', 'inherit'] : 'inherit',
    encoding: 'utf8',
  })
  if (r.status !== 0) {
    console.error(`[install-package] npm ${args.join(' ')} failed (exit ${r.status})`)
    process.exit(r.status || 1)
  }
  return r.stdout
}

fs.mkdirSync(packDir, { recursive: true })
const [info] = JSON.parse(run(['pack', '--json', '--pack-destination', packDir], root, true))
fs.renameSync(path.join(packDir, info.filename), tarball)
console.log(
  `[install-package] packed ${info.name}@${info.version} -> ${path.relative(here, tarball)}`,
)
// Removed first, so npm unpacks the fresh tarball even when the version did not change.
fs.rmSync(path.join(here, 'node_modules', 'smart-crm-consumer'), { recursive: true, force: true })
run(['install', '--no-audit', '--no-fund', '--no-save'], here, false)
