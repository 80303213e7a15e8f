//! The critical store: credit costs, role permissions, user access and active
//! configs, with per-entity versions and delete tombstones (SPEC §3 rules).
//!
//! The store is the authoritative in-process copy. All four tables are one
//! type, [`Table`], which owns the version rule, the tombstones and a live
//! count kept as it goes (so sizes are O(1)). Every change an event makes is
//! also written into a [`Delta`], which the outbox ships to the JS read
//! replica, so the replica converges to exactly this state.
//!
//! A full reload never rebuilds a table in place: [`CriticalStore::from_snapshot`]
//! builds a complete new store from the snapshot rows (the binary shared
//! snapshot decodes straight into a [`StoreBuilder`] instead), off any lock, and the
//! consumer swaps it in whole (see `reload.rs`). [`CriticalStore::diff_into`]
//! then tells the replica what changed: the small tables key by key, users by
//! one "reset" (the replica reads users from the store on first access, so a
//! reload of a million users ships none of them).
//!
//! The store itself is not synchronised; the consumer keeps it behind one
//! `RwLock`, written only by the subscription task.

use std::collections::HashMap as StdHashMap;
use std::hash::BuildHasher;

use compact_str::CompactString;
use serde_json::value::RawValue;

use crate::delta::Delta;
use crate::error::{CoreError, Result};
use crate::ids::check_row_id;
use crate::intern::{self, Names};
use crate::model::{
    Access, ConfigRow, Credit, CreditRow, CreditRowRef, RoleRow, RoleRowRef, Snapshot, UserRow,
    UserRowRef,
};
use crate::protocol::{Change, Event, Rejection};

/// The tables' map: foldhash (randomly seeded, several times faster than
/// SipHash on short keys) matters when a full load inserts a million users.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

/// An entry with its version; `value == None` is a delete tombstone.
#[derive(Debug, Clone, PartialEq)]
struct Slot<T> {
    /// `None` after a delete; kept so a late, older upsert stays ignored.
    value: Option<T>,
    /// The highest version applied to this entity, if any was given.
    version: Option<u64>,
}

/// One versioned table: entity id → value, with tombstones and a live count.
#[derive(Debug, Clone)]
pub struct Table<T> {
    /// Entries and tombstones. Ids of up to 24 bytes are held inline in the
    /// key (no allocation per entity).
    map: HashMap<CompactString, Slot<T>>,
    /// Entries that are not tombstones (kept up to date by every write).
    live: usize,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            map: HashMap::default(),
            live: 0,
        }
    }
}

impl<T: PartialEq> Table<T> {
    fn with_capacity(n: usize) -> Self {
        Table {
            map: HashMap::with_capacity_and_hasher(n, Default::default()),
            live: 0,
        }
    }

    /// The live value of `key`.
    pub fn get(&self, key: &str) -> Option<&T> {
        self.map.get(key)?.value.as_ref()
    }

    /// Live entries (tombstones excluded). O(1).
    pub fn live(&self) -> usize {
        self.live
    }

    /// The version rule: an event whose version is not newer than the one
    /// held is stale.
    fn check(&self, key: &str, version: Option<u64>) -> Result<(), Rejection> {
        match (self.map.get(key).and_then(|s| s.version), version) {
            (Some(held), Some(v)) if v <= held => Err(Rejection::Stale),
            _ => Ok(()),
        }
    }

    /// Writes `value` (`None` = tombstone) under `key`, keeping the higher of
    /// the held and the given version.
    fn put(&mut self, key: &str, value: Option<T>, version: Option<u64>) {
        let is_live = value.is_some();
        let old = match self.map.get_mut(key) {
            Some(slot) => {
                let was_live = slot.value.is_some();
                slot.value = value;
                slot.version = version.or(slot.version);
                Some(was_live)
            }
            None => {
                self.map
                    .insert(CompactString::new(key), Slot { value, version });
                None
            }
        };
        if old == Some(true) {
            self.live -= 1;
        }
        if is_live {
            self.live += 1;
        }
    }

    /// Adds a snapshot row (a repeated id: the later row wins).
    fn insert_row(&mut self, key: &str, value: T, version: Option<u64>) {
        let slot = Slot {
            value: Some(value),
            version,
        };
        if let Some(old) = self.map.insert(CompactString::new(key), slot) {
            if old.value.is_some() {
                self.live -= 1;
            }
        }
        self.live += 1;
    }

    /// The live entries sorted by key, with their versions.
    fn sorted(&self) -> Vec<(&str, &T, Option<u64>)> {
        let mut v: Vec<(&str, &T, Option<u64>)> = self
            .map
            .iter()
            .filter_map(|(k, s)| s.value.as_ref().map(|v| (k.as_str(), v, s.version)))
            .collect();
        v.sort_unstable_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Calls `emit(key, new)` for every key whose live value differs between
    /// `self` (old) and `new` (`None` = now absent).
    fn diff(&self, new: &Table<T>, mut emit: impl FnMut(&str, Option<&T>)) {
        for (k, slot) in &new.map {
            if slot.value.as_ref() != self.get(k) {
                emit(k, slot.value.as_ref());
            }
        }
        for (k, slot) in &self.map {
            if slot.value.is_some() && new.get(k).is_none() {
                emit(k, None);
            }
        }
    }
}

/// A user entry's `flags`: a version was given.
const HAS_VERSION: u32 = 1;
/// A user entry's `shape` after a delete (a tombstone).
const TOMBSTONE: u32 = u32::MAX;

/// One user of [`UserTable`]: 40 bytes, no allocation for ids of up to 24
/// bytes.
#[derive(Debug, Clone)]
struct UserEntry {
    /// The user id (inline up to 24 bytes).
    id: CompactString,
    /// The highest version applied, meaningful when `flags & HAS_VERSION`.
    version: u64,
    /// Index of the access in [`UserTable::shapes`]; [`TOMBSTONE`] after a
    /// delete (kept so a late, older upsert stays ignored).
    shape: u32,
    /// [`HAS_VERSION`].
    flags: u32,
}

impl UserEntry {
    /// The version as the rule reads it.
    fn version(&self) -> Option<u64> {
        (self.flags & HAS_VERSION != 0).then_some(self.version)
    }

