//! The change-event protocol of SPEC §3: topics, event types, and the parser
//! that turns one raw Redis message into a validated [`Event`] or a
//! [`Rejection`] reason.
//!
//! Everything a message must satisfy *by itself* is checked here: size, JSON,
//! field types, tenant, topic, id syntax, cost range, and (when a signing secret
//! is set) signature, timestamp window and load fence. What depends on state
//! (replayed `eventId`s, stale versions) is checked by the subscriber with
//! `replay::ReplayWindow` and `critical::CriticalStore`.
//!
//! With a signing secret, a signature made with any of the configured keys is
//! accepted (rotation, SPEC §3), and [`parse_event_since`] also rejects as
//! `expired` a signed event whose timestamp predates a caller-given bound (the
//! start of the consumer's latest full load minus the clock-skew allowance): a
//! restarted consumer's replay window is empty, so this is what stops a
//! captured signed event from being replayed into it.
//! The parser is pure and allocation-bounded (64 KiB input, serde_json's
//! recursion limit of 128), so it is safe on hostile input.

use serde_json::{Map, Value};

use crate::ids::{is_valid_id, parse_key, MAX_ID_BYTES};
use crate::signature::{self, SigningKeys};

/// Largest accepted message, in bytes (SPEC §3).
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
pub use crate::signature::TIMESTAMP_WINDOW_MS;

/// A subscription topic: the last segment of `{prefix}:{tenant}:{topic}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `credit-configs`
    CreditConfigs,
    /// `roles`
    Roles,
    /// `users`
    Users,
    /// `hierarchy`
    Hierarchy,
    /// `configs`
    Configs,
    /// `cache`
    Cache,
    /// `control`
    Control,
}

impl Topic {
    /// Every topic, in subscription order.
    pub const ALL: [Topic; 7] = [
        Topic::CreditConfigs,
        Topic::Roles,
        Topic::Users,
        Topic::Hierarchy,
        Topic::Configs,
        Topic::Cache,
        Topic::Control,
    ];

    /// The topic's channel segment.
    pub fn name(self) -> &'static str {
        match self {
            Topic::CreditConfigs => "credit-configs",
            Topic::Roles => "roles",
            Topic::Users => "users",
            Topic::Hierarchy => "hierarchy",
            Topic::Configs => "configs",
            Topic::Cache => "cache",
            Topic::Control => "control",
        }
    }

    /// Parses a channel segment.
    pub fn from_name(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == s)
    }
}

/// Why an event was rejected; each is a counter in `getMetrics().eventsRejected`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// Not JSON, missing field, wrong type, bad id or cost.
    Malformed,
    /// Unsigned or badly signed while a signing secret is set.
    BadSignature,
    /// Timestamp outside the ±5 min window, or older than the load fence, while
    /// a signing secret is set.
    Expired,
    /// `tenantId` is not the channel's tenant.
    WrongTenant,
    /// A known event type on another topic's channel.
    WrongTopic,
    /// Version not newer than the one held.
    Stale,
    /// `eventId` already applied.
    Replay,
    /// Over 64 KiB.
    TooLarge,
    /// Event type not known at all.
    UnknownType,
}

impl Rejection {
    /// Every reason, in the order metrics list them.
    pub const ALL: [Rejection; 9] = [
        Rejection::Malformed,
        Rejection::BadSignature,
        Rejection::Expired,
        Rejection::WrongTenant,
        Rejection::WrongTopic,
        Rejection::Stale,
        Rejection::Replay,
        Rejection::TooLarge,
        Rejection::UnknownType,
    ];

