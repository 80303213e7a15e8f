//! The parser `protocol.rs` had before the typed envelope (a `serde_json::Value`
//! tree per message), kept for the equivalence test only: the typed parser
//! must give the same answer on every input (`protocol::tests::equivalence`).

use serde_json::{Map, Value};

use super::{is_valid_text, TIMESTAMP_WINDOW_MS};
use super::{Change, Check, Context, Event, Parsed, Rejection, EVENT_TYPES, MAX_EVENT_BYTES};
use crate::ids::{is_valid_id, parse_key};
use crate::signature;

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