    /// Sets the version (`None` keeps the held one, as `Table::put` does).
    fn set_version(&mut self, version: Option<u64>) {
        if let Some(v) = version {
            self.version = v;
            self.flags |= HAS_VERSION;
        }
    }
}

/// The users table: a dense `Vec` of [`UserEntry`] (in the order users were
/// first written; tombstones stay in place) and a `hashbrown::HashTable` of
/// indices into it, hashed by id, so an id is stored once and a user costs
/// its 40-byte entry plus about 5 bytes of index (a `HashMap<CompactString,
/// _>` slot of the generic [`Table`] took ~100). A million users share a few
/// hundred (status, roles) shapes, kept once per table in `shapes`.
///
/// Same rules as [`Table`]: the version rule, tombstones, the live count.
#[derive(Clone, Default)]
pub struct UserTable {
    /// Entries and tombstones, in the order of their first write.
    entries: Vec<UserEntry>,
    /// Index into `entries`, hashed by the entry's id with `hasher`.
    index: hashbrown::HashTable<u32>,
    /// The index's hasher (randomly seeded foldhash).
    hasher: foldhash::fast::RandomState,
    /// The distinct accesses of this table, indexed by `UserEntry::shape`.
    shapes: Vec<Access>,
    /// Shape address (`Access::shape_addr`) → index in `shapes`.
    shape_of: HashMap<usize, u32>,
    /// When `shapes` reaches this many, the ones no entry uses are dropped
    /// ([`UserTable::compact_shapes`]); the check never takes less than
    /// [`MIN_SHAPES_COMPACTED`].
    compact_at: usize,
    /// Entries that are not tombstones.
    live: usize,
}

/// `shapes` is compacted no sooner than at this size (then again at twice
/// what survived), so events that keep giving users new role sets cost
/// O(users) once per that many new shapes, and the table keeps no more than
/// about twice the shapes its users hold.
const MIN_SHAPES_COMPACTED: usize = 1024;

impl std::fmt::Debug for UserTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTable")
            .field("entries", &self.entries.len())
            .field("live", &self.live)
            .field("shapes", &self.shapes.len())
            .finish()
    }
}

impl UserTable {
    /// A table with room for `n` users without growing.
    fn with_capacity(n: usize) -> Self {
        UserTable {
            entries: Vec::with_capacity(n),
            index: hashbrown::HashTable::with_capacity(n),
            ..Default::default()
        }
    }

    /// Room for `n` more users.
    fn reserve(&mut self, n: usize) {
        self.entries.reserve(n);
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index
            .reserve(n, |&j| hasher.hash_one(entries[j as usize].id.as_str()));
    }

    /// The position of `key` in `entries`.
    fn find(&self, key: &str) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        self.index
            .find(hash, |&i| entries[i as usize].id == key)
            .map(|&i| i as usize)
    }

    /// The live access of `key`.
    pub fn get(&self, key: &str) -> Option<&Access> {
        let e = &self.entries[self.find(key)?];
        self.shapes.get(e.shape as usize)
    }

    /// Live users (tombstones excluded). O(1).
    pub fn live(&self) -> usize {
        self.live
    }

    /// The index of `access` in `shapes`, adding it when new.
    fn shape(&mut self, access: Access) -> u32 {
        let addr = access.shape_addr();
        if let Some(&i) = self.shape_of.get(&addr) {
            return i;
        }
        if self.shapes.len() >= self.compact_at.max(MIN_SHAPES_COMPACTED) {
            self.compact_shapes();
        }
        let i = self.shapes.len() as u32;
        self.shapes.push(access);
        self.shape_of.insert(addr, i);
        i
    }

    /// Drops the shapes no entry refers to (events replaced them), keeping
    /// the others in their order, and renumbers the entries. O(entries).
    fn compact_shapes(&mut self) {
        let mut new_index = vec![TOMBSTONE; self.shapes.len()];
        let mut kept: Vec<Access> = Vec::new();
        for e in &mut self.entries {
            if e.shape == TOMBSTONE {
                continue;
            }
            let slot = &mut new_index[e.shape as usize];
            if *slot == TOMBSTONE {
                *slot = kept.len() as u32;
                kept.push(self.shapes[e.shape as usize].clone());
            }
            e.shape = *slot;
        }
        self.shape_of = kept
            .iter()
            .enumerate()
            .map(|(i, a)| (a.shape_addr(), i as u32))
            .collect();
        self.shapes = kept;
        self.compact_at = 2 * self.shapes.len();
    }

    /// The version rule (see [`Table`]).
    fn check(&self, key: &str, version: Option<u64>) -> Result<(), Rejection> {
        let held = self.find(key).and_then(|i| self.entries[i].version());
        match (held, version) {
            (Some(held), Some(v)) if v <= held => Err(Rejection::Stale),
            _ => Ok(()),
        }
    }

    /// Writes `value` (`None` = tombstone) under `key`; with `keep_version`
    /// a `None` version keeps the held one (events), without it the given
    /// one replaces it (a repeated snapshot row: the later row wins).
    fn write(
        &mut self,
        key: &str,
        value: Option<Access>,
        version: Option<u64>,
        keep_version: bool,
    ) {
        let shape = match value {
            Some(a) => self.shape(a),
            None => TOMBSTONE,
        };
        let is_live = shape != TOMBSTONE;
        match self.find(key) {
            Some(i) => {
                let e = &mut self.entries[i];
                if e.shape != TOMBSTONE {
                    self.live -= 1;
                }
                e.shape = shape;
                if !keep_version {
                    e.flags &= !HAS_VERSION;
                }
                e.set_version(version);
            }
            None => {
                // 4 billion users would take 160 GB of entries first.
                let i = u32::try_from(self.entries.len()).unwrap_or(u32::MAX - 1);
                let mut e = UserEntry {
                    id: CompactString::new(key),
                    version: 0,
                    shape,
                    flags: 0,
                };
                e.set_version(version);
                self.entries.push(e);
                let (entries, hasher) = (&self.entries, &self.hasher);
                self.index.insert_unique(hasher.hash_one(key), i, |&j| {
                    hasher.hash_one(entries[j as usize].id.as_str())
                });
            }
        }
        if is_live {
            self.live += 1;
        }
    }

    /// Writes an event's value, keeping the higher of the held and the given
    /// version (as [`Table`] does).
    fn put(&mut self, key: &str, value: Option<Access>, version: Option<u64>) {
        self.write(key, value, version, true);
    }

    /// Adds a snapshot row (a repeated id: the later row wins, in the place
    /// of the first).
    fn insert_row(&mut self, key: &str, access: Access, version: Option<u64>) {
        self.write(key, Some(access), version, false);
    }

    /// The live users with their versions, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Access, Option<u64>)> {
        self.entries.iter().filter_map(|e| {
            let a = self.shapes.get(e.shape as usize)?;
            Some((e.id.as_str(), a, e.version()))
        })
    }

    /// The distinct accesses this table refers to (some may be unused after
    /// events replaced them).
    pub fn shapes(&self) -> &[Access] {
        &self.shapes
    }

    /// The live users as (id, index into [`UserTable::shapes`], version), in
    /// table order (the shared snapshot's encoder).
    pub fn iter_indexed(&self) -> impl Iterator<Item = (&str, u32, Option<u64>)> {
        self.entries
            .iter()
            .filter(|e| e.shape != TOMBSTONE)
            .map(|e| (e.id.as_str(), e.shape, e.version()))
    }
}

