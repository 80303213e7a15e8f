//! The shipped signature test vectors (`test-vectors/signatures.json`): the
//! canonical form and the signature of each message must match exactly, and a
//! consumer configured with the vector's secret must accept the signed message.

use serde_json::{Map, Value};
use smart_crm_core::config::Secret;
use smart_crm_core::protocol::{parse_event, Context, EVENT_TYPES};
use smart_crm_core::signature::{canonicalize, sign, verify};

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
        let ctx = Context {
            tenant_id: "acme",
            topic,
            signing_secret: Some(&secret),
            now_ms: ts.timestamp_millis(),
        };
        let payload = serde_json::to_vec(&msg).unwrap();
        parse_event(&payload, &ctx).unwrap_or_else(|r| panic!("{name}: rejected as {r:?}"));
    }
}
