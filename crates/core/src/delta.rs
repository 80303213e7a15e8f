//! Replica batches: what the core sends to the JS read replica.
//!
//! A [`Delta`] holds, per critical table, the *latest* value of every key that
//! changed (merging two deltas keeps the later value per key), plus an ordered
//! list of [`Notice`]s (change events, connection changes, logs). Because each
//! entry is a whole value, never an increment, a replica that applies the data
//! of every batch it receives, in order, ends up equal to the store. The JSON
//! wire form is documented on [`Delta::to_json`]; `lib/replica.js` reads it.

use std::collections::HashMap;

use serde::Serialize;

use crate::model::{Access, Credit};

/// Something the JS side must be told, in order, after the batch's data.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "t", rename_all = "camelCase")]
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
    /// A full reload completed.
    Resync {
        /// Why it ran: `initial`, `reconnect`, `resync-required`, `refresh`.
        reason: String,
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
    /// `op` → `None` deleted, `Some(None)` inactive, `Some(Some(cost))` active.
    credits: HashMap<String, Option<Option<f64>>>,
    /// `roleId` → permissions, or `None` when deleted.
    roles: HashMap<String, Option<Vec<String>>>,
    /// `userId` → access, or `None` when deleted.
    users: HashMap<String, Option<Access>>,
    /// `configId` → JSON text, or `None` when deleted.
    configs: HashMap<String, Option<String>>,
    /// Ordered notices.
    notices: Vec<Notice>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    credits: Vec<(&'a str, Option<f64>)>,
    credits_del: Vec<&'a str>,
    roles: Vec<(&'a str, &'a [String])>,
    roles_del: Vec<&'a str>,
    users: Vec<(&'a str, &'a str, &'a [String])>,
    users_del: Vec<&'a str>,
    configs: Vec<(&'a str, &'a str)>,
    configs_del: Vec<&'a str>,
    notices: &'a [Notice],
}

fn split<'a, T, U>(
    m: &'a HashMap<String, Option<T>>,
    f: impl Fn(&'a str, &'a T) -> U,
) -> (Vec<U>, Vec<&'a str>) {
    let mut set = Vec::new();
    let mut del = Vec::new();
    for (k, v) in m {
        match v {
            Some(v) => set.push(f(k, v)),
            None => del.push(k.as_str()),
        }
    }
    (set, del)
}

impl Delta {
    /// Records a credit's new state (`None` = deleted).
    pub fn set_credit(&mut self, op: &str, c: Option<&Credit>) {
        let v = c.map(|c| c.active.then_some(c.cost));
        self.credits.insert(op.to_owned(), v);
    }
    /// Records a role's new permissions (`None` = deleted).
    pub fn set_role(&mut self, role: &str, perms: Option<&[String]>) {
        self.roles
            .insert(role.to_owned(), perms.map(<[String]>::to_vec));
    }
    /// Records a user's new access (`None` = deleted).
    pub fn set_user(&mut self, user: &str, a: Option<&Access>) {
        self.users.insert(user.to_owned(), a.cloned());
    }
    /// Records a config's new JSON text (`None` = deleted).
    pub fn set_config(&mut self, id: &str, json: Option<&str>) {
        self.configs.insert(id.to_owned(), json.map(str::to_owned));
    }
    /// Appends a notice.
    pub fn notice(&mut self, n: Notice) {
        self.notices.push(n);
    }
    /// Number of data entries plus notices.
    pub fn len(&self) -> usize {
        self.credits.len()
            + self.roles.len()
            + self.users.len()
            + self.configs.len()
            + self.notices.len()
    }
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Folds `later` into `self`: per key the later value wins; notices append.
    pub fn merge(&mut self, later: Delta) {
        self.credits.extend(later.credits);
        self.roles.extend(later.roles);
        self.users.extend(later.users);
        self.configs.extend(later.configs);
        self.notices.extend(later.notices);
    }

    /// The wire form: one JSON object
    /// `{credits:[[op, cost|null]], creditsDel:[op], roles:[[id,[perm]]], rolesDel,
    ///   users:[[id,status,[role]]], usersDel, configs:[[id,"json text"]], configsDel,
    ///   notices:[{t:...}]}` where a `null` cost means "inactive".
    pub fn to_json(&self) -> String {
        let (credits, credits_del) = split(&self.credits, |k, v| (k, *v));
        let (roles, roles_del) = split(&self.roles, |k, v| (k, v.as_slice()));
        let (users, users_del) = split(&self.users, |k, v| {
            (k, v.status.as_str(), v.roles.as_slice())
        });
        let (configs, configs_del) = split(&self.configs, |k, v| (k, v.as_str()));
        let wire = Wire {
            credits,
            credits_del,
            roles,
            roles_del,
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
        b.notice(Notice::Ready);
        a.merge(b);
        let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(v["credits"], serde_json::json!([["op", null]]));
        assert_eq!(v["rolesDel"], serde_json::json!(["r"]));
        assert_eq!(
            v["notices"],
            serde_json::json!([{"t":"connection","connected":false},{"t":"ready"}])
        );
    }
}