    /// The metrics name of the reason.
    pub fn name(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::BadSignature => "badSignature",
            Rejection::Expired => "expired",
            Rejection::WrongTenant => "wrongTenant",
            Rejection::WrongTopic => "wrongTopic",
            Rejection::Stale => "stale",
            Rejection::Replay => "replay",
            Rejection::TooLarge => "tooLarge",
            Rejection::UnknownType => "unknownType",
        }
    }

    /// Position in [`Rejection::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What an accepted event asks the consumer to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// `credit-config-changed`: set the cost (and activity, when given).
    CreditSet {
        /// The operation.
        operation_code: String,
        /// The new cost: finite and non-negative.
        cost: f64,
        /// `isActive`, when the event carries it.
        is_active: Option<bool>,
    },
    /// `credit-config-deleted`
    CreditDelete {
        /// The operation.
        operation_code: String,
    },
    /// `role-changed`
    RoleSet {
        /// The role.
        role_id: String,
        /// Its full permission list.
        permissions: Vec<String>,
    },
    /// `role-deleted`
    RoleDelete {
        /// The role.
        role_id: String,
    },
    /// `user-status-changed`
    UserStatus {
        /// The user.
        user_id: String,
        /// The new status.
        status: String,
        /// The new role list, when the event carries it.
        roles: Option<Vec<String>>,
    },
    /// `user-changed`: invalidates `user:{id}`.
    UserChanged {
        /// The user.
        user_id: String,
    },
    /// `user-deleted`
    UserDeleted {
        /// The user.
        user_id: String,
    },
    /// `hierarchy-changed`: invalidates `hierarchy:{id}`.
    HierarchyChanged {
        /// The entity.
        entity_id: String,
    },
    /// `config-changed`
    ConfigSet {
        /// The config.
        config_id: String,
        /// The config value as compact JSON text (may be `null`).
        json: String,
    },
    /// `config-deleted`
    ConfigDelete {
        /// The config.
        config_id: String,
    },
    /// `cache-invalidate`: reference keys to drop.
    CacheInvalidate {
        /// Keys such as `user:42`.
        keys: Vec<String>,
    },
    /// `resync-required`
    ResyncRequired,
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Used for replay detection when present.
    pub event_id: Option<String>,
    /// The event type as sent (one of [`EVENT_TYPES`]).
    pub event_type: &'static str,
    /// Per-entity version, when present.
    pub version: Option<u64>,
    /// What to do.
    pub change: Change,
}

/// Every known event type with its topic.
pub const EVENT_TYPES: [(&str, Topic); 12] = [
    ("credit-config-changed", Topic::CreditConfigs),
    ("credit-config-deleted", Topic::CreditConfigs),
    ("role-changed", Topic::Roles),
    ("role-deleted", Topic::Roles),
    ("user-status-changed", Topic::Users),
    ("user-changed", Topic::Users),
    ("user-deleted", Topic::Users),
    ("hierarchy-changed", Topic::Hierarchy),
    ("config-changed", Topic::Configs),
    ("config-deleted", Topic::Configs),
    ("cache-invalidate", Topic::Cache),
    ("resync-required", Topic::Control),
];

/// True when `s` is a valid permission, status or `eventId`: 1–256 bytes, no
/// control characters. Unlike an id it may be `.` or `..`: it never becomes a
/// path segment.
fn is_valid_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_BYTES && !s.chars().any(char::is_control)
}

/// The parsing context: what the channel and configuration say.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The tenant the consumer serves (the channel's tenant).
    pub tenant_id: &'a str,
    /// The topic of the channel the message arrived on.
    pub topic: Topic,
    /// When set, signatures and timestamps are enforced; a signature made with
    /// any of the keys is accepted.
    pub signing_secret: Option<&'a SigningKeys>,
    /// The local clock, epoch ms (a parameter so tests can pin it).
    pub now_ms: i64,
}

/// An accepted event with what the replay window needs besides its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The validated event.
    pub event: Event,
    /// Its `timestamp` as epoch ms, when it has one: the replay window keeps the
    /// id until the later of this and the arrival, plus the window
    /// (`replay::ReplayWindow::remember_event`).
    pub timestamp_ms: Option<i64>,
}

type Check<T> = std::result::Result<T, Rejection>;

/// Parses and validates one raw message. Pure; never panics on any input.
/// Same as [`parse_event_since`] without a load fence.
pub fn parse_event(payload: &[u8], ctx: &Context<'_>) -> Check<Event> {
    parse_event_since(payload, ctx, None).map(|p| p.event)
}

