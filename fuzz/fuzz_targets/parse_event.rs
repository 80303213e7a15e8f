//! Fuzzes the event parser/validator with arbitrary bytes on every topic,
//! with and without a signing secret: it must never panic, and an accepted
//! event must satisfy the protocol's invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smart_crm_core::config::Secret;
use smart_crm_core::ids::is_valid_id;
use smart_crm_core::protocol::{parse_event, Change, Context, Topic, MAX_EVENT_BYTES};

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new("fuzz-secret");
    for topic in Topic::ALL {
        for signing in [None, Some(&secret)] {
            let ctx = Context { tenant_id: "acme", topic, signing_secret: signing, now_ms: 1_795_000_000_000 };
            if let Ok(ev) = parse_event(data, &ctx) {
                assert!(data.len() <= MAX_EVENT_BYTES);
                match &ev.change {
                    Change::CreditSet { operation_code, cost, .. } => {
                        assert!(is_valid_id(operation_code));
                        assert!(cost.is_finite() && *cost >= 0.0 && cost.is_sign_positive());
                    }
                    Change::RoleSet { role_id, .. } | Change::RoleDelete { role_id } => assert!(is_valid_id(role_id)),
                    Change::UserStatus { user_id, .. } | Change::UserChanged { user_id } | Change::UserDeleted { user_id } => {
                        assert!(is_valid_id(user_id))
                    }
                    Change::ConfigSet { config_id, json } => {
                        assert!(is_valid_id(config_id));
                        serde_json::from_str::<serde_json::Value>(json).expect("config text is JSON");
                    }
                    _ => {}
                }
            }
        }
    }
});
