//! Replica batches: what the core sends to the JS read replica.
//!
//! A [`Delta`] holds, per critical table, the *latest* value of every key that
//! changed (merging two deltas keeps the later value per key), an optional
//! "users reset" (after a full reload: the replica forgets its users and reads
//! them from the store again on first access), plus an ordered list of
//! [`Notice`]s (change events, connection changes, logs). Because each entry
//! is a whole value, never an increment, a replica that applies the data of
//! every batch it receives, in order, ends up equal to the store. The JSON
//! wire form is documented on [`Delta::to_json`] (golden vector:
//! `test-vectors/batch.json`); `lib/replica.js` reads it.
//!
//! Memory is bounded while the JS thread is busy: data entries by the number
//! of distinct keys, `'change'` notices by [`Delta::push_change`]'s limit
//! (beyond it they collapse into one `resync` notice with reason
//! `change-overflow`, which tells listeners to re-read everything).
//!
//! The maps hash with foldhash (keys are short ids, hashed once per event on
//! the storm path), and a key already pending is overwritten in place, so an
//! event on a key the batch holds allocates nothing here.

use foldhash::HashMap;
use serde::Serialize;

use crate::intern::{Name, Names};
use crate::model::{Access, Credit};

/// Something the JS side must be told, in order, after the batch's data.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Notice {
    /// An applied event, for `'change'` listeners.
    Change {
        /// The event type.
        #[serde(rename = "eventType")]
        event_type: String,
        /// The keys it touched.
        keys: Vec<String>,
    },
    /// Subscription state changed (`true` only once resynced).
    Connection {
        /// The new state.
        connected: bool,
    },
    /// A full reload completed, or `'change'` notices overflowed.
    Resync {
        /// `initial`, `reconnect`, `resync-required`, `refresh`, `overflow`,
        /// or `change-overflow` (no reload: change notices were dropped).
        reason: String,
        /// Epoch ms at which the reload began (absent for `change-overflow`),
        /// so that JS can record it as a span with its real start (lib/tracing.js).
        #[serde(rename = "startedAt", skip_serializing_if = "Option::is_none")]
        started_at: Option<i64>,
        /// Ms from its start to its installation (absent for `change-overflow`).
        #[serde(rename = "durationMs", skip_serializing_if = "Option::is_none")]
        duration_ms: Option<i64>,
        /// Where the data came from: `wrapper` or `snapshot` (as `health().source`).
        #[serde(skip_serializing_if = "Option::is_none")]
        source: Option<&'static str>,
    },
    /// The first full load is in the replica: `initialize()` may resolve.
    Ready,
    /// A log line for the JS logger.
    Log {
        /// `debug` | `info` | `warn` | `error`.
        level: &'static str,
        /// The message (never holds a secret).
        msg: String,
    },
    /// A background error for `'error'` listeners (else `logger.error`).
    Error {
        /// The error's code.
        code: String,
        /// Its message.
        message: String,
    },
}

