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

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

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

impl Event {
    /// The keys of this event's `'change'` notice (`credit:op`, `access:u`,
    /// `user:u`, ...; none for `resync-required`). Built only when JS has a
    /// `'change'` listener: the storm path without one allocates none.
    pub fn change_keys(&self) -> Vec<String> {
        match &self.change {
            Change::CreditSet { operation_code, .. } | Change::CreditDelete { operation_code } => {
                vec![format!("credit:{operation_code}")]
            }
            Change::RoleSet { role_id, .. } | Change::RoleDelete { role_id } => {
                vec![format!("role:{role_id}")]
            }
            Change::UserStatus { user_id, .. } => vec![format!("access:{user_id}")],
            Change::UserChanged { user_id } => vec![format!("user:{user_id}")],
            Change::UserDeleted { user_id } => {
                vec![format!("access:{user_id}"), format!("user:{user_id}")]
            }
            Change::HierarchyChanged { entity_id } => vec![format!("hierarchy:{entity_id}")],
            Change::ConfigSet { config_id, .. } | Change::ConfigDelete { config_id } => {
                vec![format!("config:{config_id}")]
            }
            Change::CacheInvalidate { keys } => keys.clone(),
            Change::ResyncRequired => Vec::new(),
        }
    }
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
///
/// The message is read in one pass into a typed [`Envelope`] that borrows its
/// strings from `payload` (no tree of `Value`s, no copy of a string without
/// escapes); every member, known or not, is still fully checked as JSON the
/// way `serde_json::Value` checks it, and a repeated member keeps its last
/// value, so the answer is the one the former `Value`-based parser gave
/// (`tests::equivalence`). Only a signed message is also read as a `Map`:
/// its signature is over the canonical form of every member.
pub fn parse_event_since(
    payload: &[u8],
    ctx: &Context<'_>,
    not_before_ms: Option<i64>,
) -> Check<Parsed> {
    if payload.len() > MAX_EVENT_BYTES {
        return Err(Rejection::TooLarge);
    }
    let msg: Envelope<'_> = serde_json::from_slice(payload).map_err(|_| Rejection::Malformed)?;

    let event_id = opt_str(&msg.event_id)?;
    if let Some(id) = event_id {
        if !is_valid_text(id) {
            return Err(Rejection::Malformed);
        }
    }
    let ts_ms = match opt_str(&msg.timestamp)? {
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| Rejection::Malformed)?
                .timestamp_millis(),
        ),
        None => None,
    };
    let version = match &msg.version {
        None | Some(Loose::Null) => None,
        Some(Loose::U64(v)) => Some(*v),
        Some(_) => return Err(Rejection::Malformed),
    };

    if let Some(secret) = ctx.signing_secret {
        let (Some(_), Some(ts)) = (event_id, ts_ms) else {
            return Err(Rejection::Malformed);
        };
        let sig = match &msg.signature {
            Some(Loose::Str(s)) => s.as_ref(),
            None | Some(Loose::Null) => return Err(Rejection::BadSignature),
            Some(_) => return Err(Rejection::Malformed),
        };
        // The canonical form covers every member, known or not.
        let whole: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(payload).map_err(|_| Rejection::Malformed)?;
        if !signature::verify_any(&whole, secret, sig) {
            return Err(Rejection::BadSignature);
        }
        if (ts - ctx.now_ms).abs() > TIMESTAMP_WINDOW_MS {
            return Err(Rejection::Expired);
        }
        if not_before_ms.is_some_and(|nb| ts < nb) {
            return Err(Rejection::Expired);
        }
    }

    let event_type = opt_str(&msg.event_type)?.ok_or(Rejection::Malformed)?;
    let tenant = opt_str(&msg.tenant_id)?.ok_or(Rejection::Malformed)?;
    let Some(Data::Object(data)) = &msg.data else {
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

fn parse_change(event_type: &str, d: &DataFields<'_>) -> Check<Change> {
    Ok(match event_type {
        "credit-config-changed" => {
            let cost = match d.new_value {
                Some(Loose::U64(u)) => u as f64,
                Some(Loose::I64(i)) => i as f64,
                Some(Loose::F64(f)) => f,
                _ => return Err(Rejection::Malformed),
            };
            if !cost.is_finite() || cost < 0.0 {
                return Err(Rejection::Malformed);
            }
            let is_active = match d.is_active {
                None | Some(Loose::Null) => None,
                Some(Loose::Bool(b)) => Some(b),
                Some(_) => return Err(Rejection::Malformed),
            };
            Change::CreditSet {
                operation_code: id(&d.operation_code)?,
                cost: cost + 0.0, // folds -0 into 0
                is_active,
            }
        }
        "credit-config-deleted" => Change::CreditDelete {
            operation_code: id(&d.operation_code)?,
        },
        "role-changed" => Change::RoleSet {
            role_id: id(&d.role_id)?,
            permissions: text_list(&d.permissions)?,
        },
        "role-deleted" => Change::RoleDelete {
            role_id: id(&d.role_id)?,
        },
        "user-status-changed" => {
            let status = opt_str(&d.status)?.ok_or(Rejection::Malformed)?;
            if !is_valid_text(status) {
                return Err(Rejection::Malformed);
            }
            let roles = match &d.roles {
                None | Some(List::Null) => None,
                Some(list) => Some(id_list(list)?),
            };
            Change::UserStatus {
                user_id: id(&d.user_id)?,
                status: status.to_owned(),
                roles,
            }
        }
        "user-changed" => Change::UserChanged {
            user_id: id(&d.user_id)?,
        },
        "user-deleted" => Change::UserDeleted {
            user_id: id(&d.user_id)?,
        },
        "hierarchy-changed" => Change::HierarchyChanged {
            entity_id: id(&d.entity_id)?,
        },
        "config-changed" => {
            let config = d.config.as_ref().ok_or(Rejection::Malformed)?;
            Change::ConfigSet {
                config_id: id(&d.config_id)?,
                json: serde_json::to_string(config).map_err(|_| Rejection::Malformed)?,
            }
        }
        "config-deleted" => Change::ConfigDelete {
            config_id: id(&d.config_id)?,
        },
        "cache-invalidate" => Change::CacheInvalidate {
            keys: key_list(&d.keys)?,
        },
        "resync-required" => Change::ResyncRequired,
        _ => return Err(Rejection::UnknownType),
    })
}

/// A string member: absent or `null` is `None`, any other type is malformed.
fn opt_str<'v>(v: &'v Option<Loose<'_>>) -> Check<Option<&'v str>> {
    match v {
        None | Some(Loose::Null) => Ok(None),
        Some(Loose::Str(s)) => Ok(Some(s)),
        Some(_) => Err(Rejection::Malformed),
    }
}

/// An id member: a string that follows the one id rule of [`crate::ids`],
/// the same rule the read methods apply.
fn id(v: &Option<Loose<'_>>) -> Check<String> {
    match opt_str(v)? {
        Some(s) if is_valid_id(s) => Ok(s.to_owned()),
        _ => Err(Rejection::Malformed),
    }
}

/// An array of strings each satisfying [`is_valid_text`] (permissions).
fn text_list(v: &Option<List<'_>>) -> Check<Vec<String>> {
    let Some(List::Items(items)) = v else {
        return Err(Rejection::Malformed);
    };
    items
        .iter()
        .map(|i| match i {
            Loose::Str(s) if is_valid_text(s) => Ok(s.as_ref().to_owned()),
            _ => Err(Rejection::Malformed),
        })
        .collect()
}

/// An array of reference cache keys, each `{kind}:{id}` with an id that
/// follows the id rule (so a key may be longer than an id by its prefix).
fn key_list(v: &Option<List<'_>>) -> Check<Vec<String>> {
    let Some(List::Items(items)) = v else {
        return Err(Rejection::Malformed);
    };
    items
        .iter()
        .map(|i| match i {
            Loose::Str(s) if parse_key(s).is_some() => Ok(s.as_ref().to_owned()),
            _ => Err(Rejection::Malformed),
        })
        .collect()
}

/// An array of ids (a user's role ids), each following the id rule.
fn id_list(v: &List<'_>) -> Check<Vec<String>> {
    let List::Items(items) = v else {
        return Err(Rejection::Malformed);
    };
    items
        .iter()
        .map(|i| match i {
            Loose::Str(s) if is_valid_text(s) => Ok(s),
            _ => Err(Rejection::Malformed),
        })
        .collect::<Check<Vec<_>>>()?
        .into_iter()
        .map(|s| {
            if is_valid_id(s) {
                Ok(s.as_ref().to_owned())
            } else {
                Err(Rejection::Malformed)
            }
        })
        .collect()
}

// ---- The typed envelope --------------------------------------------------
//
// Each known member is kept as a [`Loose`] (its JSON type, and its value when
// a check needs it); every other member is read by [`Checked`], which accepts
// exactly what `serde_json::Value` accepts (escapes, surrogate pairs, number
// range, nesting depth) and keeps nothing (serde's `IgnoredAny` would skip
// those checks). So a payload the envelope accepts is one
// `serde_json::from_slice::<Value>` accepts, and the other way round.

/// One member's value, as much of it as a check reads.
#[derive(Debug)]
enum Loose<'a> {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A string, borrowed from the payload unless it had escapes.
    Str(Cow<'a, str>),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    /// Any other number.
    F64(f64),
    /// An array or an object (checked, not kept).
    Other,
}

/// A member that should be an array of strings.
#[derive(Debug)]
enum List<'a> {
    /// `null`
    Null,
    /// An array, its items as [`Loose`] values.
    Items(Vec<Loose<'a>>),
    /// Any other type.
    Other,
}

/// The `data` member. Unboxed on purpose: it lives on the stack for one
/// parse, and a `Box` would be an allocation per event.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Data<'a> {
    /// An object, its known members read.
    Object(DataFields<'a>),
    /// Any other type (`null` included).
    Other,
}

/// The message's members the protocol reads; the rest are checked and skipped.
#[derive(Debug, Default)]
struct Envelope<'a> {
    /// `eventId`
    event_id: Option<Loose<'a>>,
    /// `eventType`
    event_type: Option<Loose<'a>>,
    /// `tenantId`
    tenant_id: Option<Loose<'a>>,
    /// `version`
    version: Option<Loose<'a>>,
    /// `timestamp`
    timestamp: Option<Loose<'a>>,
    /// `signature`
    signature: Option<Loose<'a>>,
    /// `data`
    data: Option<Data<'a>>,
}

