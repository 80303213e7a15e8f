#!/usr/bin/env node
'use strict'
// The package's command line: `npx smart-crm-consumer doctor [options]`
// (SPEC §10; lib/doctor.js). `--help` lists the options.

const USAGE = `usage: smart-crm-consumer <command> [options]

commands:
  doctor    check Redis, the Wrapper, the tenant's channels, clocks and signing
            as a consumer would see them (smart-crm-consumer doctor --help)
`

async function run(argv) {
  const [command, ...rest] = argv
  if (command === 'doctor') return require('../lib/doctor.js').main(rest)
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(USAGE)
    return command === undefined ? 2 : 0
  }
  process.stderr.write(`smart-crm-consumer: unknown command ${command}\n\n${USAGE}`)
  return 2
}

run(process.argv.slice(2)).then(
  (code) => {
    // Exit once stdout has been written out (pipes are asynchronous on some systems).
    process.exitCode = code
    process.stdout.write('', () => process.exit(code))
  },
  (err) => {
    process.stderr.write(`smart-crm-consumer: ${(err && err.stack) || err}\n`)
    process.exit(1)
  },
)
