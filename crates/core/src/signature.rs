//! Event signatures (SPEC §3): hex HMAC-SHA256 with the signing secret over the
//! RFC 8785 (JCS) canonical form of the message without its `signature` member.
//!
//! The canonical form is written here because it is small and must be exact:
//! members sorted by UTF-16 code units, numbers written as ECMAScript's
//! `Number.prototype.toString` writes them (via `ryu-js`), strings escaped the
//! way JCS (and serde_json) escape them, no whitespace. The signature is always
//! computed over this canonical form, never over the bytes as they arrived.
//!
//! [`SigningKeys`] is the `signingSecret` option (consumer and publisher): one
//! secret or a list of them, so that a fleet can rotate its secret without a
//! window in which events are rejected. The first key signs; a signature made
//! with any key verifies.

use std::fmt;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::error::{CoreError, Result};
use crate::secret::Secret;

/// Largest accepted gap between a signed event's timestamp and the local
/// clock, in milliseconds (SPEC §3: 5 minutes either way).
pub const TIMESTAMP_WINDOW_MS: i64 = 5 * 60 * 1000;

type HmacSha256 = Hmac<Sha256>;

/// The `signingSecret` option: one or more secrets, the first of which signs.
///
/// Invariant: 1 to [`SigningKeys::MAX`] keys, none empty. `Debug` shows only
/// how many there are. Immutable, so it is freely shared across threads.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeys {
    /// The secrets in the order given: `[0]` signs, every one verifies.
    keys: Vec<Secret>,
}

impl SigningKeys {
    /// Most secrets in one list: each is one HMAC per rejected event, so the
    /// list is bounded; a rotation needs two or three.
    pub const MAX: usize = 16;

    /// One secret (must not be empty: `None` when it is).
    pub fn single(secret: Secret) -> Option<SigningKeys> {
        (!secret.expose().is_empty()).then(|| SigningKeys { keys: vec![secret] })
    }

    /// Parses the option `name` (`signingSecret`): absent or `null` is `None`;
    /// a non-empty string; or an array of 1 to [`SigningKeys::MAX`] non-empty
    /// strings. Errors name the option (and the index) and never echo a value.
    pub fn from_option(name: &str, value: Option<&Value>) -> Result<Option<SigningKeys>> {
        const EXPECTED: &str = "a non-empty string or a non-empty array of non-empty strings";
        let keys = match value {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) if s.is_empty() => {
                return Err(CoreError::option_range(name, "a non-empty string"))
            }
            Some(Value::String(s)) => vec![Secret::new(s.clone())],
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    return Err(CoreError::option_range(name, EXPECTED));
                }
                if items.len() > Self::MAX {
                    return Err(CoreError::option_range(
                        name,
                        format!("an array of at most {} secrets", Self::MAX),
                    ));
                }
                let mut keys = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) if !s.is_empty() => keys.push(Secret::new(s.clone())),
                        Value::String(_) => {
                            return Err(CoreError::option_range(
                                &format!("{name}[{i}]"),
                                "a non-empty string",
                            ))
                        }
                        _ => {
                            return Err(CoreError::option_type(&format!("{name}[{i}]"), "a string"))
                        }
                    }
                }
                keys
            }
            Some(_) => return Err(CoreError::option_type(name, EXPECTED)),
        };
        Ok(Some(SigningKeys { keys }))
    }

    /// The key new messages are signed with (the first).
    pub fn primary(&self) -> &Secret {
        &self.keys[0]
    }

    /// Every key, the signing one first.
    pub fn all(&self) -> &[Secret] {
        &self.keys
    }
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKeys([{} redacted])", self.keys.len())
    }
}

/// Writes the RFC 8785 canonical form of `v` into `out`.
pub fn canonicalize_into(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f == 0.0 {
                out.push('0'); // -0 canonicalises to 0
            } else {
                let mut buf = ryu_js::Buffer::new();
                out.push_str(buf.format(f));
            }
        }
        Value::String(s) => push_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonicalize_into(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => canonical_object(map, None, out),
    }
}

/// The canonical form of `v` as a string.
pub fn canonicalize(v: &Value) -> String {
    let mut out = String::new();
    canonicalize_into(v, &mut out);
    out
}

fn push_string(s: &str, out: &mut String) {
    // serde_json escapes exactly as JCS requires: `"` `\` and control
    // characters (with \b \f \n \r \t short forms, lowercase \u00xx otherwise).
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn canonical_object(map: &Map<String, Value>, skip: Option<&str>, out: &mut String) {
    let mut keys: Vec<&String> = map.keys().filter(|k| Some(k.as_str()) != skip).collect();
    keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    out.push('{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_string(k, out);
        out.push(':');
        canonicalize_into(&map[k], out);
    }
    out.push('}');
}

/// The hex HMAC-SHA256 of `message` without its `signature` member.
pub fn sign(message: &Map<String, Value>, secret: &Secret) -> String {
    hex::encode(mac_of(message, secret).finalize().into_bytes())
}

/// The signature of `message` with the signing (first) key of `keys`.
pub fn sign_with(message: &Map<String, Value>, keys: &SigningKeys) -> String {
    sign(message, keys.primary())
}

/// Constant-time check of `signature_hex` against `message`.
pub fn verify(message: &Map<String, Value>, secret: &Secret, signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(sig) => mac_of(message, secret).verify_slice(&sig).is_ok(),
        Err(_) => false,
    }
}

/// True when `signature_hex` was made over `message` with any of `keys`. The
/// canonical form is computed once; each comparison is constant-time.
pub fn verify_any(message: &Map<String, Value>, keys: &SigningKeys, signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex) else {
        return false;
    };
    let canonical = canonical_without_signature(message);
    keys.all()
        .iter()
        .any(|k| mac_over(&canonical, k).verify_slice(&sig).is_ok())
}

