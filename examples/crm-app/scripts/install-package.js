'use strict'
// Packs the package at the repository root with `npm pack` and installs the
// tarball here, with the app's other dependencies: the app uses exactly what a
// user would get from the registry, never the source tree.
//
//   node scripts/install-package.js     (run by `npm test`, or `npm run install-package`)
//
// The tarball goes to .pack/smart-crm-consumer.tgz (a fixed name, so package.json
// need not follow the version). The installed copy is removed first, so npm
// always unpacks the fresh tarball even when the version did not change.

const fs = require('node:fs')
const path = require('node:path')
const { spawnSync } = require('node:child_process')

const app = path.join(__dirname, '..')
const root = path.join(app, '..', '..')
const packDir = path.join(app, '.pack')
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
const out = run(['pack', '--json', '--pack-destination', packDir], root, true)
const [info] = JSON.parse(out)
fs.renameSync(path.join(packDir, info.filename), tarball)
console.log(
  `[install-package] packed ${info.name}@${info.version}: ${info.files.length} files, ` +
    `${(info.size / 1e6).toFixed(1)} MB -> ${path.relative(app, tarball)}`,
)

fs.rmSync(path.join(app, 'node_modules', 'smart-crm-consumer'), { recursive: true, force: true })
run(['install', '--no-audit', '--no-fund', '--no-save'], app, false)
const installed = require(path.join(app, 'node_modules', 'smart-crm-consumer', 'package.json'))
console.log(`[install-package] installed smart-crm-consumer@${installed.version} from the tarball`)