/// Parses and validates one raw message; with a signing secret in `ctx`, a
/// signed event whose timestamp is before `not_before_ms` is also rejected as
/// [`Rejection::Expired`]. `not_before_ms` is the start of the consumer's
/// latest full load minus the clock-skew allowance
/// (`replay::ReplayWindow::not_before_ms`); `None` (no load yet)
/// checks nothing. Without a signing secret it is ignored: unsigned events can
/// be forged anyway. Pure; never panics on any input.
pub fn parse_event_since(
    payload: &[u8],
    ctx: &Context<'_>,
    not_before_ms: Option<i64>,
) -> Check<Parsed> {
    if payload.len() > MAX_EVENT_BYTES {
        return Err(Rejection::TooLarge);
    }
    let value: Value = serde_json::from_slice(payload).map_err(|_| Rejection::Malformed)?;
    let Value::Object(msg) = value else {
        return Err(Rejection::Malformed);
    };

    let event_id = opt_str(&msg, "eventId")?;
    if let Some(id) = event_id {
        if !is_valid_text(id) {
            return Err(Rejection::Malformed);
        }
    }
    let timestamp = opt_str(&msg, "timestamp")?;
    let ts_ms = match timestamp {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| Rejection::Malformed)?
                .timestamp_millis(),
        ),
        None => None,
    };
    let version = match msg.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or(Rejection::Malformed)?),
    };

    if let Some(secret) = ctx.signing_secret {
        let (Some(_), Some(ts)) = (event_id, ts_ms) else {
            return Err(Rejection::Malformed);
        };
        let sig = match msg.get("signature") {
            Some(Value::String(s)) => s.as_str(),
            None | Some(Value::Null) => return Err(Rejection::BadSignature),
            Some(_) => return Err(Rejection::Malformed),
        };
        if !signature::verify_any(&msg, secret, sig) {
            return Err(Rejection::BadSignature);
        }
        if (ts - ctx.now_ms).abs() > TIMESTAMP_WINDOW_MS {
            return Err(Rejection::Expired);
        }
        if not_before_ms.is_some_and(|nb| ts < nb) {
            return Err(Rejection::Expired);
        }
    }

    let event_type = req_str(&msg, "eventType")?;
    let tenant = req_str(&msg, "tenantId")?;
    let Some(Value::Object(data)) = msg.get("data") else {
        return Err(Rejection::Malformed);
    };
    if tenant != ctx.tenant_id {
        return Err(Rejection::WrongTenant);
    }
    let Some(&(event_type, topic)) = EVENT_TYPES.iter().find(|(t, _)| *t == event_type) else {
        return Err(Rejection::UnknownType);
    };
    if topic != ctx.topic {
        return Err(Rejection::WrongTopic);
    }
    let change = parse_change(event_type, data)?;
    Ok(Parsed {
        event: Event {
            event_id: event_id.map(str::to_owned),
            event_type,
            version,
            change,
        },
        timestamp_ms: ts_ms,
    })
}

fn parse_change(event_type: &str, d: &Map<String, Value>) -> Check<Change> {
    Ok(match event_type {
        "credit-config-changed" => {
            let cost = d
                .get("newValue")
                .and_then(Value::as_f64)
                .ok_or(Rejection::Malformed)?;
            if !cost.is_finite() || cost < 0.0 {
                return Err(Rejection::Malformed);
            }
            let is_active = match d.get("isActive") {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => return Err(Rejection::Malformed),
            };
            Change::CreditSet {
                operation_code: id(d, "operationCode")?,
                cost: cost + 0.0, // folds -0 into 0
                is_active,
            }
        }
        "credit-config-deleted" => Change::CreditDelete {
            operation_code: id(d, "operationCode")?,
        },
        "role-changed" => Change::RoleSet {
            role_id: id(d, "roleId")?,
            permissions: text_list(d.get("permissions"))?,
        },
        "role-deleted" => Change::RoleDelete {
            role_id: id(d, "roleId")?,
        },
        "user-status-changed" => {
            let status = req_str(d, "status")?;
            if !is_valid_text(status) {
                return Err(Rejection::Malformed);
            }
            let roles = match d.get("roles") {
                None | Some(Value::Null) => None,
                Some(v) => Some(id_list(v)?),
            };
            Change::UserStatus {
                user_id: id(d, "userId")?,
                status: status.to_owned(),
                roles,
            }
        }
        "user-changed" => Change::UserChanged {
            user_id: id(d, "userId")?,
        },
        "user-deleted" => Change::UserDeleted {
            user_id: id(d, "userId")?,
        },
        "hierarchy-changed" => Change::HierarchyChanged {
            entity_id: id(d, "entityId")?,
        },
        "config-changed" => {
            let config = d.get("config").ok_or(Rejection::Malformed)?;
            Change::ConfigSet {
                config_id: id(d, "configId")?,
                json: serde_json::to_string(config).map_err(|_| Rejection::Malformed)?,
            }
        }
        "config-deleted" => Change::ConfigDelete {
            config_id: id(d, "configId")?,
        },
        "cache-invalidate" => Change::CacheInvalidate {
            keys: key_list(d.get("keys"))?,
        },
        "resync-required" => Change::ResyncRequired,
        _ => return Err(Rejection::UnknownType),
    })
}

