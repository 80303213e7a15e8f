'use strict'
// The JS read replica of the critical tables.
//
// Critical reads are answered here, on the JS thread, with plain Map lookups:
// a call into native code costs 300-500 ns (FIELD-NOTES), a Map.get about
// 17 ns. The Rust core owns the truth (versions, tombstones, validation) and
// ships each change here as a batch (see crates/core/src/delta.rs for the wire
// form); batches arrive in order, carry whole values and are applied in one
// synchronous step, so no read of held keys ever sees half of one.
//
// The replica is lazy: it holds only the keys that were read. The first read
// of a credit, role, config or user asks the core (a native read that answers
// with the value and the number of batches the core has sent, `seq`), and the
// answer is kept only when `seq` equals the batches applied here: then every
// change older than the read is in the replica already and every later one is
// in a batch still to come. A batch updates the keys held here and ignores the
// others (the next read of one asks the core, which has it). So a tenant costs
// the JS heap what its app reads, not a copy of its tables. The price: a first
// read answers the core's current value, which may be ahead of the held keys
// by the changes still on their way (a batch in flight or pending), so across
// keys a read can see a later event before an earlier one for a moment, as a
// first read of a user always could; each key on its own never goes back. An unknown key is
// held as an ABSENT marker (so a hot miss is one Map.get too), at most
// MAX_ABSENT of them per table, so that reads of hostile keys cannot grow it;
// a batch that creates a held-absent key replaces the marker.
//
// Permission checks compile each user's roles once (each role read as above)
// into a Set of exact permissions, a short list of `prefix.` patterns and an
// `all` flag; the compiled form is cached on the user and rebuilt when the
// user or any role changes (a generation counter, bumped by every batch that
// changes a role, held here or not). Answers are memoised on the compiled
// form, so a repeated check is two Map lookups however many patterns the
// roles hold.

/** The held value of a key the core does not know. */
const ABSENT = Symbol('absent')
/** ABSENT markers held per table at most; further misses are not remembered. */
const MAX_ABSENT = 1024
/**
 * Longer strings cannot be ids (the id rule, crates/core/src/ids.rs: at most
 * 256 bytes of UTF-8, and each UTF-16 unit is at least one byte): they read
 * as unknown without asking the core, and are never held.
 */
const MAX_ID_LENGTH = 256

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

const same = (v) => v

/**
 * One lazily held table: key -> value as the replica keeps it (`make` turns
 * a wire value into it), or ABSENT; `absent` counts the ABSENT markers.
 */
class Held {
  constructor(make) {
    this.map = new Map()
    this.absent = 0
    this.make = make
  }

  /** A batch's upsert: applied to a held key only. */
  set(id, value) {
    const old = this.map.get(id)
    if (old === undefined) return
    if (old === ABSENT) this.absent--
    this.map.set(id, this.make(value))
  }

  /** A batch's delete: a held key becomes ABSENT (or is dropped, beyond the bound). */
  delete(id) {
    const old = this.map.get(id)
    if (old === undefined || old === ABSENT) return
    this.keep(id, ABSENT)
  }

  /** Holds `value` for `id` (an ABSENT one only within the bound). */
  keep(id, value) {
    if (value !== ABSENT) this.map.set(id, value)
    else if (this.absent < MAX_ABSENT) {
      this.map.set(id, ABSENT)
      this.absent++
    } else this.map.delete(id)
  }
}

class Replica {
  constructor() {
    /** operationCode -> cost, null when inactive, or ABSENT */
    this.credits = new Held(same)
    /** roleId -> compiled role, or ABSENT */
    this.roles = new Held(compileRole)
    /** configId -> JSON text of the value, or ABSENT */
    this.configs = new Held(same)
    /**
     * userId -> { status, roles, access (compiled, or undefined), accessGen
     * (the rolesGen it was compiled at) }. Filled on first access from the
     * core, and by every batch that changes a user; emptied by a batch with
     * `usersReset` (a full reload: users are read again on first access).
     */
    this.users = new Map()
    /** batches applied so far (compared with the core's count on a first read) */
    this.batchesApplied = 0
    /** bumped on every batch that changes a role: invalidates compiled user access */
    this.rolesGen = 0
  }

  /** Applies one batch (JSON text); returns its notices, in order. */
  apply(json) {
    const b = JSON.parse(json)
    this.batchesApplied++
    const { credits, roles, configs } = this
    for (const [op, cost] of b.credits) credits.set(op, cost)
    for (const op of b.creditsDel) credits.delete(op)
    for (const [id, perms] of b.roles) roles.set(id, perms)
    for (const id of b.rolesDel) roles.delete(id)
    if (b.roles.length > 0 || b.rolesDel.length > 0) this.rolesGen++
    if (b.usersReset) this.users = new Map()
    for (const [id, status, roles] of b.users) this.users.set(id, userEntry(status, roles))
    for (const id of b.usersDel) this.users.delete(id)
    for (const [id, text] of b.configs) configs.set(id, text)
    for (const id of b.configsDel) configs.delete(id)
    return b.notices
  }

  /**
   * The held value of `id` in `table` (this.credits, this.roles or
   * this.configs), reading it from the core on first access: `load(id)` is
   * the native read, `{ known, value, seq }`. Returns ABSENT for a key the
   * core does not know. The answer is kept only when no batch is still on its
   * way (`seq` equals the batches applied), as in `user()`.
   */
  read(table, id, load) {
    const held = table.map.get(id)
    if (held !== undefined) return held
    if (id.length > MAX_ID_LENGTH) return ABSENT
    const r = load(id)
    const value = r.known ? table.make(r.value) : ABSENT
    if (r.seq === this.batchesApplied) table.keep(id, value)
    return value
  }

  /**
   * The user's entry, reading it from the core on first access (`load(id)` is
   * the native read: `{ status, roles, seq }`, or null for an unknown user).
   * The answer is kept only when no batch is still on its way (`seq` equals
   * the batches applied), so a batch older than the read can never overwrite
   * it; unknown users are not kept.
   */
  user(id, load) {
    const u = this.users.get(id)
    if (u !== undefined) return u
    if (id.length > MAX_ID_LENGTH) return undefined
    const r = load(id)
    if (r === null) return undefined
    const entry = userEntry(r.status, r.roles)
    if (r.seq === this.batchesApplied) this.users.set(id, entry)
    return entry
  }

  /**
   * The user's compiled access (cached until the user or a role changes);
   * `loadRole` reads a role the replica does not hold (see `read`).
   */
  access(user, loadRole) {
    if (user.access !== undefined && user.accessGen === this.rolesGen) return user.access
    let all = false
    const exact = new Set()
    const prefixes = []
    for (const roleId of user.roles) {
      const r = this.read(this.roles, roleId, loadRole)
      if (r === ABSENT) continue
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

module.exports = { Replica, grants, compileRole, ABSENT, MAX_ABSENT }
