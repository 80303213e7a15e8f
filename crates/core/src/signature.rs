//! Event signatures (SPEC §3): hex HMAC-SHA256 with the signing secret over the
//! RFC 8785 (JCS) canonical form of the message without its `signature` member.
//!
//! The canonical form is written here because it is small and must be exact:
//! members sorted by UTF-16 code units, numbers written as ECMAScript's
//! `Number.prototype.toString` writes them (via `ryu-js`), strings escaped the
//! way JCS (and serde_json) escape them, no whitespace. The signature is always
//! computed over this canonical form, never over the bytes as they arrived.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::config::Secret;

type HmacSha256 = Hmac<Sha256>;

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

/// Constant-time check of `signature_hex` against `message`.
pub fn verify(message: &Map<String, Value>, secret: &Secret, signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(sig) => mac_of(message, secret).verify_slice(&sig).is_ok(),
        Err(_) => false,
    }
}

fn mac_of(message: &Map<String, Value>, secret: &Secret) -> HmacSha256 {
    let mut canonical = String::new();
    canonical_object(message, Some("signature"), &mut canonical);
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(canonical.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