fn opt_str<'a>(m: &'a Map<String, Value>, k: &str) -> Check<Option<&'a str>> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Rejection::Malformed),
    }
}

fn req_str<'a>(m: &'a Map<String, Value>, k: &str) -> Check<&'a str> {
    opt_str(m, k)?.ok_or(Rejection::Malformed)
}

/// The id in member `k`: a string that follows the one id rule of
/// [`crate::ids`], the same rule the read methods apply.
fn id(m: &Map<String, Value>, k: &str) -> Check<String> {
    let s = req_str(m, k)?;
    if is_valid_id(s) {
        Ok(s.to_owned())
    } else {
        Err(Rejection::Malformed)
    }
}

/// An array of strings each satisfying [`is_valid_text`] (permissions).
fn text_list(v: Option<&Value>) -> Check<Vec<String>> {
    let Some(Value::Array(items)) = v else {
        return Err(Rejection::Malformed);
    };
    items
        .iter()
        .map(|i| match i {
            Value::String(s) if is_valid_text(s) => Ok(s.clone()),
            _ => Err(Rejection::Malformed),
        })
        .collect()
}

/// An array of reference cache keys, each `{kind}:{id}` with an id that
/// follows the id rule (so a key may be longer than an id by its prefix).
fn key_list(v: Option<&Value>) -> Check<Vec<String>> {
    let Some(Value::Array(items)) = v else {
        return Err(Rejection::Malformed);
    };
    items
        .iter()
        .map(|i| match i {
            Value::String(s) if parse_key(s).is_some() => Ok(s.clone()),
            _ => Err(Rejection::Malformed),
        })
        .collect()
}