/// What applying an event did, beyond the delta. The keys of its `'change'`
/// notice are not built here: `Event::change_keys` builds them, only when
/// JS listens.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Applied {
    /// Reference keys to invalidate.
    pub invalidate: Vec<String>,
    /// The event asked for a full reload.
    pub resync: bool,
}

/// The reads a JS replica makes on a key's first access (lib/replica.js):
/// the store's answer as it is now, with the number of replica batches handed
/// out as of the read, so the replica keeps the answer only if it has applied
/// that many (no older batch can overwrite it: the batch-sequence rule,
/// ARCHITECTURE.md invariant 3). Implemented by the consumer and by the test
/// double, which differ only in where their store and that count live.
pub trait FirstReads {
    /// `read` on the store as it is now, with the batches handed out so far.
    fn read_store<T>(&self, read: impl FnOnce(&CriticalStore) -> Option<T>) -> (Option<T>, u64);

    /// A user's access.
    fn user_access(&self, user_id: &str) -> (Option<Access>, u64) {
        self.read_store(|s| s.user_access(user_id).cloned())
    }

    /// An operation's credit config, active or not.
    fn credit(&self, op: &str) -> (Option<Credit>, u64) {
        self.read_store(|s| s.credit(op).cloned())
    }

    /// A role's permissions.
    fn role_permissions(&self, role_id: &str) -> (Option<Vec<String>>, u64) {
        self.read_store(|s| {
            s.role_permissions(role_id)
                .map(|p| p.iter().map(|n| n.to_string()).collect())
        })
    }

    /// A config's JSON text.
    fn config_json(&self, config_id: &str) -> (Option<String>, u64) {
        self.read_store(|s| s.config_json(config_id).map(str::to_owned))
    }
}

/// The critical tables. See the module docs.
#[derive(Debug, Default)]
pub struct CriticalStore {
    /// `operationCode` → credit config.
    credits: Table<Credit>,
    /// `roleId` → permission list (interned: equal lists are shared).
    roles: Table<Names>,
    /// `userId` → access: the dense [`UserTable`] (a million users).
    users: UserTable,
    /// `configId` → compact JSON text of the value.
    configs: Table<String>,
}

/// What [`write`] needs of a table: the generic [`Table`] and the dense
/// [`UserTable`] keep the same version rule.
trait Versioned {
    /// The table's value.
    type Value;
    /// The version rule.
    fn check(&self, key: &str, version: Option<u64>) -> Result<(), Rejection>;
    /// The live value.
    fn get(&self, key: &str) -> Option<&Self::Value>;
    /// Writes a value or a tombstone, keeping the higher version.
    fn put(&mut self, key: &str, value: Option<Self::Value>, version: Option<u64>);
}

impl<T: PartialEq> Versioned for Table<T> {
    type Value = T;
    fn check(&self, key: &str, version: Option<u64>) -> Result<(), Rejection> {
        Table::check(self, key, version)
    }
    fn get(&self, key: &str) -> Option<&T> {
        Table::get(self, key)
    }
    fn put(&mut self, key: &str, value: Option<T>, version: Option<u64>) {
        Table::put(self, key, value, version)
    }
}

impl Versioned for UserTable {
    type Value = Access;
    fn check(&self, key: &str, version: Option<u64>) -> Result<(), Rejection> {
        UserTable::check(self, key, version)
    }
    fn get(&self, key: &str) -> Option<&Access> {
        UserTable::get(self, key)
    }
    fn put(&mut self, key: &str, value: Option<Access>, version: Option<u64>) {
        UserTable::put(self, key, value, version)
    }
}

/// Writes one entity: the version rule, then `value(old)` as the new value
/// (`None` = delete), recorded into the delta by `emit`.
fn write<V: Versioned>(
    table: &mut V,
    key: &str,
    version: Option<u64>,
    value: impl FnOnce(Option<&V::Value>) -> Option<V::Value>,
    emit: impl FnOnce(&str, Option<&V::Value>),
) -> Result<(), Rejection> {
    table.check(key, version)?;
    let new = value(table.get(key));
    emit(key, new.as_ref());
    table.put(key, new, version);
    Ok(())
}

impl CriticalStore {
    /// Applies one validated event, recording replica changes into `delta`.
    ///
    /// Returns [`Rejection::Stale`] (and changes nothing) when the event's
    /// version is not newer than the entity's.
    pub fn apply(&mut self, ev: &Event, delta: &mut Delta) -> Result<Applied, Rejection> {
        let v = ev.version;
        let mut out = Applied::default();
        match &ev.change {
            Change::CreditSet {
                operation_code: op,
                cost,
                is_active,
            } => {
                let cost = *cost;
                let set = |old: Option<&Credit>| {
                    Some(Credit {
                        cost,
                        active: is_active.or(old.map(|c| c.active)).unwrap_or(true),
                    })
                };
                write(&mut self.credits, op, v, set, |k, c| delta.set_credit(k, c))?;
            }
            Change::CreditDelete { operation_code: op } => {
                write(
                    &mut self.credits,
                    op,
                    v,
                    |_| None,
                    |k, c| delta.set_credit(k, c),
                )?;
            }
            Change::RoleSet {
                role_id,
                permissions,
            } => {
                let set = |_: Option<&Names>| Some(intern::names(permissions));
                write(&mut self.roles, role_id, v, set, |k, p| {
                    delta.set_role(k, p)
                })?;
            }
            Change::RoleDelete { role_id } => {
                write(
                    &mut self.roles,
                    role_id,
                    v,
                    |_| None,
                    |k, p| delta.set_role(k, p),
                )?;
            }
            Change::UserStatus {
                user_id,
                status,
                roles,
            } => {
                let set = |old: Option<&Access>| {
                    Some(match (roles, old) {
                        (Some(r), _) => Access::new(status, r),
                        (None, Some(old)) => Access::with_roles(status, old.role_list().clone()),
                        (None, None) => Access::new::<&str>(status, &[]),
                    })
                };
                write(&mut self.users, user_id, v, set, |k, a| {
                    delta.set_user(k, a)
                })?;
            }
            Change::UserChanged { user_id } => {
                let key = format!("user:{user_id}");
                out.invalidate.push(key);
            }
            Change::UserDeleted { user_id } => {
                write(
                    &mut self.users,
                    user_id,
                    v,
                    |_| None,
                    |k, a| delta.set_user(k, a),
                )?;
                let key = format!("user:{user_id}");
                out.invalidate.push(key);
            }
            Change::HierarchyChanged { entity_id } => {
                let key = format!("hierarchy:{entity_id}");
                out.invalidate.push(key);
            }
            Change::ConfigSet { config_id, json } => {
                let set = |_: Option<&String>| Some(json.clone());
                write(&mut self.configs, config_id, v, set, |k, j| {
                    delta.set_config(k, j)
                })?;
            }
            Change::ConfigDelete { config_id } => {
                write(
                    &mut self.configs,
                    config_id,
                    v,
                    |_| None,
                    |k, j| delta.set_config(k, j),
                )?;
            }
            Change::CacheInvalidate { keys } => {
                out.invalidate.extend(keys.iter().cloned());
            }
            Change::ResyncRequired => out.resync = true,
        }
        Ok(out)
    }