/// The members of `data` any event type reads.
#[derive(Debug, Default)]
struct DataFields<'a> {
    /// `operationCode`
    operation_code: Option<Loose<'a>>,
    /// `newValue`
    new_value: Option<Loose<'a>>,
    /// `isActive`
    is_active: Option<Loose<'a>>,
    /// `roleId`
    role_id: Option<Loose<'a>>,
    /// `permissions`
    permissions: Option<List<'a>>,
    /// `userId`
    user_id: Option<Loose<'a>>,
    /// `status`
    status: Option<Loose<'a>>,
    /// `roles`
    roles: Option<List<'a>>,
    /// `entityId`
    entity_id: Option<Loose<'a>>,
    /// `configId`
    config_id: Option<Loose<'a>>,
    /// `config`, whole: its compact text is the stored value.
    config: Option<serde_json::Value>,
    /// `keys`
    keys: Option<List<'a>>,
}

/// Any JSON value, checked as `serde_json::Value` would check it, kept nowhere.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor).map(|_| Checked)
    }
}

/// The error for an object whose first member is [`RAW_VALUE_TOKEN`].
fn raw_token<E: serde::de::Error>() -> E {
    E::custom("serde_json's raw-value token as a member name")
}

/// The visitor of [`Checked`], also the fallback of the other visitors.
struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match map.next_key::<Field>()? {
            None => return Ok(()),
            Some(Field::RawToken) => return Err(raw_token()),
            Some(_) => map.next_value::<Checked>()?,
        };
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for Loose<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LooseVisitor)
    }
}

