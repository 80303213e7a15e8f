//! The shipped stream-transport vectors (`test-vectors/stream.json`): the key
//! layout of a tenant, the live message form, and a shared snapshot byte for
//! byte (signed and unsigned), as a publisher or writer in another language
//! must produce them (PROTOCOL.md).

use serde_json::Value;
use smart_crm_core::model::{CreditRow, RoleRow, Snapshot, UserRow};
use smart_crm_core::protocol::Topic;
use smart_crm_core::signature::SigningKeys;
use smart_crm_core::snapshot::{decode, encode, encode_v1};
use smart_crm_core::stream::{parse_live, Keys, StreamId};

fn doc() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../test-vectors/stream.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn snapshot() -> Snapshot {
    Snapshot {
        credits: vec![CreditRow {
            operation_code: "crm.leads.create".into(),
            credit_cost: 2.5,
            is_active: Some(true),
            version: Some(3),
        }],
        roles: vec![RoleRow {
            role_id: "sales".into(),
            permissions: vec!["crm.leads.*".into()],
            version: None,
        }],
        users: vec![UserRow {
            user_id: "u-alice".into(),
            status: "active".into(),
            roles: vec!["sales".into()],
            version: Some(1),
        }],
        configs: vec![],
        unchanged: [false; 4],
    }
}

#[test]
fn keys_and_live_messages() {
    let d = doc();
    let k = Keys::new("crm", "acme");
    let keys = &d["keys"];
    assert_eq!(k.stream, keys["stream"]);
    assert_eq!(k.epoch, keys["epoch"]);
    assert_eq!(k.snapshot, keys["snapshot"]);
    assert_eq!(k.lease, keys["lease"]);
    assert_eq!(k.refresh, keys["refresh"]);
    assert_eq!(k.live, keys["liveChannel"]);
    for v in d["live"].as_array().unwrap() {
        let text = v["message"].as_str().unwrap();
        let (id, topic, msg) = parse_live(text.as_bytes()).unwrap();
        assert_eq!(id.to_string(), v["id"].as_str().unwrap());
        assert_eq!(Some(topic), Topic::from_name(v["topic"].as_str().unwrap()));
        assert_eq!(
            std::str::from_utf8(msg).unwrap(),
            v["msg"].as_str().unwrap()
        );
    }
}

#[test]
fn snapshots_byte_for_byte() {
    let d = doc();
    let vectors = d["snapshots"].as_array().unwrap();
    assert!(
        vectors.iter().any(|v| v["format"] == 2),
        "format 2 has vectors"
    );
    assert!(
        vectors.iter().any(|v| v["format"] == 1),
        "format 1 has vectors"
    );
    for v in vectors {
        let keys = v["secret"]
            .as_str()
            .and_then(|s| SigningKeys::single(smart_crm_core::secret::Secret::new(s)));
        let pos = StreamId::parse(v["position"].as_str().unwrap()).unwrap();
        let enc = if v["format"] == 1 { encode_v1 } else { encode };
        let bytes = enc(
            "acme",
            pos,
            v["epoch"].as_str().unwrap(),
            v["createdAt"].as_i64().unwrap(),
            &snapshot(),
            keys.as_ref(),
        );
        // Format 1 is text (`bytes`); format 2's body is binary (`hex`).
        let expected = match v["bytes"].as_str() {
            Some(text) => text.as_bytes().to_vec(),
            None => hex::decode(v["hex"].as_str().unwrap()).unwrap(),
        };
        assert_eq!(bytes, expected, "{}", v["name"]);
        let (h, s) = decode(&expected, "acme", 1 << 20, keys.as_ref()).unwrap();
        assert_eq!(h.position, v["position"].as_str().unwrap());
        assert_eq!(s.sizes(), [1, 1, 1, 0], "{}", v["name"]);
        assert_eq!(s.credit_cost("crm.leads.create"), Some(2.5));
        let alice = s.user_access("u-alice").unwrap();
        assert_eq!((alice.status(), &*alice.roles()[0]), ("active", "sales"));
    }
}
