//! The critical store: credit costs, role permissions, user access and active
//! configs, with per-entity versions and delete tombstones (SPEC §3 rules).
//!
//! The store is the authoritative in-process copy. Every change it makes is also
//! written into a [`Delta`], which the outbox ships to the JS read replica, so
//! the replica always converges to exactly this state. The store itself is not
//! synchronised: the consumer keeps it behind one mutex, touched only by the
//! subscription task and by snapshot reloads.

use std::collections::HashMap as StdHashMap;

use crate::delta::Delta;
use crate::model::{Access, Credit, Snapshot};
use crate::protocol::{Change, Event, Rejection};

/// The tables' map: foldhash (randomly seeded, several times faster than
/// SipHash on short keys) matters when a full load inserts a million users.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

fn map_with_capacity<V>(n: usize) -> HashMap<String, V> {
    HashMap::with_capacity_and_hasher(n, Default::default())
}

/// An entry with its version; `value == None` is a delete tombstone.
#[derive(Debug, Clone, PartialEq)]
struct Slot<T> {
    /// `None` after a delete; kept so a late, older upsert stays ignored.
    value: Option<T>,
    /// The highest version applied to this entity, if any was given.
    version: Option<u64>,
}

/// What applying an event did, beyond the delta.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Applied {
    /// Keys of the `'change'` event (`credit:op`, `user:id`, ...).
    pub keys: Vec<String>,
    /// Reference keys to invalidate.
    pub invalidate: Vec<String>,
    /// The event asked for a full reload.
    pub resync: bool,
}

/// The critical tables. See the module docs.
#[derive(Debug, Default)]
pub struct CriticalStore {
    /// `operationCode` → credit config.
    credits: HashMap<String, Slot<Credit>>,
    /// `roleId` → permission list.
    roles: HashMap<String, Slot<Vec<String>>>,
    /// `userId` → access.
    users: HashMap<String, Slot<Access>>,
    /// `configId` → compact JSON text of the value.
    configs: HashMap<String, Slot<String>>,
}

/// Version rule: an event whose version is not newer than the one held is stale.
fn check_version<T>(slot: Option<&Slot<T>>, version: Option<u64>) -> Result<(), Rejection> {
    match (slot.and_then(|s| s.version), version) {
        (Some(held), Some(v)) if v <= held => Err(Rejection::Stale),
        _ => Ok(()),
    }
}

