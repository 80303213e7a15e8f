//! Ids and cache keys: the one place that says what an id may be, how it
//! travels in a URL, and how reference cache keys are formed and parsed.
//!
//! A leaf module (it imports nothing of the crate but the error type), so the
//! event parser, the caches and the Wrapper client can all use it without
//! importing each other.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{CoreError, Result};

/// Longest accepted id, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Everything but RFC 3986 "unreserved" characters is encoded, so an id can
/// never leave its path segment (`../admin` → `..%2Fadmin`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// True when `s` can be an entity id: 1–256 bytes, no control characters, none
/// of `:` `*` `/` `\`, and not `.` or `..`. Ids become cache keys and URL path
/// segments, so anything that could widen either is refused.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_BYTES
        && s != "."
        && s != ".."
        && !s
            .chars()
            .any(|c| c.is_control() || matches!(c, ':' | '*' | '/' | '\\'))
}

/// Percent-encodes `id` as one path segment.
pub fn encode_segment(id: &str) -> String {
    utf8_percent_encode(id, SEGMENT).to_string()
}

/// Rejects ids that cannot be one path segment (SPEC §2: empty, `.`, `..`).
pub fn check_path_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(CoreError::arg_range(format!(
            "{what} must not be empty, '.' or '..' (it is sent as one URL path segment)"
        )));
    }
    Ok(())
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

/// Splits a reference cache key such as `user:42` into kind and id. Ids must
/// pass [`is_valid_id`], as in events.
pub fn parse_key(key: &str) -> Option<(RefKind, &str)> {
    let (prefix, id) = key.split_once(':')?;
    let kind = RefKind::ALL.into_iter().find(|k| k.prefix() == prefix)?;
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
        assert!(check_path_id("id", "..").is_err());
        assert!(check_path_id("id", ".").is_err());
        assert!(check_path_id("id", "").is_err());
        assert!(check_path_id("id", "...").is_ok());
    }

    #[test]
    fn keys() {
        assert_eq!(parse_key("user:42"), Some((RefKind::UserProfile, "42")));
        assert_eq!(parse_key("historical:k"), Some((RefKind::Historical, "k")));
        assert_eq!(parse_key("credit:x"), None);
        assert_eq!(parse_key("user:.."), None);
        assert_eq!(parse_key("user:"), None);
        assert_eq!(
            RefKind::UserProfile.path("../admin"),
            "/api/users/..%2Fadmin/profile"
        );
    }
}