/// The visitor of [`Loose`].
struct LooseVisitor;

impl<'de> Visitor<'de> for LooseVisitor {
    type Value = Loose<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Loose<'de>, E> {
        Ok(Loose::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Loose<'de>, E> {
        Ok(Loose::I64(i))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Loose<'de>, E> {
        Ok(Loose::U64(u))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Loose<'de>, E> {
        Ok(Loose::F64(f))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Loose<'de>, E> {
        Ok(Loose::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Loose<'de>, E> {
        Ok(Loose::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_unit<E>(self) -> Result<Loose<'de>, E> {
        Ok(Loose::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Loose<'de>, A::Error> {
        CheckedVisitor.visit_seq(seq).map(|_| Loose::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Loose<'de>, A::Error> {
        CheckedVisitor.visit_map(map).map(|_| Loose::Other)
    }
}

impl<'de> Deserialize<'de> for List<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ListVisitor)
    }
}

/// The visitor of [`List`].
struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = List<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<List<'de>, E> {
        Ok(List::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<List<'de>, E> {
        Ok(List::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<List<'de>, E> {
        Ok(List::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<List<'de>, E> {
        Ok(List::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<List<'de>, E> {
        Ok(List::Other)
    }
    fn visit_unit<E>(self) -> Result<List<'de>, E> {
        Ok(List::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<List<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(i) = seq.next_element::<Loose<'de>>()? {
            items.push(i);
        }
        Ok(List::Items(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<List<'de>, A::Error> {
        CheckedVisitor.visit_map(map).map(|_| List::Other)
    }
}

/// A member name the envelope or `data` reads, or any other.
enum Field {
    /// `eventId`
    EventId,
    /// `eventType`
    EventType,
    /// `tenantId`
    TenantId,
    /// `version`
    Version,
    /// `timestamp`
    Timestamp,
    /// `signature`
    Signature,
    /// `data`
    Data,
    /// `operationCode`
    OperationCode,
    /// `newValue`
    NewValue,
    /// `isActive`
    IsActive,
    /// `roleId`
    RoleId,
    /// `permissions`
    Permissions,
    /// `userId`
    UserId,
    /// `status`
    Status,
    /// `roles`
    Roles,
    /// `entityId`
    EntityId,
    /// `configId`
    ConfigId,
    /// `config`
    Config,
    /// `keys`
    Keys,
    /// serde_json's private raw-value token ([`RAW_VALUE_TOKEN`]).
    RawToken,
    /// Any other name.
    Other,
}

/// The member name with which serde_json's `Value` reads an object as the
/// JSON text in its string (`{"$serde_json::private::RawValue":"[1]"}` is
/// `[1]`): a parser artefact no publisher means. An object whose first
/// member has this name is malformed here, anywhere but inside `config`
/// (read as a `Value`, as before).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(FieldVisitor)
    }
}

/// The visitor of [`Field`]: member names arrive unescaped.
struct FieldVisitor;

impl Visitor<'_> for FieldVisitor {
    type Value = Field;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, s: &str) -> Result<Field, E> {
        Ok(match s {
            "eventId" => Field::EventId,
            "eventType" => Field::EventType,
            "tenantId" => Field::TenantId,
            "version" => Field::Version,
            "timestamp" => Field::Timestamp,
            "signature" => Field::Signature,
            "data" => Field::Data,
            "operationCode" => Field::OperationCode,
            "newValue" => Field::NewValue,
            "isActive" => Field::IsActive,
            "roleId" => Field::RoleId,
            "permissions" => Field::Permissions,
            "userId" => Field::UserId,
            "status" => Field::Status,
            "roles" => Field::Roles,
            "entityId" => Field::EntityId,
            "configId" => Field::ConfigId,
            "config" => Field::Config,
            "keys" => Field::Keys,
            RAW_VALUE_TOKEN => Field::RawToken,
            _ => Field::Other,
        })
    }
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EnvelopeVisitor)
    }
}

