'use strict'
// Profiling aid for row 8b: what a pool tenant holds in the V8 heap. Loads
// 200 small tenants, takes a heap snapshot, loads 1,000 more, takes another,
// and prints the growth per tenant by node type and constructor name (self
// sizes). The simulator runs in this process; its request logs are cleared
// before each snapshot, so what it holds is the same in both. The replica is
// lazy (it holds what was read): with `--read`, each tenant, once loaded,
// reads every one of its credits, roles and configs once and calls
// checkPermission once for each of its users (a tenant whose app has read all
// of it); `--read=tables` reads the credits, roles and configs only,
// `--read=status` those and getUserStatus of each user.
//
//   node --expose-gc bench/profile/pool-heap.js [first=200] [more=1000] [--read[=tables|status]]
//   SMART_CRM_LIB=/tmp/other/lib/index.js ...   (another build's JS)

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const v8 = require('node:v8')
const { startRedis } = require('../../tools/test-helpers/index.js')
const { startMultiTenantSim } = require('../../tools/wrapper-sim.js')
const { smallTenant, tenantId, poolOptions } = require('../lib/tenants.js')

const { createTenantPool } = require(process.env.SMART_CRM_LIB || '../../lib/index.js')

/** Self size and count per `type:name` of a heap snapshot file. */
function byName(file) {
  const s = JSON.parse(fs.readFileSync(file, 'utf8'))
  const fields = s.snapshot.meta.node_fields.length
  const types = s.snapshot.meta.node_types[0]
  const out = new Map()
  for (let i = 0; i < s.nodes.length; i += fields) {
    const type = types[s.nodes[i]]
    let name = s.strings[s.nodes[i + 1]]
    if (/string/.test(type)) name = '(strings)'
    else if (type === 'code') name = '(code)'
    else name = name.slice(0, 40)
    const key = `${type}:${name}`
    const e = out.get(key) || { size: 0, count: 0 }
    e.size += s.nodes[i + 3]
    e.count++
    out.set(key, e)
  }
  return out
}

async function main() {
  if (typeof global.gc !== 'function') throw new Error('run with node --expose-gc')
  const args = process.argv.slice(2).filter((a) => !a.startsWith('--read'))
  const flag = process.argv.find((a) => a.startsWith('--read'))
  const read = flag === undefined ? null : flag === '--read' ? 'all' : flag.slice('--read='.length)
  const first = Number(args[0] || 200)
  const more = Number(args[1] || 1000)
  const redis = await startRedis()
  const one = smallTenant()
  const all = {}
  for (let i = 0; i < first + more; i++) all[tenantId('pt', i)] = one
  const sim = await startMultiTenantSim({ tenants: all })
  const pool = createTenantPool(poolOptions({ wrapperUrl: sim.url, redisUrl: redis.url }))
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pool-heap-'))
  const snap = (name) => {
    for (const s of sim.sims.values()) s.requests.length = 0
    sim.resetStats()
    global.gc()
    return v8.writeHeapSnapshot(path.join(dir, `${name}.heapsnapshot`))
  }
  const load = async (id) => {
    const c = await pool.tenant(id)
    if (read === null) return
    for (const r of one.credits) c.getCreditCost(r.operationCode)
    for (const r of one.roles) c.getRolePermissions(r.roleId)
    for (const r of one.configs) c.getActiveConfig(r.configId)
    if (read === 'status') for (const r of one.users) c.getUserStatus(r.userId)
    if (read === 'all') for (const r of one.users) c.checkPermission(r.userId, 'crm.any.read')
  }
  try {
    for (let i = 0; i < first; i++) await load(tenantId('pt', i))
    const a = byName(snap('a'))
    for (let i = first; i < first + more; i++) await load(tenantId('pt', i))
    const b = byName(snap('b'))
    const rows = [...b].map(([k, e]) => {
      const o = a.get(k) || { size: 0, count: 0 }
      return [k, (e.size - o.size) / more, (e.count - o.count) / more]
    })
    rows.sort((x, y) => y[1] - x[1])
    const total = rows.reduce((n, r) => n + r[1], 0)
    console.log(`V8 heap growth per tenant (self sizes): ${Math.round(total)} B`)
    for (const [k, bytes, count] of rows.slice(0, 16)) {
      console.log(
        `${String(Math.round(bytes)).padStart(7)} B ${count.toFixed(1).padStart(6)} objects  ${k}`,
      )
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
    await pool.shutdown()
    await sim.stop()
    await redis.stop()
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err)
    process.exit(1)
  },
)
