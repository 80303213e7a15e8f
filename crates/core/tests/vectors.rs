//! The shipped signature test vectors (`test-vectors/signatures.json`): the
//! canonical form and the signature of each message must match exactly, and a
//! consumer configured with the vector's secret must accept the signed message,
//! alone or as any member of a rotation list (SPEC §3), and one configured
//! without it must reject it. The `rotation` cases: a publisher's list signs
//! with its first secret, and each listed consumer accepts or rejects as stated.

use serde_json::{Map, Value};
use smart_crm_core::config::Secret;
use smart_crm_core::protocol::{parse_event, Context, Rejection, EVENT_TYPES};
use smart_crm_core::signature::{canonicalize, sign, verify, SigningKeys};

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../test-vectors/signatures.json"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["vectors"].as_array().unwrap().clone()
}

#[test]
fn at_least_six_vectors_and_each_matches() {
    let vs = vectors();
    assert!(vs.len() >= 6);
    for v in vs {
        let name = v["name"].as_str().unwrap();
        let mut msg: Map<String, Value> =
            serde_json::from_str(v["message"].as_str().unwrap()).unwrap();
        let secret = Secret::new(v["secret"].as_str().unwrap());
        let expected = v["signature"].as_str().unwrap();
        assert_eq!(sign(&msg, &secret), expected, "{name}: signature");
        assert!(verify(&msg, &secret, expected), "{name}: verify");
        msg.remove("signature");
        assert_eq!(
            canonicalize(&Value::Object(msg.clone())),
            v["canonical"].as_str().unwrap(),
            "{name}: canonical"
        );

        // A consumer with the secret accepts the message once it carries the signature.
        msg.insert("signature".into(), Value::String(expected.into()));
        let event_type = msg["eventType"].as_str().unwrap();
        let topic = EVENT_TYPES
            .iter()
            .find(|(t, _)| *t == event_type)
            .unwrap()
            .1;
        let ts = chrono::DateTime::parse_from_rfc3339(msg["timestamp"].as_str().unwrap()).unwrap();
        let payload = serde_json::to_vec(&msg).unwrap();
        let s = secret.expose();
        for list in [
            Value::from(s),
            serde_json::json!([s]),
            serde_json::json!(["rotated-in", s]),
            serde_json::json!([s, "rotated-out"]),
        ] {
            let keys = SigningKeys::from_option("signingSecret", Some(&list))
                .unwrap()
                .unwrap();
            let ctx = Context {
                tenant_id: "acme",
                topic,
                signing_secret: Some(&keys),
                now_ms: ts.timestamp_millis(),
            };
            parse_event(&payload, &ctx).unwrap_or_else(|r| {
                panic!("{name} with {} keys: rejected as {r:?}", keys.all().len())
            });
        }
        let others = SigningKeys::from_option(
            "signingSecret",
            Some(&serde_json::json!(["rotated-in", "rotated-out"])),
        )
        .unwrap()
        .unwrap();
        let ctx = Context {
            tenant_id: "acme",
            topic,
            signing_secret: Some(&others),
            now_ms: ts.timestamp_millis(),
        };
        assert_eq!(
            parse_event(&payload, &ctx),
            Err(Rejection::BadSignature),
            "{name}: accepted without its secret"
        );
    }
}

fn keys_of(v: &Value) -> SigningKeys {
    SigningKeys::from_option("signingSecret", Some(v))
        .unwrap()
        .unwrap()
}

/// The `rotation` cases: the publisher's list signs with its first secret, and
/// each listed consumer accepts or rejects as the vector says.
#[test]
fn rotation_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../test-vectors/signatures.json"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["rotation"]["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut msg: Map<String, Value> =
            serde_json::from_str(case["message"].as_str().unwrap()).unwrap();
        assert_eq!(
            canonicalize(&Value::Object(msg.clone())),
            case["canonical"].as_str().unwrap(),
            "{name}: canonical"
        );
        let expected = case["signature"].as_str().unwrap();
        let publisher = keys_of(&case["publisherSecrets"]);
        assert_eq!(
            smart_crm_core::signature::sign_with(&msg, &publisher),
            expected,
            "{name}: the publisher signs with its first secret"
        );
        msg.insert("signature".into(), Value::String(expected.into()));
        let payload = serde_json::to_vec(&msg).unwrap();
        let ts = chrono::DateTime::parse_from_rfc3339(msg["timestamp"].as_str().unwrap()).unwrap();
        for consumer in case["consumers"].as_array().unwrap() {
            let keys = keys_of(&consumer["secrets"]);
            let ctx = Context {
                tenant_id: "acme",
                topic: smart_crm_core::protocol::Topic::CreditConfigs,
                signing_secret: Some(&keys),
                now_ms: ts.timestamp_millis(),
            };
            let got = parse_event(&payload, &ctx).map(|_| ());
            let want = if consumer["accepts"].as_bool().unwrap() {
                Ok(())
            } else {
                Err(Rejection::BadSignature)
            };
            assert_eq!(got, want, "{name}: consumer {}", consumer["secrets"]);
        }
    }
}