    /// Builds a complete store from snapshot rows (the rows are moved in,
    /// never copied), through a [`StoreBuilder`]. Pure and lock-free: a
    /// reload runs it on its own task.
    ///
    /// Fails with `INVALID_RESPONSE` when a row breaks a rule events must keep
    /// too (SPEC §3's one id rule, for role lists too; a cost that is negative
    /// or not finite).
    pub fn from_snapshot(snap: Snapshot) -> Result<CriticalStore> {
        Self::from_rows(&snap)
    }

    /// [`CriticalStore::from_snapshot`] from borrowed rows: the caller drops
    /// them when it likes (a million rows take ~150 ms to free; a load frees
    /// them after it has installed the store, not before).
    pub fn from_rows(snap: &Snapshot) -> Result<CriticalStore> {
        let mut b = StoreBuilder::with_capacity([
            snap.credits.len(),
            snap.roles.len(),
            snap.users.len(),
            snap.configs.len(),
        ]);
        for r in &snap.credits {
            b.push_credit(
                &r.operation_code,
                r.credit_cost,
                r.is_active.unwrap_or(true),
                r.version,
            )?;
        }
        // Each distinct permission list and (status, roles) shape takes the
        // interner's lock once; the rows after it share what it returned.
        let mut local = intern::Local::default();
        for r in &snap.roles {
            let perms = local.names(&r.permissions);
            b.push_role(&r.role_id, perms, r.version)?;
        }
        for (i, r) in snap.users.iter().enumerate() {
            for role in &r.roles {
                check_row_id(USERS, "roles[]", i, role)?;
            }
            let a = local.access(&r.status, &r.roles);
            b.push_user(&r.user_id, a, r.version)?;
        }
        for r in &snap.configs {
            let json = serde_json::to_string(&r.config).unwrap_or_else(|_| "null".into());
            b.push_config(&r.config_id, json, r.version)?;
        }
        Ok(b.finish())
    }

    /// Writes into `delta` what the replica must do to go from `self` (the
    /// store it mirrors now) to `new`: every differing credit, role and
    /// config, and a reset of the users (the replica reads them again from
    /// the store on first access). O(credits + roles + configs), whatever the
    /// number of users.
    pub fn diff_into(&self, new: &CriticalStore, delta: &mut Delta) {
        self.diff_changed(new, [false; 4], delta);
    }

    /// [`CriticalStore::diff_into`] for the tables not marked `unchanged`
    /// (credits, roles, users, configs: a conditional load's 304s, whose
    /// tables [`CriticalStore::adopt`] moves over unchanged).
    pub fn diff_changed(&self, new: &CriticalStore, unchanged: [bool; 4], delta: &mut Delta) {
        if !unchanged[0] {
            self.credits
                .diff(&new.credits, |k, v| delta.set_credit(k, v));
        }
        if !unchanged[1] {
            self.roles.diff(&new.roles, |k, v| delta.set_role(k, v));
        }
        if !unchanged[2] {
            delta.reset_users();
        }
        if !unchanged[3] {
            self.configs
                .diff(&new.configs, |k, v| delta.set_config(k, v));
        }
    }

    /// Moves the tables marked `unchanged` from `old` into this store (O(1)
    /// each): the Wrapper said they did not change since they were loaded,
    /// and `old` holds every event applied to them since.
    pub fn adopt(&mut self, old: &mut CriticalStore, unchanged: [bool; 4]) {
        if unchanged[0] {
            std::mem::swap(&mut self.credits, &mut old.credits);
        }
        if unchanged[1] {
            std::mem::swap(&mut self.roles, &mut old.roles);
        }
        if unchanged[2] {
            std::mem::swap(&mut self.users, &mut old.users);
        }
        if unchanged[3] {
            std::mem::swap(&mut self.configs, &mut old.configs);
        }
    }

    /// The cost of an active operation (Rust-side read, used by tests and tools).
    pub fn credit_cost(&self, op: &str) -> Option<f64> {
        self.credits.get(op).filter(|c| c.active).map(|c| c.cost)
    }

    /// An operation's credit config, active or not (the JS replica's first
    /// read tells an inactive operation from an unknown one).
    pub fn credit(&self, op: &str) -> Option<&Credit> {
        self.credits.get(op)
    }

    /// A role's permissions.
    pub fn role_permissions(&self, role: &str) -> Option<&[intern::Name]> {
        self.roles.get(role).map(|p| &p[..])
    }

    /// A user's access.
    pub fn user_access(&self, user: &str) -> Option<&Access> {
        self.users.get(user)
    }

    /// A config's JSON text.
    pub fn config_json(&self, id: &str) -> Option<&str> {
        self.configs.get(id).map(String::as_str)
    }

