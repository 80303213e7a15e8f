//! Ids, keys and the argument rules of the core: the one place that says what
//! an id may be, how it travels in a URL, how reference cache keys are formed
//! and parsed, and what a deduction's amount and idempotency key may be.
//!
//! **The id rule** (SPEC §3 "one id rule everywhere"): an id is 1–256 bytes of
//! UTF-8 without control characters, and not `.` or `..`. Every read method that
//! puts an id in a path ([`check_path_id`]), the event parser
//! ([`is_valid_id`]), cache-invalidate keys ([`parse_key`]) and snapshot rows
//! ([`check_row_id`]) apply this same rule, so any id a read method accepts can
//! also be named by an event and by a snapshot row. `/`, `:`, `*`, `\` and
//! non-ASCII characters are ordinary: an id is always sent as one
//! percent-encoded path segment ([`encode_segment`]), cache keys are split on
//! their first `:` only, and ids never become part of a channel name.
//!
//! A leaf module (it imports nothing of the crate but the error type), so the
//! event parser, the caches, the Wrapper client and the binding can all use it
//! without importing each other.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{CoreError, Result};

/// Longest accepted id, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Longest accepted idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Everything but RFC 3986 "unreserved" characters is encoded, so an id can
/// never leave its path segment (`../admin` → `..%2Fadmin`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The id rule: 1–256 bytes, no control characters (Unicode `Cc`: C0, DEL,
/// C1), and not `.` or `..` (which a path segment cannot be, encoded or not).
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_BYTES
        && s != "."
        && s != ".."
        && !s.chars().any(char::is_control)
}

/// Percent-encodes `id` as one path segment.
pub fn encode_segment(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// What the id rule asks for, for error messages.
const ID_RULE: &str =
    "must be 1-256 bytes without control characters, and not '.' or '..' (it is sent as one URL path segment)";

/// Checks an id argument against the id rule; the `RangeError` names `what`
/// (the argument, e.g. `userId`) and never echoes the id.
pub fn check_path_id(what: &str, id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(CoreError::arg_range(format!("{what} {ID_RULE}")))
    }
}

/// Checks the id of a snapshot row (SPEC §3: snapshot rows follow the id rule
/// too). `list` is the Wrapper path of the list and `field` the row's member,
/// e.g. `check_row_id("/api/users/access", "userId", &row.user_id)`. A row id
/// that fails the rule is a Wrapper bug: `INVALID_RESPONSE` naming the list,
/// the field and the row's position, never the id itself.
pub fn check_row_id(list: &str, field: &str, index: usize, id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(CoreError::InvalidResponse(format!(
            "GET {list}: row {index}: {field} {ID_RULE}"
        )))
    }
}

/// Checks a deduction's amount: finite and non-negative.
pub fn check_amount(amount: f64) -> Result<()> {
    if amount.is_finite() && amount >= 0.0 {
        Ok(())
    } else {
        Err(CoreError::arg_range(
            "amount must be a finite, non-negative number",
        ))
    }
}

/// Checks an idempotency key: 1–256 visible ASCII characters (it travels in a
/// JSON body and, at many Wrappers, in an `Idempotency-Key` header).
pub fn check_idempotency_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES
        && key.bytes().all(|b| (0x21..0x7f).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CoreError::arg_range(
            "idempotencyKey must be 1-256 visible ASCII characters",
        ))
    }
}

/// The four reference types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// `user:{id}` ← `GET /api/users/{id}/profile`
    UserProfile,
    /// `hierarchy:{id}` ← `GET /api/hierarchy/{id}`
    Hierarchy,
    /// `audit:{id}` ← `GET /api/audit-logs/{id}`
    AuditLog,
    /// `historical:{key}` ← `GET /api/historical/{key}`
    Historical,
}

impl RefKind {
    /// All kinds.
    pub const ALL: [RefKind; 4] = [
        RefKind::UserProfile,
        RefKind::Hierarchy,
        RefKind::AuditLog,
        RefKind::Historical,
    ];

