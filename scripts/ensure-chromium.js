'use strict'
// The example app's browser test drives Debian's chromium (no browser download
// is possible here). Installs it with apt when it is missing and we are root;
// otherwise says how.

const fs = require('node:fs')
const { spawnSync } = require('node:child_process')

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium'

if (!fs.existsSync(CHROMIUM)) {
  if (process.getuid && process.getuid() === 0 && fs.existsSync('/usr/bin/apt-get')) {
    console.log('[ensure-chromium] installing chromium with apt-get ...')
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    for (const args of [
      ['update', '-q'],
      ['install', '-y', '-q', 'chromium'],
    ]) {
      const r = spawnSync('apt-get', args, { stdio: 'inherit', env })
      if (r.status !== 0) process.exit(r.status ?? 1)
    }
  } else {
    console.error(
      `[ensure-chromium] ${CHROMIUM} is missing: install it with  apt-get install -y chromium`,
    )
    process.exit(1)
  }
}