    /// The live entries as snapshot rows, with their versions (tombstones
    /// left out): what a Wrapper holding exactly this state would send.
    /// `CriticalStore::from_snapshot(s.rows())` is the store a full reload
    /// from it would build (the test double's `resync-required`, testing.rs).
    pub fn rows(&self) -> Snapshot {
        fn live<T>(t: &Table<T>) -> impl Iterator<Item = (&CompactString, &T, Option<u64>)> {
            t.map
                .iter()
                .filter_map(|(k, s)| s.value.as_ref().map(|v| (k, v, s.version)))
        }
        Snapshot {
            credits: live(&self.credits)
                .map(|(k, c, version)| CreditRow {
                    operation_code: k.to_string(),
                    credit_cost: c.cost,
                    is_active: Some(c.active),
                    version,
                })
                .collect(),
            roles: live(&self.roles)
                .map(|(k, p, version)| RoleRow {
                    role_id: k.to_string(),
                    permissions: p.iter().map(|n| n.to_string()).collect(),
                    version,
                })
                .collect(),
            users: self
                .users
                .iter()
                .map(|(k, a, version)| UserRow {
                    user_id: k.to_string(),
                    status: a.status().to_owned(),
                    roles: a.roles().iter().map(|n| n.to_string()).collect(),
                    version,
                })
                .collect(),
            configs: live(&self.configs)
                .map(|(k, j, version)| ConfigRow {
                    config_id: k.to_string(),
                    config: serde_json::from_str(j).unwrap_or_default(),
                    version,
                })
                .collect(),
            unchanged: [false; 4],
        }
    }

    /// The live credits sorted by id, with their versions (the shared
    /// snapshot's encoder: sorted, so equal tables give equal bytes).
    pub fn credits_sorted(&self) -> Vec<(&str, &Credit, Option<u64>)> {
        self.credits.sorted()
    }

    /// The live roles sorted by id, with their versions.
    pub fn roles_sorted(&self) -> Vec<(&str, &Names, Option<u64>)> {
        self.roles.sorted()
    }

    /// The live configs sorted by id: (id, JSON text, version).
    pub fn configs_sorted(&self) -> Vec<(&str, &str, Option<u64>)> {
        self.configs
            .sorted()
            .into_iter()
            .map(|(k, j, v)| (k, j.as_str(), v))
            .collect()
    }

    /// The users table (the shared snapshot's encoder reads it in order).
    pub fn users(&self) -> &UserTable {
        &self.users
    }

    /// Live entries (tombstones excluded) per table: credits, roles, users,
    /// configs. O(1).
    pub fn sizes(&self) -> [usize; 4] {
        [
            self.credits.live(),
            self.roles.live(),
            self.users.live(),
            self.configs.live(),
        ]
    }
}

/// The Wrapper path of the users list (error messages of snapshot rows).
const USERS: &str = "/api/users/access";

/// Builds a complete [`CriticalStore`] one snapshot row at a time, keeping
/// the rules [`CriticalStore::from_snapshot`] keeps (it is built on this): a
/// row id follows the one id rule (`check_row_id`), a cost is finite and
/// non-negative, and of a repeated id the later row wins. Rows are counted
/// per table, so an error names the row's position as the Wrapper's list
/// would.
///
/// Values come in already made: a role's permission list as interned
/// [`Names`], a user's access as one interned [`Access`] shape (the caller
/// makes each distinct shape once and clones it per user, an `Arc`
/// increment) and a config as its JSON text. The roles of an access are the
/// caller's to check (`roles[]` follows the id rule too): once per shape, not
/// once per user. Used by the binary shared snapshot (snapshot.rs), which
/// decodes straight into it without rows in between.
#[derive(Debug, Default)]
pub struct StoreBuilder {
    /// The store being built.
    store: CriticalStore,
    /// Rows pushed so far per table (credits, roles, users, configs).
    rows: [usize; 4],
}

impl StoreBuilder {
    /// A builder whose tables have room for `sizes` rows (credits, roles,
    /// users, configs) without rehashing; a bound, not a promise.
    pub fn with_capacity(sizes: [usize; 4]) -> StoreBuilder {
        StoreBuilder {
            store: CriticalStore {
                credits: Table::with_capacity(sizes[0]),
                roles: Table::with_capacity(sizes[1]),
                users: UserTable::with_capacity(sizes[2]),
                configs: Table::with_capacity(sizes[3]),
            },
            rows: [0; 4],
        }
    }

    /// The position of the next row of table `t`, counting this one.
    fn row(&mut self, t: usize) -> usize {
        self.rows[t] += 1;
        self.rows[t] - 1
    }

    /// Adds a credit config.
    pub fn push_credit(
        &mut self,
        id: &str,
        cost: f64,
        active: bool,
        version: Option<u64>,
    ) -> Result<()> {
        let i = self.row(0);
        check_row_id("/api/credits/configs", "operationCode", i, id)?;
        if !cost.is_finite() || cost < 0.0 {
            return Err(CoreError::InvalidResponse(format!(
                "GET /api/credits/configs: row {i}: creditCost is not a finite, non-negative number"
            )));
        }
        let c = Credit {
            cost: cost + 0.0,
            active,
        };
        self.store.credits.insert_row(id, c, version);
        Ok(())
    }

    /// Adds a role with its (interned) permission list.
    pub fn push_role(&mut self, id: &str, permissions: Names, version: Option<u64>) -> Result<()> {
        let i = self.row(1);
        check_row_id("/api/roles", "roleId", i, id)?;
        self.store.roles.insert_row(id, permissions, version);
        Ok(())
    }

    /// Adds a user with its (interned, roles already checked) access.
    pub fn push_user(&mut self, id: &str, access: Access, version: Option<u64>) -> Result<()> {
        let i = self.row(2);
        check_row_id(USERS, "userId", i, id)?;
        self.store.users.insert_row(id, access, version);
        Ok(())
    }

    /// Adds an active config with the compact JSON text of its value.
    pub fn push_config(&mut self, id: &str, json: String, version: Option<u64>) -> Result<()> {
        let i = self.row(3);
        check_row_id("/api/configs/active", "configId", i, id)?;
        self.store.configs.insert_row(id, json, version);
        Ok(())
    }

    /// The store.
    pub fn finish(self) -> CriticalStore {
        self.store
    }

    /// The store of a load's four lists, each built apart ([`ListBuilder`]):
    /// each table is moved out of its list's builder (O(1)). A list missing
    /// (`None`: the Wrapper answered 304) leaves its table empty, for
    /// [`CriticalStore::adopt`] to fill.
    pub fn join(lists: [Option<ListBuilder>; 4]) -> CriticalStore {
        let mut store = CriticalStore::default();
        for l in lists.into_iter().flatten() {
            let mut s = l.builder.store;
            match l.list {
                List::Credits => std::mem::swap(&mut store.credits, &mut s.credits),
                List::Roles => std::mem::swap(&mut store.roles, &mut s.roles),
                List::Users => std::mem::swap(&mut store.users, &mut s.users),
                List::Configs => std::mem::swap(&mut store.configs, &mut s.configs),
            }
        }
        store
    }
}