    /// The cache-key prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            RefKind::UserProfile => "user",
            RefKind::Hierarchy => "hierarchy",
            RefKind::AuditLog => "audit",
            RefKind::Historical => "historical",
        }
    }

    /// The kind whose cache-key prefix is `prefix` (`user`, `hierarchy`, ...).
    pub fn from_prefix(prefix: &str) -> Option<RefKind> {
        RefKind::ALL.into_iter().find(|k| k.prefix() == prefix)
    }

    /// The name of the id argument of the kind's read method, for error
    /// messages (`getUserProfile(userId)`, `getHistoricalData(key)`, ...).
    pub fn arg_name(self) -> &'static str {
        match self {
            RefKind::UserProfile => "userId",
            RefKind::Hierarchy => "entityId",
            RefKind::AuditLog => "logId",
            RefKind::Historical => "key",
        }
    }

    /// The Wrapper path for `id`, with `id` as one encoded segment.
    pub fn path(self, id: &str) -> String {
        let id = encode_segment(id);
        match self {
            RefKind::UserProfile => format!("/api/users/{id}/profile"),
            RefKind::Hierarchy => format!("/api/hierarchy/{id}"),
            RefKind::AuditLog => format!("/api/audit-logs/{id}"),
            RefKind::Historical => format!("/api/historical/{id}"),
        }
    }

    /// The cache key of `id`.
    pub fn key(self, id: &str) -> String {
        format!("{}:{id}", self.prefix())
    }
}

/// Splits a reference cache key such as `user:42` into kind and id, on the
/// first `:` only (`user:a:b` is the user `a:b`). The id must pass
/// [`is_valid_id`], as everywhere.
pub fn parse_key(key: &str) -> Option<(RefKind, &str)> {
    let (prefix, id) = key.split_once(':')?;
    let kind = RefKind::from_prefix(prefix)?;
    is_valid_id(id).then_some((kind, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_in_their_segment() {
        assert_eq!(encode_segment("../admin"), "..%2Fadmin");
        assert_eq!(encode_segment("a b/c?d#e%f"), "a%20b%2Fc%3Fd%23e%25f");
        assert_eq!(encode_segment("ü"), "%C3%BC");
        assert_eq!(encode_segment("a:b*c\\d"), "a%3Ab%2Ac%5Cd");
    }

    #[test]
    fn the_id_rule() {
        let long = "x".repeat(MAX_ID_BYTES);
        for ok in [
            "u1",
            "...",
            "a/b",
            "a:b",
            "a*",
            "a\\b",
            "ü",
            "日本語",
            " x ",
            "%2F",
            &long,
        ] {
            assert!(is_valid_id(ok), "{ok:?}");
            assert!(check_path_id("userId", ok).is_ok(), "{ok:?}");
        }
        let too_long = "x".repeat(MAX_ID_BYTES + 1);
        // 129 two-byte characters: within 256 characters, over 256 bytes
        let wide = "é".repeat(129);
        for bad in [
            "", ".", "..", "a\u{0}b", "a\nb", "a\u{7f}", "a\u{85}", &too_long, &wide,
        ] {
            assert!(!is_valid_id(bad), "{bad:?}");
            let e = check_path_id("userId", bad).unwrap_err();
            assert_eq!(e.arg_kind(), Some(crate::ArgKind::Range));
            assert!(e.to_string().starts_with("userId "), "{e}");
        }
    }

    #[test]
    fn snapshot_rows_follow_the_same_rule() {
        assert!(check_row_id("/api/users/access", "userId", 0, "a/b").is_ok());
        let e = check_row_id("/api/users/access", "userId", 3, "..").unwrap_err();
        assert_eq!(e.code(), "INVALID_RESPONSE");
        assert!(e.to_string().contains("row 3: userId"), "{e}");
        let e = check_row_id("/api/roles", "roleId", 0, "secret\n").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn amounts_and_idempotency_keys() {
        for ok in [0.0, 0.5, 1e9] {
            assert!(check_amount(ok).is_ok());
        }
        for bad in [-0.01, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(check_amount(bad).is_err(), "{bad}");
        }
        assert!(check_idempotency_key("lead:42").is_ok());
        assert!(check_idempotency_key(&"k".repeat(256)).is_ok());
        for bad in ["", "a b", "ü", "a\n", &"k".repeat(257)] {
            assert!(check_idempotency_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key("user:42"), Some((RefKind::UserProfile, "42")));
        assert_eq!(parse_key("historical:k"), Some((RefKind::Historical, "k")));
        assert_eq!(parse_key("user:a:b"), Some((RefKind::UserProfile, "a:b")));
        assert_eq!(parse_key("user:a/b"), Some((RefKind::UserProfile, "a/b")));
        assert_eq!(parse_key("credit:x"), None);
        assert_eq!(parse_key("user:.."), None);
        assert_eq!(parse_key("user:"), None);
        assert_eq!(parse_key("user"), None);
        assert_eq!(
            RefKind::UserProfile.path("../admin"),
            "/api/users/..%2Fadmin/profile"
        );
        for k in RefKind::ALL {
            assert_eq!(RefKind::from_prefix(k.prefix()), Some(k));
        }
    }
}
