//! Fuzzes the shared snapshot's format 2 body decoder (snapshot.rs): any
//! bytes, as a body that passed its digest, must decode or be rejected as
//! `data`, never panic, hang or allocate beyond their size; and a store that
//! decodes is re-encoded and decoded again to the same sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smart_crm_core::snapshot::{build_v2, decode, encode, Rejected};
use smart_crm_core::stream::StreamId;

fuzz_target!(|data: &[u8]| {
    match build_v2(data) {
        Ok(store) => {
            let pos = StreamId { ms: 1, seq: 0 };
            let bytes = encode("t", pos, "e", 0, &store.rows(), None);
            let (_, again) =
                decode(&bytes, "t", u64::MAX, None).expect("a re-encoded store decodes");
            assert_eq!(again.sizes(), store.sizes());
        }
        Err(r) => assert_eq!(r, Rejected::Data),
    }
});