/// The four lists of a full load, in the store's table order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// `GET /api/credits/configs`.
    Credits = 0,
    /// `GET /api/roles`.
    Roles = 1,
    /// `GET /api/users/access`.
    Users = 2,
    /// `GET /api/configs/active`.
    Configs = 3,
}

impl List {
    /// All four, in order.
    pub const ALL: [List; 4] = [List::Credits, List::Roles, List::Users, List::Configs];

    /// The Wrapper path of the list.
    pub fn path(self) -> &'static str {
        match self {
            List::Credits => "/api/credits/configs",
            List::Roles => "/api/roles",
            List::Users => USERS,
            List::Configs => "/api/configs/active",
        }
    }
}

/// Receives one list of a full load page by page (wrapper.rs parses each
/// page's envelope and hands over its rows), so that no copy of every row
/// exists before the store does. `Send + 'static`: a large page is handed,
/// with its sink, to the load's own thread (background.rs).
pub trait RowSink: Send + 'static {
    /// Parses and adds one page's rows (raw JSON values, in list order).
    /// An error names the row (`GET {path}: row {i}: …`) and fails the load.
    fn push_page(&mut self, rows: &[&RawValue]) -> Result<()>;
}

/// Parses `raw` as `T`, only from a JSON object (serde's derived structs
/// would also accept an array of the fields in order).
fn parse_row<'a, T: serde::Deserialize<'a>>(list: &str, i: usize, raw: &'a RawValue) -> Result<T> {
    let text = raw.get();
    let bad = |e: String| CoreError::InvalidResponse(format!("GET {list}: row {i}: {e}"));
    if !text.trim_start().starts_with('{') {
        return Err(bad("not a JSON object".into()));
    }
    serde_json::from_str(text).map_err(|e| bad(e.to_string()))
}

/// The [`RowSink`] of one list: a [`StoreBuilder`] that fills only that
/// list's table, with the interner's front cache of this load. The four
/// are joined by [`StoreBuilder::join`].
pub struct ListBuilder {
    /// Which table it fills.
    list: List,
    /// The builder (only `list`'s table is used).
    builder: StoreBuilder,
    /// Distinct permission lists and access shapes seen by this load.
    local: intern::Local,
}

impl ListBuilder {
    /// An empty builder of `list`.
    pub fn new(list: List) -> ListBuilder {
        ListBuilder {
            list,
            builder: StoreBuilder::default(),
            local: intern::Local::default(),
        }
    }

    /// Which list it builds.
    pub fn list(&self) -> List {
        self.list
    }
}