/// Hex HMAC-SHA256 of the concatenation of `parts` (raw bytes, no canonical
/// form: for the shared snapshot, whose bytes are fixed by its writer).
pub fn sign_bytes(parts: &[&[u8]], secret: &Secret) -> String {
    hex::encode(mac_of_bytes(parts, secret).finalize().into_bytes())
}

/// True when `signature_hex` is the HMAC of `parts` with any of `keys`
/// (constant-time comparisons).
pub fn verify_bytes_any(parts: &[&[u8]], keys: &SigningKeys, signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex) else {
        return false;
    };
    keys.all()
        .iter()
        .any(|k| mac_of_bytes(parts, k).verify_slice(&sig).is_ok())
}

fn mac_of_bytes(parts: &[&[u8]], secret: &Secret) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        mac.update(p);
    }
    mac
}

fn canonical_without_signature(message: &Map<String, Value>) -> String {
    let mut canonical = String::new();
    canonical_object(message, Some("signature"), &mut canonical);
    canonical
}

fn mac_of(message: &Map<String, Value>, secret: &Secret) -> HmacSha256 {
    mac_over(&canonical_without_signature(message), secret)
}

fn mac_over(canonical: &str, secret: &Secret) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(canonical.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ArgKind;

    fn canon(s: &str) -> String {
        canonicalize(&serde_json::from_str(s).unwrap())
    }

    #[test]
    fn rfc8785_numbers() {
        assert_eq!(canon("3.0"), "3");
        assert_eq!(canon("1e21"), "1e+21");
        assert_eq!(canon("0.000001"), "0.000001");
        assert_eq!(canon("1e-7"), "1e-7");
        assert_eq!(canon("-0"), "0");
        assert_eq!(canon("0.1"), "0.1");
        assert_eq!(
            canon("[333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001]"),
            "[333333333.3333333,1e+30,4.5,0.002,1e-27]"
        );
    }

    #[test]
    fn rfc8785_sorting_by_utf16() {
        // RFC 8785 §3.2.3's example keys, sorted by UTF-16 code units.
        let input = r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#;
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(canon(input), expected);
    }

    #[test]
    fn sign_and_verify() {
        let secret = Secret::new("s3cret");
        let mut m: Map<String, Value> =
            serde_json::from_str(r#"{"b":1,"a":"x","signature":"ignored"}"#).unwrap();
        let sig = sign(&m, &secret);
        assert!(verify(&m, &secret, &sig));
        assert!(!verify(&m, &Secret::new("other"), &sig));
        m.insert("a".into(), Value::String("y".into()));
        assert!(!verify(&m, &secret, &sig));
        assert!(!verify(&m, &secret, "zz"));
    }

    fn keys(v: Value) -> SigningKeys {
        SigningKeys::from_option("signingSecret", Some(&v))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_list_signs_with_the_first_and_verifies_with_any() {
        let m: Map<String, Value> = serde_json::from_str(r#"{"a":1}"#).unwrap();
        let rotating = keys(serde_json::json!(["new", "old"]));
        let by_new = sign(&m, &Secret::new("new"));
        let by_old = sign(&m, &Secret::new("old"));
        assert_eq!(sign_with(&m, &rotating), by_new);
        assert!(verify_any(&m, &rotating, &by_new));
        assert!(verify_any(&m, &rotating, &by_old));
        assert!(!verify_any(&m, &rotating, &sign(&m, &Secret::new("other"))));
        assert!(!verify_any(&m, &rotating, "not hex"));
        let single = keys(serde_json::json!("old"));
        assert!(verify_any(&m, &single, &by_old));
        assert!(!verify_any(&m, &single, &by_new));
        assert_eq!(single, SigningKeys::single(Secret::new("old")).unwrap());
        assert!(SigningKeys::single(Secret::new("")).is_none());
    }

    #[test]
    fn the_option_is_validated_without_echoing_a_secret() {
        use serde_json::json;
        let parse = |v: Value| SigningKeys::from_option("signingSecret", Some(&v));
        assert_eq!(parse(json!(null)).unwrap(), None);
        assert_eq!(
            SigningKeys::from_option("signingSecret", None).unwrap(),
            None
        );
        let cases = [
            (json!(""), ArgKind::Range, "`signingSecret`"),
            (json!([]), ArgKind::Range, "`signingSecret`"),
            (json!(["hunter2", ""]), ArgKind::Range, "`signingSecret[1]`"),
            (json!(["hunter2", 7]), ArgKind::Type, "`signingSecret[1]`"),
            (
                json!(["hunter2", null]),
                ArgKind::Type,
                "`signingSecret[1]`",
            ),
            (json!(42), ArgKind::Type, "`signingSecret`"),
            (json!({"k": "hunter2"}), ArgKind::Type, "`signingSecret`"),
            (
                json!(vec!["hunter2"; SigningKeys::MAX + 1]),
                ArgKind::Range,
                "`signingSecret`",
            ),
        ];
        for (v, kind, named) in cases {
            let e = parse(v.clone()).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.arg_kind(), Some(kind), "{v}: {msg}");
            assert!(msg.contains(named), "{v}: {msg}");
            assert!(!msg.contains("hunter2"), "{v}: {msg}");
        }
        let k = parse(json!(vec!["hunter2"; SigningKeys::MAX]))
            .unwrap()
            .unwrap();
        assert_eq!(k.all().len(), SigningKeys::MAX);
        let dbg = format!("{:?}", keys(json!(["hunter2", "hunter3"])));
        assert!(!dbg.contains("hunter"), "{dbg}");
        assert!(dbg.contains('2'), "{dbg}");
    }
}