fn upsert<T>(
    map: &mut HashMap<String, Slot<T>>,
    key: &str,
    value: Option<T>,
    version: Option<u64>,
) {
    let held = map.get(key).and_then(|s| s.version);
    map.insert(
        key.to_owned(),
        Slot {
            value,
            version: version.or(held),
        },
    );
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
                let slot = self.credits.get(op);
                check_version(slot, v)?;
                let active = is_active
                    .or_else(|| slot.and_then(|s| s.value.as_ref()).map(|c| c.active))
                    .unwrap_or(true);
                let credit = Credit {
                    cost: *cost,
                    active,
                };
                delta.set_credit(op, Some(&credit));
                upsert(&mut self.credits, op, Some(credit), v);
                out.keys.push(format!("credit:{op}"));
            }
            Change::CreditDelete { operation_code: op } => {
                check_version(self.credits.get(op), v)?;
                upsert(&mut self.credits, op, None, v);
                delta.set_credit(op, None);
                out.keys.push(format!("credit:{op}"));
            }
            Change::RoleSet {
                role_id,
                permissions,
            } => {
                check_version(self.roles.get(role_id), v)?;
                delta.set_role(role_id, Some(permissions));
                upsert(&mut self.roles, role_id, Some(permissions.clone()), v);
                out.keys.push(format!("role:{role_id}"));
            }
            Change::RoleDelete { role_id } => {
                check_version(self.roles.get(role_id), v)?;
                upsert(&mut self.roles, role_id, None, v);
                delta.set_role(role_id, None);
                out.keys.push(format!("role:{role_id}"));
            }
            Change::UserStatus {
                user_id,
                status,
                roles,
            } => {
                let slot = self.users.get(user_id);
                check_version(slot, v)?;
                let roles = roles.clone().unwrap_or_else(|| {
                    slot.and_then(|s| s.value.as_ref())
                        .map(|a| a.roles.clone())
                        .unwrap_or_default()
                });
                let access = Access {
                    status: status.clone(),
                    roles,
                };
                delta.set_user(user_id, Some(&access));
                upsert(&mut self.users, user_id, Some(access), v);
                out.keys.push(format!("access:{user_id}"));
            }
            Change::UserChanged { user_id } => {
                let key = format!("user:{user_id}");
                out.invalidate.push(key.clone());
                out.keys.push(key);
            }
            Change::UserDeleted { user_id } => {
                check_version(self.users.get(user_id), v)?;
                upsert(&mut self.users, user_id, None, v);
                delta.set_user(user_id, None);
                let key = format!("user:{user_id}");
                out.invalidate.push(key.clone());
                out.keys.push(format!("access:{user_id}"));
                out.keys.push(key);
            }
            Change::HierarchyChanged { entity_id } => {
                let key = format!("hierarchy:{entity_id}");
                out.invalidate.push(key.clone());
                out.keys.push(key);
            }
            Change::ConfigSet { config_id, json } => {
                check_version(self.configs.get(config_id), v)?;
                delta.set_config(config_id, Some(json));
                upsert(&mut self.configs, config_id, Some(json.clone()), v);
                out.keys.push(format!("config:{config_id}"));
            }
            Change::ConfigDelete { config_id } => {
                check_version(self.configs.get(config_id), v)?;
                upsert(&mut self.configs, config_id, None, v);
                delta.set_config(config_id, None);
                out.keys.push(format!("config:{config_id}"));
            }
            Change::CacheInvalidate { keys } => {
                out.invalidate.extend(keys.iter().cloned());
                out.keys.extend(keys.iter().cloned());
            }
            Change::ResyncRequired => out.resync = true,
        }
        Ok(out)
    }

    /// Replaces everything (tombstones included) with `snap`, writing into
    /// `delta` exactly the differences the replica needs to match. With
    /// `ship_users` false only the users already in the old table (put there
    /// by events) are written to `delta`: the JS replica reads every other user
    /// from the store on first access, so the first load of a tenant with a
    /// million users ships none of them.
    pub fn replace(&mut self, snap: Snapshot, delta: &mut Delta, ship_users: bool) {
        let mut credits = map_with_capacity(snap.credits.len());
        for r in snap.credits {
            let c = Credit {
                cost: r.credit_cost + 0.0,
                active: r.is_active.unwrap_or(true),
            };
            credits.insert(
                r.operation_code,
                Slot {
                    value: Some(c),
                    version: r.version,
                },
            );
        }
        let mut roles = map_with_capacity(snap.roles.len());
        for r in snap.roles {
            roles.insert(
                r.role_id,
                Slot {
                    value: Some(r.permissions),
                    version: r.version,
                },
            );
        }
        let mut users = map_with_capacity(snap.users.len());
        for r in snap.users {
            let a = Access {
                status: r.status,
                roles: r.roles,
            };
            users.insert(
                r.user_id,
                Slot {
                    value: Some(a),
                    version: r.version,
                },
            );
        }
        let mut configs = map_with_capacity(snap.configs.len());
        for r in snap.configs {
            let json = serde_json::to_string(&r.config).unwrap_or_else(|_| "null".into());
            configs.insert(
                r.config_id,
                Slot {
                    value: Some(json),
                    version: r.version,
                },
            );
        }
        diff(&self.credits, &credits, |k, v| delta.set_credit(k, v));
        diff(&self.roles, &roles, |k, v| {
            delta.set_role(k, v.map(|p| p.as_slice()))
        });
        if ship_users {
            diff(&self.users, &users, |k, v| delta.set_user(k, v));
        } else {
            // The replica may hold users that events put there before this
            // load (they are in the old table, tombstones included): bring
            // exactly those up to date; every other user is read on demand.
            for (k, slot) in &self.users {
                let new = users.get(k).and_then(|s| s.value.as_ref());
                if slot.value.as_ref() != new {
                    delta.set_user(k, new);
                }
            }
        }
        diff(&self.configs, &configs, |k, v| {
            delta.set_config(k, v.map(String::as_str))
        });
        *self = CriticalStore {
            credits,
            roles,
            users,
            configs,
        };
    }

    /// Writes the whole live state into `delta` (for a replica that starts empty).
    pub fn dump(&self, delta: &mut Delta) {
        let empty = CriticalStore::default();
        diff(&empty.credits, &self.credits, |k, v| delta.set_credit(k, v));
        diff(&empty.roles, &self.roles, |k, v| {
            delta.set_role(k, v.map(|p| p.as_slice()))
        });
        diff(&empty.users, &self.users, |k, v| delta.set_user(k, v));
        diff(&empty.configs, &self.configs, |k, v| {
            delta.set_config(k, v.map(String::as_str))
        });
    }

    /// The cost of an active operation (Rust-side read, used by tests and tools).
    pub fn credit_cost(&self, op: &str) -> Option<f64> {
        self.credits
            .get(op)?
            .value
            .as_ref()
            .filter(|c| c.active)
            .map(|c| c.cost)
    }

    /// A role's permissions.
    pub fn role_permissions(&self, role: &str) -> Option<&[String]> {
        self.roles.get(role)?.value.as_deref()
    }

    /// A user's access.
    pub fn user_access(&self, user: &str) -> Option<&Access> {
        self.users.get(user)?.value.as_ref()
    }

    /// A config's JSON text.
    pub fn config_json(&self, id: &str) -> Option<&str> {
        self.configs.get(id)?.value.as_deref()
    }

    /// Live entries (tombstones excluded) per table: credits, roles, users, configs.
    pub fn sizes(&self) -> [usize; 4] {
        fn live<T>(m: &HashMap<String, Slot<T>>) -> usize {
            m.values().filter(|s| s.value.is_some()).count()
        }
        [
            live(&self.credits),
            live(&self.roles),
            live(&self.users),
            live(&self.configs),
        ]
    }
}