impl RowSink for ListBuilder {
    fn push_page(&mut self, rows: &[&RawValue]) -> Result<()> {
        let path = self.list.path();
        let b = &mut self.builder;
        match self.list {
            List::Credits => {
                b.store.credits.map.reserve(rows.len());
                for (i, raw) in rows.iter().enumerate() {
                    let r: CreditRowRef<'_> = parse_row(path, i, raw)?;
                    b.push_credit(
                        &r.operation_code,
                        r.credit_cost,
                        r.is_active.unwrap_or(true),
                        r.version,
                    )?;
                }
            }
            List::Roles => {
                b.store.roles.map.reserve(rows.len());
                for (i, raw) in rows.iter().enumerate() {
                    let r: RoleRowRef<'_> = parse_row(path, i, raw)?;
                    let perms = self.local.names(&r.permissions);
                    b.push_role(&r.role_id, perms, r.version)?;
                }
            }
            List::Users => {
                b.store.users.reserve(rows.len());
                for (i, raw) in rows.iter().enumerate() {
                    let r: UserRowRef<'_> = parse_row(path, i, raw)?;
                    let at = b.rows[2];
                    for role in &r.roles {
                        check_row_id(USERS, "roles[]", at, role)?;
                    }
                    let a = self.local.access(&r.status, &r.roles);
                    b.push_user(&r.user_id, a, r.version)?;
                }
            }
            List::Configs => {
                for (i, raw) in rows.iter().enumerate() {
                    let r: ConfigRow = parse_row(path, i, raw)?;
                    let json = serde_json::to_string(&r.config).unwrap_or_else(|_| "null".into());
                    b.push_config(&r.config_id, json, r.version)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_no_user_holds_are_dropped_and_the_others_kept() {
        let mut t = UserTable::default();
        for u in 0..10 {
            t.put(
                &format!("u{u}"),
                Some(Access::new("active", &["base"])),
                None,
            );
        }
        t.put("gone", Some(Access::new("active", &["other"])), None);
        t.put("gone", None, Some(7));
        // one user given a new role set by each of many events
        for i in 0..5_000 {
            t.put("u0", Some(Access::new("active", &[format!("r{i}")])), None);
        }
        assert!(
            t.shapes().len() <= 2 * MIN_SHAPES_COMPACTED,
            "{} shapes kept for 2 in use",
            t.shapes().len()
        );
        assert_eq!(t.get("u0"), Some(&Access::new("active", &["r4999"])));
        for u in 1..10 {
            assert_eq!(
                t.get(&format!("u{u}")),
                Some(&Access::new("active", &["base"]))
            );
        }
        assert_eq!(t.get("gone"), None);
        assert_eq!(t.live(), 10);
        // the tombstone still holds its version
        assert_eq!(t.check("gone", Some(7)), Err(Rejection::Stale));
        // every shape the encoder sees is one an entry refers to, or newer
        let used: std::collections::HashSet<u32> = t.iter_indexed().map(|(_, s, _)| s).collect();
        assert!(used.iter().all(|&s| (s as usize) < t.shapes().len()));
    }

    fn ev(version: Option<u64>, change: Change) -> Event {
        Event {
            event_id: None,
            event_type: "x",
            version,
            change,
        }
    }

    fn set_cost(op: &str, cost: f64, v: Option<u64>) -> Event {
        ev(
            v,
            Change::CreditSet {
                operation_code: op.into(),
                cost,
                is_active: None,
            },
        )
    }

    fn credit_row(op: &str, c: f64, version: Option<u64>) -> CreditRow {
        CreditRow {
            operation_code: op.into(),
            credit_cost: c,
            is_active: None,
            version,
        }
    }

    #[test]
    fn versions_and_tombstones() {
        let mut s = CriticalStore::default();
        let mut d = Delta::default();
        s.apply(&set_cost("a", 1.0, Some(5)), &mut d).unwrap();
        assert_eq!(
            s.apply(&set_cost("a", 2.0, Some(5)), &mut d),
            Err(Rejection::Stale)
        );
        assert_eq!(
            s.apply(&set_cost("a", 2.0, Some(4)), &mut d),
            Err(Rejection::Stale)
        );
        assert_eq!(s.credit_cost("a"), Some(1.0));
        s.apply(&set_cost("a", 3.0, None), &mut d).unwrap();
        assert_eq!(s.credit_cost("a"), Some(3.0));
        s.apply(
            &ev(
                Some(7),
                Change::CreditDelete {
                    operation_code: "a".into(),
                },
            ),
            &mut d,
        )
        .unwrap();
        assert_eq!(s.credit_cost("a"), None);
        assert_eq!(s.sizes(), [0, 0, 0, 0], "a tombstone is not live");
        // a late, older upsert stays ignored after the delete
        assert_eq!(
            s.apply(&set_cost("a", 9.0, Some(6)), &mut d),
            Err(Rejection::Stale)
        );
        assert_eq!(s.credit_cost("a"), None);
        // the snapshot of a full reload replaces tombstones too
        let mut s = CriticalStore::from_snapshot(Snapshot {
            credits: vec![credit_row("a", 1.0, Some(1))],
            ..Default::default()
        })
        .unwrap();
        s.apply(&set_cost("a", 2.0, Some(2)), &mut d).unwrap();
        assert_eq!(s.credit_cost("a"), Some(2.0));
    }

    #[test]
    fn rows_are_the_live_entries_and_rebuild_the_same_store() {
        let mut s = CriticalStore::from_snapshot(Snapshot {
            credits: vec![credit_row("a", 1.5, Some(3)), credit_row("gone", 1.0, None)],
            roles: vec![RoleRow {
                role_id: "r".into(),
                permissions: vec!["x.*".into()],
                version: None,
            }],
            users: vec![UserRow {
                user_id: "u".into(),
                status: "active".into(),
                roles: vec!["r".into()],
                version: Some(2),
            }],
            configs: vec![ConfigRow {
                config_id: "c".into(),
                config: serde_json::json!({"n": [1, 2.5]}),
                version: None,
            }],
            unchanged: [false; 4],
        })
        .unwrap();
        let mut d = Delta::default();
        let delete = ev(
            Some(9),
            Change::CreditDelete {
                operation_code: "gone".into(),
            },
        );
        s.apply(&delete, &mut d).unwrap();
        let rows = s.rows();
        assert_eq!(rows.credits.len(), 1, "the tombstone is left out");
        assert_eq!(rows.credits[0].version, Some(3));
        let t = CriticalStore::from_snapshot(rows).unwrap();
        assert_eq!(t.sizes(), s.sizes());
        assert_eq!(t.credit_cost("a"), Some(1.5));
        assert_eq!(t.role_permissions("r"), Some(&["x.*".into()][..]));
        assert_eq!(t.user_access("u"), s.user_access("u"));
        assert_eq!(t.config_json("c"), Some(r#"{"n":[1,2.5]}"#));
        // the version came along; the tombstone did not
        assert_eq!(
            CriticalStore::from_snapshot(s.rows())
                .unwrap()
                .apply(&set_cost("a", 2.0, Some(3)), &mut d),
            Err(Rejection::Stale)
        );
        let mut t = t;
        t.apply(&set_cost("gone", 2.0, Some(1)), &mut d).unwrap();
    }

    #[test]
    fn user_status_keeps_roles_when_absent() {
        let mut s = CriticalStore::default();
        let mut d = Delta::default();
        let up = |status: &str, roles: Option<Vec<String>>| {
            ev(
                None,
                Change::UserStatus {
                    user_id: "u".into(),
                    status: status.into(),
                    roles,
                },
            )
        };
        s.apply(&up("active", Some(vec!["r".into()])), &mut d)
            .unwrap();
        s.apply(&up("suspended", None), &mut d).unwrap();
        assert_eq!(s.user_access("u"), Some(&Access::new("suspended", &["r"])));
        assert_eq!(s.sizes()[2], 1);
        let out = s
            .apply(
                &ev(
                    None,
                    Change::UserDeleted {
                        user_id: "u".into(),
                    },
                ),
                &mut d,
            )
            .unwrap();
        assert_eq!(out.invalidate, vec!["user:u".to_string()]);
        assert!(s.user_access("u").is_none());
        assert_eq!(s.sizes()[2], 0);
    }

    #[test]
    fn a_reload_resets_the_replicas_users_instead_of_shipping_them() {
        let user = UserRow {
            user_id: "u".into(),
            status: "active".into(),
            roles: vec![],
            version: None,
        };
        let old = CriticalStore::default();
        let new = CriticalStore::from_snapshot(Snapshot {
            users: vec![user.clone(), user],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(new.sizes()[2], 1, "a repeated row counts once");
        let mut d = Delta::default();
        old.diff_into(&new, &mut d);
        let wire: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(wire["usersReset"], true);
        assert_eq!(wire["users"], serde_json::json!([]), "no user is shipped");
        assert_eq!(d.len(), 1, "the reset alone");
    }

    #[test]
    fn diff_emits_only_differences() {
        let old = CriticalStore::from_snapshot(Snapshot {
            credits: vec![credit_row("a", 1.0, None), credit_row("b", 2.0, None)],
            ..Default::default()
        })
        .unwrap();
        let new = CriticalStore::from_snapshot(Snapshot {
            credits: vec![credit_row("a", 1.0, None), credit_row("c", 3.0, None)],
            ..Default::default()
        })
        .unwrap();
        let mut d = Delta::default();
        old.diff_into(&new, &mut d);
        let wire: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
        assert_eq!(wire["credits"], serde_json::json!([["c", 3.0]]), "c added");
        assert_eq!(wire["creditsDel"], serde_json::json!(["b"]), "b removed");
        assert_eq!(new.sizes(), [2, 0, 0, 0]);
    }

    #[test]
    fn snapshot_rows_keep_the_event_rules() {
        let bad_id = CriticalStore::from_snapshot(Snapshot {
            credits: vec![credit_row("", 1.0, None)],
            ..Default::default()
        });
        assert!(bad_id.is_err());
        let bad_cost = CriticalStore::from_snapshot(Snapshot {
            credits: vec![credit_row("a", -1.0, None)],
            ..Default::default()
        });
        assert!(bad_cost.is_err());
    }

    fn user_ev(id: &str, status: &str, v: Option<u64>) -> Event {
        ev(
            v,
            Change::UserStatus {
                user_id: id.into(),
                status: status.into(),
                roles: Some(vec!["r".into()]),
            },
        )
    }

    fn delete_user(id: &str, v: Option<u64>) -> Event {
        ev(v, Change::UserDeleted { user_id: id.into() })
    }

    #[test]
    fn the_dense_user_table_keeps_the_version_rule_and_tombstones() {
        let mut s = CriticalStore::default();
        let mut d = Delta::default();
        // many users, so the index grows (rehashes) under the writes
        for i in 0..5000 {
            s.apply(&user_ev(&format!("user-{i}"), "active", Some(5)), &mut d)
                .unwrap();
        }
        assert_eq!(s.sizes()[2], 5000);
        assert_eq!(
            s.apply(&user_ev("user-7", "suspended", Some(5)), &mut d),
            Err(Rejection::Stale),
            "not newer"
        );
        assert_eq!(
            s.apply(&user_ev("user-7", "suspended", Some(4)), &mut d),
            Err(Rejection::Stale)
        );
        assert_eq!(s.user_access("user-7").unwrap().status(), "active");
        // no version: applied, and the held version stays
        s.apply(&user_ev("user-7", "suspended", None), &mut d)
            .unwrap();
        assert_eq!(s.user_access("user-7").unwrap().status(), "suspended");
        assert_eq!(
            s.apply(&user_ev("user-7", "active", Some(5)), &mut d),
            Err(Rejection::Stale),
            "a write without a version keeps the held one"
        );
        // a delete leaves a tombstone with its version
        s.apply(&delete_user("user-7", Some(9)), &mut d).unwrap();
        assert!(s.user_access("user-7").is_none());
        assert_eq!(s.sizes()[2], 4999, "a tombstone is not live");
        assert_eq!(
            s.apply(&user_ev("user-7", "active", Some(8)), &mut d),
            Err(Rejection::Stale),
            "a late, older upsert stays ignored after the delete"
        );
        assert_eq!(s.sizes()[2], 4999);
        s.apply(&user_ev("user-7", "active", Some(10)), &mut d)
            .unwrap();
        assert_eq!(s.sizes()[2], 5000, "revived");
        // deleting twice counts once; deleting an unknown user leaves a tombstone
        s.apply(&delete_user("user-8", None), &mut d).unwrap();
        s.apply(&delete_user("user-8", None), &mut d).unwrap();
        s.apply(&delete_user("nobody", Some(3)), &mut d).unwrap();
        assert_eq!(s.sizes()[2], 4999);
        assert_eq!(
            s.apply(&user_ev("nobody", "active", Some(2)), &mut d),
            Err(Rejection::Stale)
        );
        // every other user is still found
        for i in (0..5000).filter(|i| *i != 8) {
            assert!(s.user_access(&format!("user-{i}")).is_some(), "user-{i}");
        }
        // the rows leave the tombstones out and keep the versions
        let rows = s.rows();
        assert_eq!(rows.users.len(), 4999);
        let u7 = rows.users.iter().find(|u| u.user_id == "user-7").unwrap();
        assert_eq!(u7.version, Some(10));
    }

    #[test]
    fn a_repeated_user_row_is_one_user_and_the_later_row_wins() {
        let row = |id: &str, status: &str, version: Option<u64>| UserRow {
            user_id: id.into(),
            status: status.into(),
            roles: vec!["r".into()],
            version,
        };
        let s = CriticalStore::from_snapshot(Snapshot {
            users: vec![
                row("a", "active", Some(9)),
                row("b", "active", None),
                row("a", "suspended", None),
            ],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.sizes()[2], 2);
        assert_eq!(s.user_access("a").unwrap().status(), "suspended");
        let mut s = s;
        let mut d = Delta::default();
        // the later row had no version: the earlier row's 9 is gone with it
        s.apply(&user_ev("a", "active", Some(1)), &mut d).unwrap();
        let ids: Vec<&str> = s.users().iter().map(|(id, _, _)| id).collect();
        assert_eq!(ids, ["a", "b"], "in the place of the first row");
    }

    #[test]
    fn a_user_entry_is_forty_bytes() {
        assert_eq!(std::mem::size_of::<UserEntry>(), 40);
    }

    #[test]
    fn pages_build_the_store_the_rows_would() {
        let page = |text: &str| -> Vec<Box<RawValue>> {
            let v: Vec<Box<RawValue>> = serde_json::from_str(text).unwrap();
            v
        };
        let mut users = ListBuilder::new(List::Users);
        let p1 = page(
            r#"[{"userId":"u1","status":"active","roles":["r"],"version":3},
                          {"userId":"u\u0032","status":"active","roles":["r"]}]"#,
        );
        let p2 = page(r#"[{"userId":"u1","status":"suspended","roles":[]}]"#);
        for p in [&p1, &p2] {
            let rows: Vec<&RawValue> = p.iter().map(|b| &**b).collect();
            users.push_page(&rows).unwrap();
        }
        let mut credits = ListBuilder::new(List::Credits);
        let p = page(r#"[{"operationCode":"op","creditCost":2.5,"isActive":false}]"#);
        let rows: Vec<&RawValue> = p.iter().map(|b| &**b).collect();
        credits.push_page(&rows).unwrap();
        let s = StoreBuilder::join([Some(credits), None, Some(users), None]);
        assert_eq!(s.sizes(), [1, 0, 2, 0]);
        assert_eq!(
            s.user_access("u2"),
            Some(&Access::new("active", &["r"])),
            "escapes"
        );
        assert_eq!(
            s.user_access("u1"),
            Some(&Access::new::<&str>("suspended", &[]))
        );
        assert_eq!(
            s.credit("op"),
            Some(&Credit {
                cost: 2.5,
                active: false
            })
        );
        // the rules of snapshot rows hold page by page, naming the row
        let mut users = ListBuilder::new(List::Users);
        let p = page(
            r#"[{"userId":"ok","status":"active","roles":[]},
                         {"userId":"bad","status":"active","roles":["a/../b", ""]}]"#,
        );
        let rows: Vec<&RawValue> = p.iter().map(|b| &**b).collect();
        let e = users.push_page(&rows).unwrap_err().to_string();
        assert!(e.contains("row 1") && e.contains("roles[]"), "{e}");
        let p = page(r#"[[ "u", "active", [] ]]"#);
        let rows: Vec<&RawValue> = p.iter().map(|b| &**b).collect();
        let e = ListBuilder::new(List::Users)
            .push_page(&rows)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a JSON object"), "{e}");
        let p = page(r#"[{"operationCode":"op","creditCost":-1}]"#);
        let rows: Vec<&RawValue> = p.iter().map(|b| &**b).collect();
        assert!(ListBuilder::new(List::Credits).push_page(&rows).is_err());
    }
}