/// An array of ids (a user's role ids), each following the id rule.
fn id_list(v: &Value) -> Check<Vec<String>> {
    let list = text_list(Some(v))?;
    if list.iter().all(|s| is_valid_id(s)) {
        Ok(list)
    } else {
        Err(Rejection::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(topic: Topic) -> Context<'static> {
        Context {
            tenant_id: "t1",
            topic,
            signing_secret: None,
            now_ms: 0,
        }
    }

    fn parse(topic: Topic, v: Value) -> Check<Event> {
        parse_event(v.to_string().as_bytes(), &ctx(topic))
    }

    fn credit(new_value: Value) -> Value {
        json!({"eventType": "credit-config-changed", "tenantId": "t1",
               "data": {"operationCode": "op.a", "newValue": new_value}})
    }

    #[test]
    fn accepts_every_event_type_on_its_topic() {
        let cases = [
            (
                Topic::CreditConfigs,
                json!({"eventType":"credit-config-changed","tenantId":"t1","data":{"operationCode":"a","newValue":3.0}}),
            ),
            (
                Topic::CreditConfigs,
                json!({"eventType":"credit-config-deleted","tenantId":"t1","data":{"operationCode":"a"}}),
            ),
            (
                Topic::Roles,
                json!({"eventType":"role-changed","tenantId":"t1","data":{"roleId":"r","permissions":["x.*"]}}),
            ),
            (
                Topic::Roles,
                json!({"eventType":"role-deleted","tenantId":"t1","data":{"roleId":"r"}}),
            ),
            (
                Topic::Users,
                json!({"eventType":"user-status-changed","tenantId":"t1","data":{"userId":"u","status":"active","roles":["r"]}}),
            ),
            (
                Topic::Users,
                json!({"eventType":"user-changed","tenantId":"t1","data":{"userId":"u"}}),
            ),
            (
                Topic::Users,
                json!({"eventType":"user-deleted","tenantId":"t1","data":{"userId":"u"}}),
            ),
            (
                Topic::Hierarchy,
                json!({"eventType":"hierarchy-changed","tenantId":"t1","data":{"entityId":"e"}}),
            ),
            (
                Topic::Configs,
                json!({"eventType":"config-changed","tenantId":"t1","data":{"configId":"c","config":{"a":1}}}),
            ),
            (
                Topic::Configs,
                json!({"eventType":"config-deleted","tenantId":"t1","data":{"configId":"c"}}),
            ),
            (
                Topic::Cache,
                json!({"eventType":"cache-invalidate","tenantId":"t1","data":{"keys":["user:1","hierarchy:2"]}}),
            ),
            (
                Topic::Control,
                json!({"eventType":"resync-required","tenantId":"t1","data":{}}),
            ),
        ];
        for (topic, v) in cases {
            parse(topic, v.clone()).unwrap_or_else(|r| panic!("{v} rejected: {r:?}"));
        }
    }

    #[test]
    fn rejection_reasons() {
        assert_eq!(
            parse_event(b"{not json", &ctx(Topic::Roles)),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            parse_event(&[0xff, 0xfe], &ctx(Topic::Roles)),
            Err(Rejection::Malformed)
        );
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(
            parse_event(&big, &ctx(Topic::Roles)),
            Err(Rejection::TooLarge)
        );
        let deep = "[".repeat(10_000);
        assert_eq!(
            parse_event(deep.as_bytes(), &ctx(Topic::Roles)),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            parse(Topic::CreditConfigs, credit(json!(-1))),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            parse(Topic::CreditConfigs, credit(json!("3"))),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            parse_event(br#"{"eventType":"credit-config-changed","tenantId":"t1","data":{"operationCode":"a","newValue":1e309}}"#, &ctx(Topic::CreditConfigs)),
            Err(Rejection::Malformed)
        );
        let mut v = credit(json!(1));
        v["tenantId"] = json!("t2");
        assert_eq!(parse(Topic::CreditConfigs, v), Err(Rejection::WrongTenant));
        assert_eq!(
            parse(Topic::Roles, credit(json!(1))),
            Err(Rejection::WrongTopic)
        );
        let mut v = credit(json!(1));
        v["eventType"] = json!("credit-config-exploded");
        assert_eq!(parse(Topic::CreditConfigs, v), Err(Rejection::UnknownType));
        let mut v = credit(json!(1));
        v["data"] = json!([]);
        assert_eq!(parse(Topic::CreditConfigs, v), Err(Rejection::Malformed));
        let mut v = credit(json!(1));
        v["version"] = json!(1.5);
        assert_eq!(parse(Topic::CreditConfigs, v), Err(Rejection::Malformed));
        let too_long = "x".repeat(MAX_ID_BYTES + 1);
        for bad in ["", ".", "..", "a\u{0}b", "a\nb", too_long.as_str()] {
            let mut v = credit(json!(1));
            v["data"]["operationCode"] = json!(bad);
            assert_eq!(
                parse(Topic::CreditConfigs, v),
                Err(Rejection::Malformed),
                "{bad:?}"
            );
        }
        let v =
            json!({"eventType":"cache-invalidate","tenantId":"t1","data":{"keys":["credit:1"]}});
        assert_eq!(parse(Topic::Cache, v), Err(Rejection::Malformed));
    }

    const NOW: i64 = 1_800_000_000_000;

    fn iso(ms: i64) -> String {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    /// A signed `user-status-changed` stamped `ts_ms`, signed with `secret`.
    fn signed_user_event(ts_ms: i64, secret: &str) -> Vec<u8> {
        let mut m = json!({"eventId": format!("e{ts_ms}"), "eventType": "user-status-changed",
            "tenantId": "t1", "timestamp": iso(ts_ms),
            "data": {"userId": "u", "status": "active"}});
        let sig = signature::sign(m.as_object().unwrap(), &crate::secret::Secret::new(secret));
        m["signature"] = json!(sig);
        m.to_string().into_bytes()
    }

    fn keys(v: Value) -> SigningKeys {
        SigningKeys::from_option("signingSecret", Some(&v))
            .unwrap()
            .unwrap()
    }

    fn signed_ctx(keys: &SigningKeys) -> Context<'_> {
        Context {
            tenant_id: "t1",
            topic: Topic::Users,
            signing_secret: Some(keys),
            now_ms: NOW,
        }
    }

    #[test]
    fn any_configured_key_verifies() {
        let rotating = keys(json!(["new", "old"]));
        let ctx = signed_ctx(&rotating);
        for secret in ["new", "old"] {
            let p = parse_event_since(&signed_user_event(NOW, secret), &ctx, None).unwrap();
            assert_eq!(p.timestamp_ms, Some(NOW));
        }
        assert_eq!(
            parse_event(&signed_user_event(NOW, "retired"), &ctx),
            Err(Rejection::BadSignature)
        );
        let only_new = keys(json!("new"));
        assert_eq!(
            parse_event(&signed_user_event(NOW, "old"), &signed_ctx(&only_new)),
            Err(Rejection::BadSignature)
        );
    }

    #[test]
    fn signed_events_older_than_the_load_fence_are_expired() {
        let k = keys(json!("k"));
        let signed = signed_ctx(&k);
        let ctx = &signed;
        let loaded = NOW - 10_000; // the latest full load started 10 s ago
        let skew = 2_000;
        let fence = Some(loaded - skew);
        // 4 minutes old: inside the ±5 min window, but older than the load.
        let replayed = signed_user_event(NOW - 240_000, "k");
        assert!(parse_event(&replayed, ctx).is_ok(), "no fence, no check");
        assert_eq!(
            parse_event_since(&replayed, ctx, fence),
            Err(Rejection::Expired)
        );
        // Within the skew allowance before the load, or after it: accepted.
        for ts in [loaded - skew, loaded - 1, loaded, NOW, NOW + 60_000] {
            let p = parse_event_since(&signed_user_event(ts, "k"), ctx, fence)
                .unwrap_or_else(|r| panic!("ts {ts}: {r:?}"));
            assert_eq!(p.timestamp_ms, Some(ts));
        }
        assert_eq!(
            parse_event_since(&signed_user_event(loaded - skew - 1, "k"), ctx, fence),
            Err(Rejection::Expired)
        );
        // A bad signature is reported as such, whatever its age.
        assert_eq!(
            parse_event_since(&signed_user_event(NOW - 240_000, "x"), ctx, fence),
            Err(Rejection::BadSignature)
        );
        // Without a secret the fence is not applied (unsigned events can be forged).
        let unsigned = json!({"eventType":"user-changed","tenantId":"t1",
            "timestamp": iso(NOW - 240_000), "data":{"userId":"u"}});
        let p = parse_event_since(
            unsigned.to_string().as_bytes(),
            &self::ctx(Topic::Users),
            fence,
        )
        .unwrap();
        assert_eq!(p.timestamp_ms, Some(NOW - 240_000));
    }

    #[test]
    fn the_timestamp_window_still_applies_both_ways() {
        let k = keys(json!("k"));
        let ctx = signed_ctx(&k);
        for ts in [NOW - TIMESTAMP_WINDOW_MS - 1, NOW + TIMESTAMP_WINDOW_MS + 1] {
            assert_eq!(
                parse_event(&signed_user_event(ts, "k"), &ctx),
                Err(Rejection::Expired)
            );
        }
        for ts in [NOW - TIMESTAMP_WINDOW_MS, NOW + TIMESTAMP_WINDOW_MS] {
            assert!(parse_event(&signed_user_event(ts, "k"), &ctx).is_ok());
        }
    }

    #[test]
    fn ids_follow_the_one_id_rule() {
        // What a read method accepts, an event can name (SPEC §3).
        let longest = "é".repeat(MAX_ID_BYTES / 2);
        for ok in [
            "a:b",
            "a*",
            "a/b",
            "a\\b",
            "ü-日本語",
            "...",
            longest.as_str(),
        ] {
            let mut v = credit(json!(1));
            v["data"]["operationCode"] = json!(ok);
            assert!(parse(Topic::CreditConfigs, v).is_ok(), "{ok:?}");
            let v = json!({"eventType":"user-changed","tenantId":"t1","data":{"userId": ok}});
            assert!(parse(Topic::Users, v).is_ok(), "{ok:?}");
            let key = format!("user:{ok}");
            let v = json!({"eventType":"cache-invalidate","tenantId":"t1","data":{"keys":[key]}});
            assert!(parse(Topic::Cache, v).is_ok(), "{ok:?}");
        }
        for bad in ["", "..", "a\u{1b}b"] {
            let v = json!({"eventType":"user-changed","tenantId":"t1","data":{"userId": bad}});
            assert_eq!(parse(Topic::Users, v), Err(Rejection::Malformed), "{bad:?}");
            let key = format!("user:{bad}");
            let v = json!({"eventType":"cache-invalidate","tenantId":"t1","data":{"keys":[key]}});
            assert_eq!(parse(Topic::Cache, v), Err(Rejection::Malformed), "{bad:?}");
            let v = json!({"eventType":"user-status-changed","tenantId":"t1",
                           "data":{"userId":"u","status":"active","roles":[bad]}});
            assert_eq!(parse(Topic::Users, v), Err(Rejection::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn negative_zero_cost_is_zero() {
        let e = parse(Topic::CreditConfigs, credit(json!(-0.0))).unwrap();
        let Change::CreditSet { cost, .. } = e.change else {
            panic!()
        };
        assert!(cost == 0.0 && cost.is_sign_positive());
    }
}
