'use strict'
// CPU time per thread of this process (from /proc/self/task), for the rows
// that say which threads did the work (the storm, row 2; the pool's events,
// row 8d). Clock ticks of 10 ms (USER_HZ = 100 on Linux).

const fs = require('node:fs')

const CLK_TCK_MS = 10

/** CPU ms per thread name, and the main thread's involuntary switches. */
function threadStats() {
  const cpu = {}
  let nonvoluntary = 0
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      const ms = (Number(f[11]) + Number(f[12])) * CLK_TCK_MS
      const key = Number(tid) === process.pid ? 'main' : name
      cpu[key] = (cpu[key] || 0) + ms
      if (Number(tid) === process.pid) {
        const status = fs.readFileSync(`/proc/self/task/${tid}/status`, 'utf8')
        nonvoluntary = Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)[1])
      }
    } catch {
      // thread ended meanwhile
    }
  }
  return { cpu, nonvoluntary }
}

function diffStats(a, b) {
  const cpu = {}
  for (const [k, v] of Object.entries(b.cpu)) {
    const d = v - (a.cpu[k] || 0)
    if (d > 0) cpu[k] = d
  }
  return { cpuMs: cpu, mainInvoluntarySwitches: b.nonvoluntary - a.nonvoluntary }
}

module.exports = { threadStats, diffStats }