/// Pending replica changes; see the module docs.
#[derive(Debug, Default)]
pub struct Delta {
    /// `op` → credit, or `None` when deleted.
    credits: HashMap<String, Option<Credit>>,
    /// `roleId` → permissions, or `None` when deleted.
    roles: HashMap<String, Option<Names>>,
    /// The replica must drop every user before applying `users`.
    users_reset: bool,
    /// `userId` → access, or `None` when deleted.
    users: HashMap<String, Option<Access>>,
    /// `configId` → JSON text, or `None` when deleted.
    configs: HashMap<String, Option<String>>,
    /// Ordered notices.
    notices: Vec<Notice>,
    /// `Notice::Change` entries in `notices`.
    changes: usize,
    /// Change notices overflowed: further ones are dropped until taken.
    changes_dropped: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    credits: Vec<(&'a str, Option<f64>)>,
    credits_del: Vec<&'a str>,
    roles: Vec<(&'a str, &'a [Name])>,
    roles_del: Vec<&'a str>,
    users_reset: bool,
    users: Vec<(&'a str, &'a str, &'a [Name])>,
    users_del: Vec<&'a str>,
    configs: Vec<(&'a str, &'a str)>,
    configs_del: Vec<&'a str>,
    notices: &'a [Notice],
}

/// Splits a table's changes into (set, deleted), sorted by key so the wire
/// form is deterministic.
fn split<'a, T, U>(
    m: &'a HashMap<String, Option<T>>,
    f: impl Fn(&'a str, &'a T) -> U,
) -> (Vec<U>, Vec<&'a str>) {
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort_unstable();
    let mut set = Vec::new();
    let mut del = Vec::new();
    for k in keys {
        match &m[k] {
            Some(v) => set.push(f(k, v)),
            None => del.push(k.as_str()),
        }
    }
    (set, del)
}

/// Sets `key` to `value`, copying the key only when it is not pending yet.
fn put<T>(m: &mut HashMap<String, Option<T>>, key: &str, value: Option<T>) {
    match m.get_mut(key) {
        Some(slot) => *slot = value,
        None => {
            m.insert(key.to_owned(), value);
        }
    }
}

impl Delta {
    /// Records a credit's new state (`None` = deleted).
    pub fn set_credit(&mut self, op: &str, c: Option<&Credit>) {
        put(&mut self.credits, op, c.cloned());
    }
    /// Records a role's new permissions (`None` = deleted).
    pub fn set_role(&mut self, role: &str, perms: Option<&Names>) {
        put(&mut self.roles, role, perms.cloned());
    }
    /// Records a user's new access (`None` = deleted).
    pub fn set_user(&mut self, user: &str, a: Option<&Access>) {
        put(&mut self.users, user, a.cloned());
    }
    /// Records a config's new JSON text (`None` = deleted).
    pub fn set_config(&mut self, id: &str, json: Option<&String>) {
        put(&mut self.configs, id, json.cloned());
    }
    /// The replica drops all its users (they are read again on first access).
    pub fn reset_users(&mut self) {
        self.users_reset = true;
        self.users.clear();
    }
    /// Appends a notice.
    pub fn notice(&mut self, n: Notice) {
        self.notices.push(n);
    }
    /// Appends a `'change'` notice, keeping at most `limit` of them pending.
    /// On overflow the pending ones are replaced by one `resync` notice with
    /// reason `change-overflow`, and later ones are dropped until this delta
    /// is taken. Returns true when this call overflowed (to be counted).
    pub fn push_change(&mut self, event_type: &str, keys: Vec<String>, limit: usize) -> bool {
        if self.changes_dropped {
            return false;
        }
        if self.changes >= limit {
            self.notices.retain(|n| !matches!(n, Notice::Change { .. }));
            self.notices.push(Notice::Resync {
                reason: "change-overflow".into(),
                started_at: None,
                duration_ms: None,
                source: None,
            });
            self.changes = 0;
            self.changes_dropped = true;
            return true;
        }
        self.changes += 1;
        self.notices.push(Notice::Change {
            event_type: event_type.to_owned(),
            keys,
        });
        false
    }
    /// Number of data entries plus notices (a users reset counts one).
    pub fn len(&self) -> usize {
        self.credits.len()
            + self.roles.len()
            + usize::from(self.users_reset)
            + self.users.len()
            + self.configs.len()
            + self.notices.len()
    }
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Folds `later` into `self`: per key the later value wins; a reset in
    /// `later` discards the users before it; notices append.
    pub fn merge(&mut self, later: Delta) {
        self.credits.extend(later.credits);
        self.roles.extend(later.roles);
        if later.users_reset {
            self.reset_users();
        }
        self.users.extend(later.users);
        self.configs.extend(later.configs);
        self.changes += later.changes;
        self.changes_dropped |= later.changes_dropped;
        self.notices.extend(later.notices);
    }