/// Calls `emit(key, new)` for every key whose live value differs between `old`
/// and `new` (`None` = now absent).
fn diff<T: PartialEq>(
    old: &HashMap<String, Slot<T>>,
    new: &HashMap<String, Slot<T>>,
    mut emit: impl FnMut(&str, Option<&T>),
) {
    for (k, slot) in new {
        let before = old.get(k).and_then(|s| s.value.as_ref());
        if slot.value.as_ref() != before {
            emit(k, slot.value.as_ref());
        }
    }
    for (k, slot) in old {
        if slot.value.is_some() && new.get(k).and_then(|s| s.value.as_ref()).is_none() {
            emit(k, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CreditRow, UserRow};

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
        // a late, older upsert stays ignored after the delete
        assert_eq!(
            s.apply(&set_cost("a", 9.0, Some(6)), &mut d),
            Err(Rejection::Stale)
        );
        assert_eq!(s.credit_cost("a"), None);
        // the snapshot of a full reload replaces tombstones too
        s.replace(
            Snapshot {
                credits: vec![CreditRow {
                    operation_code: "a".into(),
                    credit_cost: 1.0,
                    is_active: None,
                    version: Some(1),
                }],
                ..Default::default()
            },
            &mut d,
            true,
        );
        s.apply(&set_cost("a", 2.0, Some(2)), &mut d).unwrap();
        assert_eq!(s.credit_cost("a"), Some(2.0));
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
        assert_eq!(
            s.user_access("u"),
            Some(&Access {
                status: "suspended".into(),
                roles: vec!["r".into()]
            })
        );
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
    }

    #[test]
    fn a_first_load_can_leave_users_out_of_the_delta() {
        let mut s = CriticalStore::default();
        let mut d = Delta::default();
        let user = UserRow {
            user_id: "u".into(),
            status: "active".into(),
            roles: vec![],
            version: None,
        };
        s.replace(
            Snapshot {
                users: vec![user.clone()],
                ..Default::default()
            },
            &mut d,
            false,
        );
        assert_eq!(d.len(), 0);
        assert!(s.user_access("u").is_some());
        // A user an event put in the replica before the load is brought up to date.
        let mut early = CriticalStore::default();
        let mut d = Delta::default();
        early
            .apply(
                &ev(
                    None,
                    Change::UserStatus {
                        user_id: "u".into(),
                        status: "suspended".into(),
                        roles: None,
                    },
                ),
                &mut d,
            )
            .unwrap();
        let mut d = Delta::default();
        early.replace(
            Snapshot {
                users: vec![user.clone()],
                ..Default::default()
            },
            &mut d,
            false,
        );
        assert_eq!(
            d.len(),
            1,
            "the event-touched user is shipped with the snapshot's value"
        );
        let mut d = Delta::default();
        s.replace(Snapshot::default(), &mut d, true);
        assert_eq!(d.len(), 1, "a later reload ships the user's removal");
    }

    #[test]
    fn replace_emits_only_differences() {
        let mut s = CriticalStore::default();
        let row = |op: &str, c: f64| CreditRow {
            operation_code: op.into(),
            credit_cost: c,
            is_active: None,
            version: None,
        };
        let mut d = Delta::default();
        s.replace(
            Snapshot {
                credits: vec![row("a", 1.0), row("b", 2.0)],
                ..Default::default()
            },
            &mut d,
            true,
        );
        assert_eq!(d.len(), 2);
        let mut d = Delta::default();
        s.replace(
            Snapshot {
                credits: vec![row("a", 1.0), row("c", 3.0)],
                ..Default::default()
            },
            &mut d,
            true,
        );
        assert_eq!(d.len(), 2, "b removed, c added, a unchanged");
        assert_eq!(s.sizes(), [2, 0, 0, 0]);
    }
}
