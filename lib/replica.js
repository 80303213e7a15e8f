'use strict'
// The JS read replica of the critical tables.
//
// Critical reads are answered here, on the JS thread, with plain Map lookups:
// a call into native code costs 300-500 ns (FIELD-NOTES), a Map.get about
// 17 ns. The Rust core owns the truth (versions, tombstones, validation) and
// ships each change here as a batch (see crates/core/src/delta.rs for the wire
// form); batches arrive in order and carry whole values, so applying them in
// order makes this replica equal to the core's store. A batch is applied in
// one synchronous step, so no read ever sees half of one.
//
// Permission checks compile each user's roles once into a Set of exact
// permissions, a short list of `prefix.` patterns and an `all` flag; the
// compiled form is cached on the user and rebuilt when the user or any role
// changes (a generation counter), so a check is one Map.get and one Set.has.

/** Compiles a role's permission list. */
function compileRole(perms) {
  const exact = new Set()
  const prefixes = []
  let all = false
  for (const p of perms) {
    if (p === '*') all = true
    else if (p.length > 2 && p.endsWith('.*')) prefixes.push(p.slice(0, -1))
    else exact.add(p)
  }
  return { perms: Object.freeze(perms), exact, prefixes, all }
}

const NO_ACCESS = Object.freeze({ all: false, exact: new Set(), prefixes: [] })

class Replica {
  constructor() {
    /** operationCode -> cost, or null when inactive */
    this.credits = new Map()
    /** roleId -> compiled role */
    this.roles = new Map()
    /** userId -> { status, roles, c (compiled access), g (roles generation of c) } */
    this.users = new Map()
    /** configId -> JSON text of the value */
    this.configs = new Map()
    /** bumped on every role change: invalidates compiled user access */
    this.rolesGen = 0
  }

  /** Applies one batch (JSON text); returns its notices, in order. */
  apply(json) {
    const b = JSON.parse(json)
    for (const [op, cost] of b.credits) this.credits.set(op, cost)
    for (const op of b.creditsDel) this.credits.delete(op)
    for (const [id, perms] of b.roles) this.roles.set(id, compileRole(perms))
    for (const id of b.rolesDel) this.roles.delete(id)
    if (b.roles.length > 0 || b.rolesDel.length > 0) this.rolesGen++
    for (const [id, status, roles] of b.users) {
      this.users.set(id, { status, roles: Object.freeze(roles), c: undefined, g: -1 })
    }
    for (const id of b.usersDel) this.users.delete(id)
    for (const [id, text] of b.configs) this.configs.set(id, text)
    for (const id of b.configsDel) this.configs.delete(id)
    return b.notices
  }

  /** Number of live entries in all four tables. */
  size() {
    return this.credits.size + this.roles.size + this.users.size + this.configs.size
  }

  /** The user's compiled access (cached until the user or a role changes). */
  access(user) {
    if (user.c !== undefined && user.g === this.rolesGen) return user.c
    let all = false
    const exact = new Set()
    const prefixes = []
    for (const roleId of user.roles) {
      const r = this.roles.get(roleId)
      if (r === undefined) continue
      if (r.all) all = true
      for (const p of r.exact) exact.add(p)
      for (const p of r.prefixes) if (!prefixes.includes(p)) prefixes.push(p)
    }
    const c = all || exact.size > 0 || prefixes.length > 0 ? { all, exact, prefixes } : NO_ACCESS
    user.c = c
    user.g = this.rolesGen
    return c
  }
}

/** True when compiled access `c` grants `permission`. */
function grants(c, permission) {
  if (c.all || c.exact.has(permission)) return true
  const pre = c.prefixes
  for (let i = 0; i < pre.length; i++) {
    const p = pre[i]
    if (permission.length > p.length && permission.startsWith(p)) return true
  }
  return false
}

module.exports = { Replica, grants, compileRole }
