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
// changes (a generation counter). Answers are memoised on the compiled form,
// so a repeated check is two Map lookups however many patterns the roles hold.

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

/** A replica user entry; its compiled access is filled on first check. */
function userEntry(status, roles) {
  return { status, roles: Object.freeze(roles), access: undefined, accessGen: -1 }
}

class Replica {
  constructor() {
    /** operationCode -> cost, or null when inactive */
    this.credits = new Map()
    /** roleId -> compiled role */
    this.roles = new Map()
    /**
     * userId -> { status, roles, access (compiled, or undefined), accessGen
     * (the rolesGen it was compiled at) }. Filled on first access from the
     * core, and by every batch that changes a user; emptied by a batch with
     * `usersReset` (a full reload: users are read again on first access).
     */
    this.users = new Map()
    /** batches applied so far (compared with the core's count on a first access) */
    this.batchesApplied = 0
    /** configId -> JSON text of the value */
    this.configs = new Map()
    /** bumped on every role change: invalidates compiled user access */
    this.rolesGen = 0
  }

  /** Applies one batch (JSON text); returns its notices, in order. */
  apply(json) {
    const b = JSON.parse(json)
    this.batchesApplied++
    for (const [op, cost] of b.credits) this.credits.set(op, cost)
    for (const op of b.creditsDel) this.credits.delete(op)
    for (const [id, perms] of b.roles) this.roles.set(id, compileRole(perms))
    for (const id of b.rolesDel) this.roles.delete(id)
    if (b.roles.length > 0 || b.rolesDel.length > 0) this.rolesGen++
    if (b.usersReset) this.users = new Map()
    for (const [id, status, roles] of b.users) this.users.set(id, userEntry(status, roles))
    for (const id of b.usersDel) this.users.delete(id)
    for (const [id, text] of b.configs) this.configs.set(id, text)
    for (const id of b.configsDel) this.configs.delete(id)
    return b.notices
  }

  /**
   * The user's entry, reading it from the core on first access (`load(id)` is
   * the native read: `{ status, roles, seq }`, or null for an unknown user). The answer is kept only when no batch is still on its
   * way (`batchesSent` equals the batches applied), so a batch older than the
   * read can never overwrite it; unknown users are not kept.
   */
  user(id, load) {
    const u = this.users.get(id)
    if (u !== undefined) return u
    const r = load(id)
    if (r === null) return undefined
    const entry = userEntry(r.status, r.roles)
    if (r.seq === this.batchesApplied) this.users.set(id, entry)
    return entry
  }

  /** The user's compiled access (cached until the user or a role changes). */
  access(user) {
    if (user.access !== undefined && user.accessGen === this.rolesGen) return user.access
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
    const compiled = { all, exact, prefixes, memo: new Map() }
    user.access = compiled
    user.accessGen = this.rolesGen
    return compiled
  }
}

/** Most answers remembered per compiled access before the memo starts over. */
const MEMO_LIMIT = 4096

/**
 * True when compiled access `c` grants `permission`. Answers are memoised on
 * `c` (which is replaced whenever the user or any role changes), so a repeated
 * check is one Map.get whatever the number of patterns.
 */
function grants(c, permission) {
  const known = c.memo.get(permission)
  if (known !== undefined) return known
  let ok = c.all || c.exact.has(permission)
  if (!ok) {
    const pre = c.prefixes
    for (let i = 0; i < pre.length; i++) {
      const p = pre[i]
      if (permission.length > p.length && permission.startsWith(p)) {
        ok = true
        break
      }
    }
  }
  if (c.memo.size >= MEMO_LIMIT) c.memo.clear()
  c.memo.set(permission, ok)
  return ok
}

module.exports = { Replica, grants, compileRole }
