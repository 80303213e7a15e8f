'use strict'
// Profiling aid for row 1b: the cost of lib/replica.js `grants()` per kind of
// query (exact hit, prefix hit, denied) for a user with 5 roles × 50
// permissions (5 of them `prefix.*`), and of two candidate fixes, prototyped
// here only: a memo of answers per compiled access, and a lookup of each
// dot-prefix of the permission in a Set of the patterns.
//
//   node bench/profile/permission-kinds.js

const { Replica, grants } = require('../../lib/replica.js')
const data = require('../lib/data.js')

const replica = new Replica()
const roles = data.roles(40, 50, 5)
const users = data.users(64, 40, 5)
replica.apply(
  JSON.stringify({
    credits: [],
    creditsDel: [],
    roles: roles.map((r) => [r.roleId, r.permissions]),
    rolesDel: [],
    users: users.map((u) => [u.userId, u.status, u.roles]),
    usersDel: [],
    configs: [],
    configsDel: [],
    notices: [],
  }),
)

// The replica holds only what was read: roles come from this stand-in for the
// core's read on first use (lib/replica.js `read`).
const roleById = new Map(roles.map((r) => [r.roleId, r.permissions]))
const loadRole = (id) => {
  const perms = roleById.get(id)
  return { known: perms !== undefined, value: perms ?? null, seq: replica.batchesApplied }
}

/** Prototype 1: a bounded memo of answers on the compiled access object. */
function grantsMemo(c, permission) {
  let memo = c.memo
  if (memo === undefined) memo = c.memo = new Map()
  const hit = memo.get(permission)
  if (hit !== undefined) return hit
  const v = grants(c, permission)
  if (memo.size < 4096) memo.set(permission, v)
  return v
}

/** Prototype 2: each dot-prefix of the permission looked up in a Set of patterns. */
function grantsSegments(c, permission) {
  if (c.all || c.exact.has(permission)) return true
  let set = c.prefixSet
  if (set === undefined) set = c.prefixSet = new Set(c.prefixes)
  let i = permission.indexOf('.')
  while (i !== -1 && i < permission.length - 1) {
    if (set.has(permission.slice(0, i + 1))) return true
    i = permission.indexOf('.', i + 1)
  }
  return false
}

const user = 'user-0000000'
const [r0] = data.userRoles(0, 40, 5)
const n = r0.slice(5)
const kinds = {
  exact: `crm.r${n}.e20.act`,
  prefix: `crm.r${n}.p3.notes.edit`,
  denied: `crm.r${n}.e20.delete`,
}
const c0 = replica.access(replica.users.get(user), loadRole)
console.log(`user ${user}: ${c0.exact.size} exact permissions, ${c0.prefixes.length} prefixes`)

const N = 2e6
for (const [name, g] of [
  ['grants (package)', grants],
  ['memo prototype', grantsMemo],
  ['segments prototype', grantsSegments],
]) {
  for (const [kind, p] of Object.entries(kinds)) {
    // a fresh function per case: no shared, megamorphic call site
    const loop = new Function(
      'r',
      'g',
      'u',
      'p',
      'n',
      'l',
      'let a = 0; for (let i = 0; i < n; i++) { if (g(r.access(r.users.get(u), l), p)) a++ } return a',
    )
    const out = []
    for (let rep = 0; rep < 5; rep++) {
      const t0 = process.hrtime.bigint()
      loop(replica, g, user, p, N, loadRole)
      out.push(Number(process.hrtime.bigint() - t0) / N)
    }
    out.sort((a, b) => a - b)
    console.log(`${name.padEnd(20)} ${kind.padEnd(7)} median ${out[2].toFixed(1)} ns/check`)
  }
}
