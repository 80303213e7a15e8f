//! Fuzzes RFC 8785 canonicalisation: for any JSON input, the canonical form
//! must parse back to an equal value, be a fixed point (canonicalising it
//! again changes nothing), and sign/verify must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use smart_crm_core::config::Secret;
use smart_crm_core::signature::{canonicalize, sign, verify};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let canonical = canonicalize(&value);
    let reparsed: Value = serde_json::from_str(&canonical).expect("canonical form is JSON");
    assert_eq!(canonicalize(&reparsed), canonical, "canonical form is a fixed point");
    if let (Value::Object(m), Value::Object(r)) = (&value, &reparsed) {
        let secret = Secret::new("k");
        let sig = sign(m, &secret);
        assert!(verify(r, &secret, &sig), "the signature survives canonical re-encoding");
    }
});