    /// The wire form: one JSON object
    /// `{credits:[[op, cost|null]], creditsDel:[op], roles:[[id,[perm]]], rolesDel,
    ///   usersReset: bool, users:[[id,status,[role]]], usersDel,
    ///   configs:[[id,"json text"]], configsDel, notices:[{kind:...}]}`
    /// where a `null` cost means "inactive" and entries are sorted by key.
    /// The replica applies, in this order: credits, roles, the users reset,
    /// users, configs; then it dispatches the notices.
    pub fn to_json(&self) -> String {
        let (credits, credits_del) = split(&self.credits, |k, c| (k, c.active.then_some(c.cost)));
        let (roles, roles_del) = split(&self.roles, |k, v| (k, &v[..]));
        let (users, users_del) = split(&self.users, |k, v| (k, v.status(), v.roles()));
        let (configs, configs_del) = split(&self.configs, |k, v| (k, v.as_str()));
        let wire = Wire {
            credits,
            credits_del,
            roles,
            roles_del,
            users_reset: self.users_reset,
            users,
            users_del,
            configs,
            configs_del,
            notices: &self.notices,
        };
        // Serialising strings, numbers and vectors cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_value_wins_and_wire_form() {
        let mut a = Delta::default();
        a.set_credit(
            "op",
            Some(&Credit {
                cost: 1.0,
                active: true,
            }),
        );
        a.set_user("u", Some(&Access::new::<&str>("active", &[])));
        a.notice(Notice::Connection { connected: false });
        let mut b = Delta::default();
        b.set_credit(
            "op",
            Some(&Credit {
                cost: 2.0,
                active: false,
            }),
        );
        b.set_role("r", None);
        b.reset_users();
        b.notice(Notice::Ready);
        a.merge(b);
        let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(v["credits"], serde_json::json!([["op", null]]));
        assert_eq!(v["rolesDel"], serde_json::json!(["r"]));
        assert_eq!(v["usersReset"], true);
        assert_eq!(v["users"], serde_json::json!([]), "the reset discards u");
        assert_eq!(
            v["notices"],
            serde_json::json!([{"kind":"connection","connected":false},{"kind":"ready"}])
        );
    }

    /// The batch of `test-vectors/batch.json`, built through the public calls.
    fn golden() -> Delta {
        let mut d = Delta::default();
        let credit = |cost, active| Credit { cost, active };
        d.set_credit("crm.leads.create", Some(&credit(2.5, true)));
        d.set_credit("crm.leads.delete", Some(&credit(1.0, false)));
        d.set_credit("crm.old", None);
        d.set_role(
            "sales",
            Some(&crate::intern::names(&["crm.leads.*", "crm.contacts.read"])),
        );
        d.set_role("retired", None);
        d.set_user("u-stale", Some(&Access::new::<&str>("active", &[])));
        d.reset_users();
        d.set_user("u-alice", Some(&Access::new("active", &["sales"])));
        d.set_user("u-gone", None);
        d.set_config("limits", Some(&r#"{"maxLeadsPerDay":500}"#.to_string()));
        d.set_config("old-flag", None);
        d.push_change(
            "credit-config-changed",
            vec!["credit:crm.leads.create".into()],
            10,
        );
        d.notice(Notice::Ready);
        d
    }

    #[test]
    fn the_wire_form_matches_the_golden_vector() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test-vectors/batch.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(golden().to_json(), doc["wire"].as_str().unwrap());
    }

    #[test]
    fn a_resync_notice_carries_the_load_times_only_for_a_load() {
        let load = Notice::Resync {
            reason: "refresh".into(),
            started_at: Some(1_700_000_000_000),
            duration_ms: Some(25),
            source: Some("wrapper"),
        };
        assert_eq!(
            serde_json::to_string(&load).unwrap(),
            r#"{"kind":"resync","reason":"refresh","startedAt":1700000000000,"durationMs":25,"source":"wrapper"}"#
        );
        let mut d = Delta::default();
        d.push_change("x", vec![], 0);
        assert_eq!(
            serde_json::to_string(&d.notices).unwrap(),
            r#"[{"kind":"resync","reason":"change-overflow"}]"#
        );
    }

    #[test]
    fn change_notices_are_bounded() {
        let mut d = Delta::default();
        d.notice(Notice::Ready);
        assert!(!d.push_change("x", vec!["credit:a".into()], 2));
        assert!(!d.push_change("x", vec!["credit:b".into()], 2));
        assert!(d.push_change("x", vec!["credit:c".into()], 2), "overflow");
        assert!(!d.push_change("x", vec!["credit:d".into()], 2), "dropped");
        assert_eq!(
            d.notices,
            vec![
                Notice::Ready,
                Notice::Resync {
                    reason: "change-overflow".into(),
                    started_at: None,
                    duration_ms: None,
                    source: None,
                }
            ]
        );
    }
}