/// The visitor of [`Envelope`]: an object, a repeated member's last value wins
/// (as in `serde_json::Map`).
struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
        let mut e = Envelope::default();
        let mut first = true;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::RawToken if first => return Err(raw_token()),
                Field::EventId => e.event_id = Some(map.next_value()?),
                Field::EventType => e.event_type = Some(map.next_value()?),
                Field::TenantId => e.tenant_id = Some(map.next_value()?),
                Field::Version => e.version = Some(map.next_value()?),
                Field::Timestamp => e.timestamp = Some(map.next_value()?),
                Field::Signature => e.signature = Some(map.next_value()?),
                Field::Data => e.data = Some(map.next_value()?),
                _ => {
                    map.next_value::<Checked>()?;
                }
            }
            first = false;
        }
        Ok(e)
    }
}

impl<'de> Deserialize<'de> for Data<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DataVisitor)
    }
}

/// The visitor of [`Data`].
struct DataVisitor;

impl<'de> Visitor<'de> for DataVisitor {
    type Value = Data<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Data<'de>, E> {
        Ok(Data::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Data<'de>, E> {
        Ok(Data::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Data<'de>, E> {
        Ok(Data::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Data<'de>, E> {
        Ok(Data::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Data<'de>, E> {
        Ok(Data::Other)
    }
    fn visit_unit<E>(self) -> Result<Data<'de>, E> {
        Ok(Data::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Data<'de>, A::Error> {
        CheckedVisitor.visit_seq(seq).map(|_| Data::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Data<'de>, A::Error> {
        let mut d = DataFields::default();
        let mut first = true;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::RawToken if first => return Err(raw_token()),
                Field::OperationCode => d.operation_code = Some(map.next_value()?),
                Field::NewValue => d.new_value = Some(map.next_value()?),
                Field::IsActive => d.is_active = Some(map.next_value()?),
                Field::RoleId => d.role_id = Some(map.next_value()?),
                Field::Permissions => d.permissions = Some(map.next_value()?),
                Field::UserId => d.user_id = Some(map.next_value()?),
                Field::Status => d.status = Some(map.next_value()?),
                Field::Roles => d.roles = Some(map.next_value()?),
                Field::EntityId => d.entity_id = Some(map.next_value()?),
                Field::ConfigId => d.config_id = Some(map.next_value()?),
                Field::Config => d.config = Some(map.next_value()?),
                Field::Keys => d.keys = Some(map.next_value()?),
                _ => {
                    map.next_value::<Checked>()?;
                }
            }
            first = false;
        }
        Ok(Data::Object(d))
    }
}

#[cfg(test)]
#[path = "protocol_legacy.rs"]
mod legacy;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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

    /// Messages for the equivalence test: every event type, valid and signed;
    /// each known member replaced by every JSON type and by hostile values;
    /// hostile unknown members; repeated members; every truncation of a few.
    fn hostile_corpus(k: &SigningKeys) -> Vec<Vec<u8>> {
        let ts = iso(NOW);
        let valid = [
            json!({"eventType":"credit-config-changed","data":{"operationCode":"a","newValue":3.0,"isActive":false,"changedFields":["credit_cost"],"oldValue":2}}),
            json!({"eventType":"credit-config-deleted","data":{"operationCode":"a"}}),
            json!({"eventType":"role-changed","data":{"roleId":"r","permissions":["x.*","y"]}}),
            json!({"eventType":"role-deleted","data":{"roleId":"r"}}),
            json!({"eventType":"user-status-changed","data":{"userId":"u","status":"active","roles":["r","s"]}}),
            json!({"eventType":"user-changed","data":{"userId":"u"}}),
            json!({"eventType":"user-deleted","data":{"userId":"u"}}),
            json!({"eventType":"hierarchy-changed","data":{"entityId":"e"}}),
            json!({"eventType":"config-changed","data":{"configId":"c","config":{"b":[1,2.5,-3,1e3],"a":null}}}),
            json!({"eventType":"config-deleted","data":{"configId":"c"}}),
            json!({"eventType":"cache-invalidate","data":{"keys":["user:1","hierarchy:2"]}}),
            json!({"eventType":"resync-required","data":{}}),
        ];
        let replacements = [
            "null",
            "true",
            "0",
            "7",
            "-1",
            "-0",
            "1.5",
            "1e308",
            "18446744073709551616",
            "\"\"",
            "\"x\"",
            "\"t1\"",
            "\"a\\u0000b\"",
            "\"\\ud83d\\ude00\"",
            "[]",
            "[\"a\"]",
            "[1]",
            "[\"user:1\"]",
            "[\"..\"]",
            "{}",
            "{\"a\":1}",
        ];
        // Raw texts that `Value` refuses (or that test a corner of it).
        let raw_hostile = [
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "1e400",
            "-1e400",
            "\"\\x\"",
            "01",
            "[1,]",
            "\"\u{7f}\"",
            "{\"$serde_json::private::RawValue\":\"1\"}",
        ];
        let mut out: Vec<Vec<u8>> = Vec::new();
        for base in &valid {
            let mut m = base.clone();
            m["tenantId"] = json!("t1");
            m["eventId"] = json!(format!("e-{}", m["eventType"].as_str().unwrap()));
            m["timestamp"] = json!(ts);
            m["version"] = json!(4);
            out.push(m.to_string().into_bytes());
            let mut signed = m.clone();
            let sig = signature::sign(
                signed.as_object().unwrap(),
                &crate::secret::Secret::new("k"),
            );
            signed["signature"] = json!(sig);
            out.push(signed.to_string().into_bytes());
            let _ = k;
            for (obj, path) in [(&m, None), (&m, Some("data")), (&signed, None)] {
                let target = match path {
                    Some(p) => obj[p].as_object().cloned().unwrap_or_default(),
                    None => obj.as_object().cloned().unwrap(),
                };
                let mut names: Vec<String> = target.keys().cloned().collect();
                names.push("extra".into());
                for name in &names {
                    for r in replacements.iter().chain(raw_hostile.iter()) {
                        // Built as text, so that values `Value` refuses can be placed.
                        let mut t = target.clone();
                        t.insert(name.clone(), Value::String("\u{1}PLACEHOLDER".into()));
                        let inner = serde_json::to_string(&t)
                            .unwrap()
                            .replace(&serde_json::to_string("\u{1}PLACEHOLDER").unwrap(), r);
                        let text = match path {
                            Some(p) => {
                                let mut whole = obj.clone();
                                whole[p] = json!("\u{1}DATA");
                                serde_json::to_string(&whole)
                                    .unwrap()
                                    .replace("\"\\u0001DATA\"", &inner)
                            }
                            None => inner,
                        };
                        out.push(text.clone().into_bytes());
                        // The same member repeated, first hostile then valid, and the other way.
                        if let Some(orig) = target.get(name) {
                            let dup = format!(
                                "{{{}:{},{}",
                                serde_json::to_string(name).unwrap(),
                                orig,
                                &text[1..]
                            );
                            out.push(dup.into_bytes());
                        }
                    }
                }
            }
            let bytes = m.to_string().into_bytes();
            for cut in 0..bytes.len() {
                out.push(bytes[..cut].to_vec());
            }
        }
        out.push(b"[]".to_vec());
        out.push(b"\"x\"".to_vec());
        out.push(b"null".to_vec());
        out.push(
            b" {\"eventType\":\"user-changed\",\"tenantId\":\"t1\",\"data\":{\"userId\":\"u\"}} "
                .to_vec(),
        );
        out.push(
            b"{\"eventType\":\"user-changed\",\"tenantId\":\"t1\",\"data\":{\"userId\":\"u\"}}x"
                .to_vec(),
        );
        out.push(
            b"{\"eventType\":\"user-changed\",\"tenantId\":\"t1\",\"data\":{\"userId\":\"\xff\"}}"
                .to_vec(),
        );
        out.push(b"{\"eventType\":\"user-changed\",\"tenantId\":\"t1\",\"data\":{\"userId\":\"u\",\"x\":\"\xc3\"}}".to_vec());
        out.push(b"{\"eventType\":\"user-changed\",\"tenantId\":\"t1\",\"data\":{\"userId\":\"u\"},\"x\":\"\xed\xa0\x80\"}".to_vec());
        out.push(b"{\"event\\u0054ype\":\"user-changed\",\"tenantId\":\"t\\u0031\",\"data\":{\"user\\u0049d\":\"\\u0075\"}}".to_vec());
        out.push(format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes());
        out.push(format!("{{\"eventType\":\"user-changed\",\"tenantId\":\"t1\",\"data\":{{\"userId\":\"u\"}},\"x\":{}1{}}}", "[".repeat(126), "]".repeat(126)).into_bytes());
        out.push(format!("{{\"eventType\":\"user-changed\",\"tenantId\":\"t1\",\"data\":{{\"userId\":\"u\"}},\"x\":{}1{}}}", "[".repeat(127), "]".repeat(127)).into_bytes());
        out.push(format!("{{\"eventType\":\"user-changed\",\"tenantId\":\"t1\",\"data\":{{\"userId\":\"u\",\"x\":{}1{}}}}}", "[".repeat(126), "]".repeat(126)).into_bytes());
        out.push(format!("{{\"eventType\":\"user-changed\",\"tenantId\":\"t1\",\"data\":{{\"userId\":\"u\",\"x\":{}1{}}}}}", "[".repeat(127), "]".repeat(127)).into_bytes());
        out
    }

    /// The typed envelope answers as the former `Value`-based parser did, on
    /// the signature vectors and on a hostile corpus, with and without a
    /// signing secret and a load fence.
    #[test]
    fn equivalence() {
        let k = keys(json!(["k", "old"]));
        let mut corpus = hostile_corpus(&k);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../test-vectors/signatures.json"
        );
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for v in doc["vectors"].as_array().unwrap() {
            let msg = v["message"].as_str().unwrap();
            corpus.push(msg.as_bytes().to_vec());
            let mut m: Value = serde_json::from_str(msg).unwrap();
            m["signature"] = v["signature"].clone();
            corpus.push(m.to_string().into_bytes());
        }
        let vector_keys: Vec<String> = doc["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["secret"].as_str().unwrap().to_owned())
            .collect();
        let vk = keys(json!(vector_keys));
        let tenants: Vec<String> = doc["vectors"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| {
                let m: Value = serde_json::from_str(v["message"].as_str().unwrap()).ok()?;
                m["tenantId"].as_str().map(str::to_owned)
            })
            .chain(["t1".to_owned()])
            .collect();
        let mut accepted = 0;
        let mut checked = 0;
        let vectors_from = corpus.len() - 2 * doc["vectors"].as_array().unwrap().len();
        for (i, payload) in corpus.iter().enumerate() {
            let (tenants, secrets): (&[String], Vec<Option<&SigningKeys>>) = if i >= vectors_from {
                (&tenants, vec![None, Some(&vk)])
            } else {
                (&tenants[tenants.len() - 1..], vec![None, Some(&k)])
            };
            // The message's own topic (when it names a known type) and another.
            let own = serde_json::from_slice::<Value>(payload)
                .ok()
                .and_then(|v| {
                    let t = v.get("eventType")?.as_str()?.to_owned();
                    EVENT_TYPES
                        .iter()
                        .find(|(n, _)| *n == t)
                        .map(|(_, topic)| *topic)
                })
                .unwrap_or(Topic::Roles);
            for tenant in tenants {
                for topic in [own, Topic::Cache] {
                    for secret in &secrets {
                        for fence in [None, Some(NOW - 1_000)] {
                            let ctx = Context {
                                tenant_id: tenant,
                                topic,
                                signing_secret: *secret,
                                now_ms: NOW,
                            };
                            let new = parse_event_since(payload, &ctx, fence);
                            let old = legacy::parse_event_since(payload, &ctx, fence);
                            if new != old
                                && payload
                                    .windows(RAW_VALUE_TOKEN.len())
                                    .any(|w| w == RAW_VALUE_TOKEN.as_bytes())
                            {
                                // The one deliberate difference (see RAW_VALUE_TOKEN).
                                assert_eq!(new, Err(Rejection::Malformed));
                                continue;
                            }
                            assert_eq!(
                                new,
                                old,
                                "{:?} on {topic:?}",
                                String::from_utf8_lossy(payload)
                            );
                            accepted += usize::from(new.is_ok());
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(
            accepted > 100,
            "the corpus has accepted events too: {accepted} of {checked}"
        );
    }

    /// An object whose first member is serde_json's raw-value token is
    /// malformed (through `Value` it read as the JSON text in its string).
    #[test]
    fn the_raw_value_token_is_malformed() {
        let c = ctx(Topic::Users);
        let wrapped = r#"{"$serde_json::private::RawValue":"{\"eventType\":\"user-changed\",\"tenantId\":\"t1\",\"data\":{\"userId\":\"u\"}}"}"#;
        assert!(legacy::parse_event_since(wrapped.as_bytes(), &c, None).is_ok());
        assert_eq!(
            parse_event(wrapped.as_bytes(), &c),
            Err(Rejection::Malformed)
        );
        for inner in [
            r#"{"eventType":"user-changed","tenantId":"t1","data":{"$serde_json::private::RawValue":"{\"userId\":\"u\"}"}}"#,
            r#"{"eventType":"user-changed","tenantId":"t1","data":{"userId":"u"},"x":{"$serde_json::private::RawValue":"1"}}"#,
            r#"{"eventType":"user-changed","tenantId":{"$serde_json::private::RawValue":"\"t1\""},"data":{"userId":"u"}}"#,
        ] {
            assert_eq!(
                parse_event(inner.as_bytes(), &c),
                Err(Rejection::Malformed),
                "{inner}"
            );
        }
        // Not first, it is an ordinary member.
        let later = r#"{"eventType":"user-changed","tenantId":"t1","data":{"userId":"u"},"x":{"a":1,"$serde_json::private::RawValue":"1"}}"#;
        assert!(parse_event(later.as_bytes(), &c).is_ok());
        // Inside `config`, it is read as before (as a `Value`).
        let cfg = r#"{"eventType":"config-changed","tenantId":"t1","data":{"configId":"c","config":{"$serde_json::private::RawValue":"[1]"}}}"#;
        let c = ctx(Topic::Configs);
        assert_eq!(
            parse_event(cfg.as_bytes(), &c),
            legacy::parse_event_since(cfg.as_bytes(), &c, None).map(|p| p.event)
        );
    }

    /// The keys of a `'change'` notice, per event type (what
    /// `CriticalStore::apply` built for every event before they were built
    /// only for a JS listener).
    #[test]
    fn change_keys_per_event_type() {
        let cases = [
            (
                Topic::CreditConfigs,
                json!({"eventType":"credit-config-changed","tenantId":"t1","data":{"operationCode":"a","newValue":1}}),
                vec!["credit:a"],
            ),
            (
                Topic::CreditConfigs,
                json!({"eventType":"credit-config-deleted","tenantId":"t1","data":{"operationCode":"a"}}),
                vec!["credit:a"],
            ),
            (
                Topic::Roles,
                json!({"eventType":"role-changed","tenantId":"t1","data":{"roleId":"r","permissions":[]}}),
                vec!["role:r"],
            ),
            (
                Topic::Roles,
                json!({"eventType":"role-deleted","tenantId":"t1","data":{"roleId":"r"}}),
                vec!["role:r"],
            ),
            (
                Topic::Users,
                json!({"eventType":"user-status-changed","tenantId":"t1","data":{"userId":"u","status":"active"}}),
                vec!["access:u"],
            ),
            (
                Topic::Users,
                json!({"eventType":"user-changed","tenantId":"t1","data":{"userId":"u"}}),
                vec!["user:u"],
            ),
            (
                Topic::Users,
                json!({"eventType":"user-deleted","tenantId":"t1","data":{"userId":"u"}}),
                vec!["access:u", "user:u"],
            ),
            (
                Topic::Hierarchy,
                json!({"eventType":"hierarchy-changed","tenantId":"t1","data":{"entityId":"e"}}),
                vec!["hierarchy:e"],
            ),
            (
                Topic::Configs,
                json!({"eventType":"config-changed","tenantId":"t1","data":{"configId":"c","config":1}}),
                vec!["config:c"],
            ),
            (
                Topic::Configs,
                json!({"eventType":"config-deleted","tenantId":"t1","data":{"configId":"c"}}),
                vec!["config:c"],
            ),
            (
                Topic::Cache,
                json!({"eventType":"cache-invalidate","tenantId":"t1","data":{"keys":["user:1","hierarchy:2"]}}),
                vec!["user:1", "hierarchy:2"],
            ),
            (
                Topic::Control,
                json!({"eventType":"resync-required","tenantId":"t1","data":{}}),
                vec![],
            ),
        ];
        for (topic, v, keys) in cases {
            assert_eq!(parse(topic, v.clone()).unwrap().change_keys(), keys, "{v}");
        }
    }
}
