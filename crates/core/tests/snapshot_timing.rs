//! Where the time of a shared-snapshot start goes, on the F4 tenant of
//! bench/RESULTS-fleet.md (1,000,000 users, 10,000 operations, 1,000 roles of
//! 20 permissions, 2 roles per user). Ignored: run it in release,
//! `cargo test --release -p smart-crm-core --test snapshot_timing -- --ignored --nocapture`.

use std::time::Instant;

use smart_crm_core::model::{ConfigRow, CreditRow, RoleRow, Snapshot, UserRow};
use smart_crm_core::snapshot::{build, encode, encode_v1, verify};
use smart_crm_core::stream::StreamId;

fn tenant() -> Snapshot {
    let role = |i: usize| format!("role-{i}");
    Snapshot {
        credits: (0..10_000)
            .map(|i| CreditRow {
                operation_code: format!("crm.op{i}.run"),
                credit_cost: (i % 7) as f64 + 0.5,
                is_active: Some(true),
                version: Some(1),
            })
            .collect(),
        roles: (0..1000)
            .map(|r| RoleRow {
                role_id: role(r),
                permissions: (0..20)
                    .map(|k| {
                        if k < 5 {
                            format!("crm.r{r}.p{k}.*")
                        } else {
                            format!("crm.r{r}.e{k}.act")
                        }
                    })
                    .collect(),
                version: Some(1),
            })
            .collect(),
        users: (0..1_000_000)
            .map(|u| UserRow {
                user_id: format!("user-{u:07}"),
                status: if u % 50 == 49 { "suspended" } else { "active" }.into(),
                roles: vec![role(u % 1000), role((u + 500) % 1000)],
                version: Some(1),
            })
            .collect(),
        configs: (0..10)
            .map(|i| ConfigRow {
                config_id: format!("config-{i}"),
                config: serde_json::json!({"limit": i * 10, "enabled": i % 2 == 0}),
                version: Some(1),
            })
            .collect(),
        unchanged: [false; 4],
    }
}

#[test]
#[ignore]
fn where_a_snapshot_start_spends_its_time() {
    let snap = tenant();
    let pos = StreamId { ms: 1, seq: 0 };
    for (name, enc) in [
        ("format 2", encode as fn(_, _, _, _, _, _) -> _),
        ("format 1", encode_v1),
    ] {
        let t = Instant::now();
        let bytes = enc("acme", pos, "ep", 1, &snap, None);
        let encode_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut best = [f64::MAX; 2];
        for _ in 0..3 {
            let t = Instant::now();
            let v = verify(&bytes, "acme", u64::MAX, None).unwrap();
            let verified = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let store = build(&bytes, &v).unwrap();
            let built = t.elapsed().as_secs_f64() * 1e3;
            assert_eq!(store.sizes(), [10_000, 1000, 1_000_000, 10]);
            let t = Instant::now();
            drop(store);
            let dropped = t.elapsed().as_secs_f64() * 1e3;
            best = [best[0].min(verified), best[1].min(built)];
            eprintln!("  {name}: drop of the store {dropped:.0} ms");
        }
        eprintln!(
            "{name}: {:.1} MB, encode {encode_ms:.0} ms, verify (size, header, SHA-256) {:.0} ms, decode + build {:.0} ms (best of 3)",
            bytes.len() as f64 / 1e6,
            best[0],
            best[1]
        );
    }
}

#[test]
#[ignore]
fn building_the_store_of_a_million_users() {
    use smart_crm_core::critical::CriticalStore;
    for _ in 0..3 {
        let snap = tenant();
        let t = Instant::now();
        let store = CriticalStore::from_rows(&snap).unwrap();
        let built = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        drop(snap);
        eprintln!(
            "from_rows: {built:.0} ms, then freeing the rows {:.0} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
        assert_eq!(store.sizes()[2], 1_000_000);
    }
}
