//! The shared reference tier (SPEC §7 `sharedReference`) without Node: several
//! consumers of one tenant (each its own instance: own caches, own command
//! connection) over one real `redis-server` and one Wrapper.
//!
//! * an entry fetched by one instance is served to another from Redis, with
//!   the time it has left there;
//! * concurrent misses of many instances make one Wrapper request;
//! * the fence: a fetch that began before an invalidation (or a reload that
//!   drops reference data) never writes its value into Redis after it;
//! * a pool's tenants share one command connection;
//! * without Redis, reads still work.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{seed, wait_until, Collect, Redis, Wrapper};
use serde_json::{json, Value};
use smart_crm_core::config::PoolConfig;
use smart_crm_core::ids::RefKind;
use smart_crm_core::outbox::Batch;
use smart_crm_core::pool::{Pool, PoolSink};
use smart_crm_core::publisher::{Publisher, PublisherOptions};
use smart_crm_core::redis_target::RedisTarget;
use smart_crm_core::{Config, Consumer, CoreError};

const PROFILE: &str = "/api/users/u1/profile";

fn options(wrapper: &str, redis: &str, tenant: &str) -> Value {
    json!({
        "tenantId": tenant, "wrapperUrl": wrapper, "redisUrl": redis,
        "heartbeatMs": 500, "initTimeoutMs": 5000, "resyncJitterMs": 0,
        "sharedReference": true, "requestTimeoutMs": 5000,
        "ttl": { "userProfiles": 60000 },
    })
}

/// A started, loaded consumer: one instance of the fleet.
async fn instance(opts: Value) -> Consumer {
    let c = Consumer::new(Config::from_json(&opts, &HashMap::new()).unwrap()).unwrap();
    c.start(Arc::new(Collect::default())).unwrap();
    c.wait_ready().await.unwrap();
    c
}

async fn redis_cmd(url: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

/// The `v` field of the shared entry of `key`, if any.
async fn shared_value(url: &str, tenant: &str, key: &str) -> Option<String> {
    let entry = format!("crm:{{{tenant}}}:ref:{key}");
    match redis_cmd(url, &["HGET", &entry, "v"]).await {
        redis::Value::BulkString(b) => Some(String::from_utf8(b).unwrap()),
        _ => None,
    }
}

async fn int_of(url: &str, args: &[&str]) -> i64 {
    match redis_cmd(url, args).await {
        redis::Value::Int(i) => i,
        other => panic!("{args:?}: {other:?}"),
    }
}

fn name(body: &Arc<str>) -> String {
    serde_json::from_str::<Value>(body).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_instance_takes_the_entry_with_the_time_it_has_left() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let a = instance(options(&url, &redis.url(), "t1")).await;
    let b = instance(options(&url, &redis.url(), "t1")).await;

    let body = a.reference_get(RefKind::UserProfile, "u1").await.unwrap();
    assert_eq!(name(&body), "Ann");
    assert_eq!(w.hits(PROFILE), 1);
    let pttl = int_of(&redis.url(), &["PTTL", "crm:{t1}:ref:user:u1"]).await;
    assert!((59_000..=60_000).contains(&pttl), "PTTL {pttl} ≈ the TTL");
    assert_eq!(a.metrics().shared_misses, 1);

    // As if 20 s had passed in Redis: B keeps what is left, not a full TTL.
    redis_cmd(&redis.url(), &["PEXPIRE", "crm:{t1}:ref:user:u1", "40000"]).await;
    let before = smart_crm_core::metrics::now_ms();
    let body = b.reference_get(RefKind::UserProfile, "u1").await.unwrap();
    assert_eq!(name(&body), "Ann");
    assert_eq!(w.hits(PROFILE), 1, "served from Redis, not the Wrapper");
    let m = b.metrics();
    assert_eq!((m.shared_hits, m.shared_misses), (1, 0));
    let expiry = b.cache_expiry("user:u1").unwrap();
    assert!(
        expiry >= before + 39_000 && expiry <= before + 40_500,
        "B's entry expires with Redis's ({} ms left), not after a full TTL",
        expiry - before
    );

    // A 404 is shared too, for ttl.notFound.
    let e = a.reference_get(RefKind::UserProfile, "ghost").await;
    assert!(matches!(e, Err(CoreError::NotFound(_))));
    assert_eq!(
        shared_value(&redis.url(), "t1", "user:ghost")
            .await
            .as_deref(),
        Some("null")
    );
    let pttl = int_of(&redis.url(), &["PTTL", "crm:{t1}:ref:user:ghost"]).await;
    assert!(
        (29_000..=30_000).contains(&pttl),
        "PTTL {pttl} ≈ ttl.notFound"
    );
    let e = b.reference_get(RefKind::UserProfile, "ghost").await;
    assert!(matches!(e, Err(CoreError::NotFound(_))));
    assert_eq!(w.hits("/api/users/ghost/profile"), 1);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_of_many_instances_make_one_request() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let mut fleet = Vec::new();
    for _ in 0..8 {
        fleet.push(instance(options(&url, &redis.url(), "t1")).await);
    }
    let held = w.hold.write().await;
    let reads: Vec<_> = fleet
        .iter()
        .flat_map(|c| {
            (0..10).map(move |_| {
                let c = c.clone();
                tokio::spawn(async move { c.reference_get(RefKind::UserProfile, "u1").await })
            })
        })
        .collect();
    wait_until(|| w.hits(PROFILE) == 1).await;
    // Every instance has missed and is waiting (for the lease or its fetch).
    wait_until(|| fleet.iter().all(|c| c.metrics().reference_misses == 10)).await;
    drop(held);
    for r in reads {
        assert_eq!(name(&r.await.unwrap().unwrap()), "Ann");
    }
    assert_eq!(w.hits(PROFILE), 1, "one Wrapper request for the fleet");
    let shared: Vec<(u64, u64)> = fleet
        .iter()
        .map(|c| {
            let m = c.metrics();
            (m.shared_hits, m.shared_misses)
        })
        .collect();
    assert_eq!(shared.iter().map(|s| s.1).sum::<u64>(), 1, "{shared:?}");
    assert_eq!(shared.iter().map(|s| s.0).sum::<u64>(), 7, "{shared:?}");
    for c in &fleet {
        c.shutdown().await;
    }
}

/// A's fetch is held at the Wrapper with the old value; `invalidate` runs
/// (on B); the Wrapper then answers A with the old value. Redis must not
/// hold it afterwards, and B's next read must get the new one.
///
/// A is not subscribed (not started: its reads work all the same), so it
/// never hears of the invalidation and its own invalidation-wins flag
/// cannot save the day: only the fence in Redis stands between its old
/// value and the fleet (and A's own cache).
async fn fence_case(invalidate: impl AsyncFnOnce(&Consumer, &Redis, &Wrapper)) {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let opts = options(&url, &redis.url(), "t1");
    let a = Consumer::new(Config::from_json(&opts, &HashMap::new()).unwrap()).unwrap();
    let b = instance(opts).await;

    let held = w.hold.write().await;
    let fetch = {
        let a = a.clone();
        tokio::spawn(async move { a.reference_get(RefKind::UserProfile, "u1").await })
    };
    // A holds the lease and its request (with the old value) is at the Wrapper.
    wait_until(|| w.hits(PROFILE) == 1).await;
    w.set(PROFILE, 200, json!({ "name": "Bea" }));
    invalidate(&b, &redis, &w).await;
    drop(held);
    // The callers already waiting may get the old value (SPEC §2)...
    assert_eq!(name(&fetch.await.unwrap().unwrap()), "Ann");
    // ...but it is not kept: not in Redis, and not in A either (the refused
    // write told it the answer is outdated).
    assert_eq!(shared_value(&redis.url(), "t1", "user:u1").await, None);
    assert_eq!(a.cache_expiry("user:u1"), None);
    let body = b.reference_get(RefKind::UserProfile, "u1").await.unwrap();
    assert_eq!(name(&body), "Bea");
    assert_eq!(w.hits(PROFILE), 2);
    assert_eq!(
        shared_value(&redis.url(), "t1", "user:u1").await.as_deref(),
        Some(r#"{"name":"Bea"}"#)
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fetch_that_began_before_an_invalidation_never_writes_after_it() {
    fence_case(async |b: &Consumer, redis: &Redis, _w: &Wrapper| {
        b.invalidate("user:u1");
        // Sent: the fence token A read is gone.
        let fence = "crm:{t1}:ref-fence:user:u1";
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while int_of(&redis.url(), &["EXISTS", fence]).await == 1 {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fetch_that_began_before_a_reload_that_drops_reference_data_never_writes_after_it() {
    fence_case(async |b: &Consumer, redis: &Redis, _w: &Wrapper| {
        let resyncs = b.metrics().resyncs;
        let publisher = Publisher::connect(PublisherOptions {
            redis: RedisTarget::url(&redis.url()).unwrap(),
            tenant_id: "t1".into(),
            channel_prefix: "crm".into(),
            signing_secret: None,
            transport: smart_crm_core::publisher::PublishTransport::PubSub,
            stream_max_len: 100,
        })
        .await
        .unwrap();
        publisher
            .publish("control", "resync-required", json!({}), None)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while b.metrics().resyncs == resyncs
            || int_of(&redis.url(), &["EXISTS", "crm:{t1}:ref-epoch"]).await == 1
        {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_reads_still_work() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let a = instance(options(&url, &redis.url(), "t1")).await;
    drop(redis);
    let body = a.reference_get(RefKind::UserProfile, "u1").await.unwrap();
    assert_eq!(name(&body), "Ann");
    a.invalidate("user:u1");
    let body = a.reference_get(RefKind::UserProfile, "u1").await.unwrap();
    assert_eq!(name(&body), "Ann");
    assert_eq!(w.hits(PROFILE), 2);
    let m = a.metrics();
    assert_eq!((m.shared_hits, m.shared_misses), (0, 0));
    a.shutdown().await;
}

#[derive(Default)]
struct Drop_;

impl PoolSink for Drop_ {
    fn deliver(&self, _slot: u64, batch: Batch) {
        drop(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pools_tenants_share_one_command_connection() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let opts = json!({ "wrapperUrl": url, "redisUrl": redis.url(), "heartbeatMs": 500,
                       "resyncJitterMs": 0, "sharedReference": true });
    let pool = Pool::new(PoolConfig::from_json(&opts, &HashMap::new()).unwrap()).unwrap();
    pool.start(Arc::new(Drop_)).unwrap();
    let mut tenants = Vec::new();
    for i in 0..20 {
        let (c, _) = pool.tenant(&format!("t{i}")).unwrap();
        c.wait_ready().await.unwrap();
        tenants.push(c);
    }
    for (i, c) in tenants.iter().enumerate() {
        let body = c.reference_get(RefKind::UserProfile, "u1").await.unwrap();
        assert_eq!(name(&body), "Ann");
        let entry = format!("crm:{{t{i}}}:ref:user:u1");
        assert_eq!(int_of(&redis.url(), &["EXISTS", &entry]).await, 1);
    }
    assert_eq!(pool.status().command_connections, 1);
    // Redis agrees: the pool's subscription link and one command connection.
    let list = match redis_cmd(&redis.url(), &["CLIENT", "LIST"]).await {
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        redis::Value::VerbatimString { text, .. } => text,
        other => panic!("{other:?}"),
    };
    let evals = list
        .lines()
        .filter(|l| l.contains("cmd=eval") || l.contains("cmd=del"))
        .count();
    assert_eq!(evals, 1, "{list}");
    pool.shutdown().await;
}

fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../test-vectors/shared-reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_shipped_vectors_hold() {
    use smart_crm_core::commands::key_slot;
    use smart_crm_core::secret::Secret;
    use smart_crm_core::shared_ref::{entry_signature, Layout, NOT_FOUND_VALUE};
    let d = vectors();
    let tenant = d["tenant"].as_str().unwrap();
    let layout = Layout::new(d["prefix"].as_str().unwrap(), tenant);
    assert_eq!(layout.epoch(), d["epoch"]);
    let slot = d["slot"].as_u64().unwrap() as u16;
    assert_eq!(key_slot(&layout.epoch()), slot);
    for (key, k) in d["keys"].as_object().unwrap() {
        assert_eq!(layout.entry(key), k["entry"]);
        assert_eq!(layout.fence(key), k["fence"]);
        assert_eq!(layout.lease(key), k["lease"]);
        for name in ["entry", "fence", "lease"] {
            assert_eq!(key_slot(k[name].as_str().unwrap()), slot, "{key} {name}");
        }
    }
    assert_eq!(NOT_FOUND_VALUE, d["notFoundValue"]);
    let secret = Secret::new(d["signingSecret"].as_str().unwrap());
    for e in d["entries"].as_array().unwrap() {
        let s = |f: &str| e[f].as_str().unwrap().to_owned();
        assert_eq!(
            entry_signature(tenant, &s("key"), &s("epoch"), &s("v"), &secret),
            s("s")
        );
    }
}

/// An entry written with plain commands, as PROTOCOL.md describes it (a
/// writer in another language warming the tier), is served; with a signing
/// secret a tampered one is not: it is deleted and the Wrapper is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_written_by_plain_commands_are_served_and_checked() {
    use smart_crm_core::secret::Secret;
    use smart_crm_core::shared_ref::entry_signature;
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let mut opts = options(&url, &redis.url(), "acme");
    opts["signingSecret"] = json!("s3cret");
    let a = instance(opts).await;
    let r = redis.url();
    let epoch = "e-from-elsewhere";
    redis_cmd(&r, &["SET", "crm:{acme}:ref-epoch", epoch]).await;
    let write = async |key: &str, v: &str, s: &str| {
        let entry = format!("crm:{{acme}}:ref:{key}");
        redis_cmd(&r, &["HSET", &entry, "v", v, "e", epoch, "s", s]).await;
        redis_cmd(&r, &["PEXPIRE", &entry, "50000"]).await;
    };
    let secret = Secret::new("s3cret");
    let v = r#"{"name":"Warm"}"#;
    write(
        "user:u1",
        v,
        &entry_signature("acme", "user:u1", epoch, v, &secret),
    )
    .await;
    let body = a.reference_get(RefKind::UserProfile, "u1").await.unwrap();
    assert_eq!(name(&body), "Warm");
    assert_eq!(w.hits(PROFILE), 0);
    let left = a.cache_expiry("user:u1").unwrap() - smart_crm_core::metrics::now_ms();
    // + 2: getCacheExpiry rounds up (never early), by up to 2 ms.
    assert!((48_000..=50_002).contains(&left), "{left}");

    // The signature of another value: refused, deleted, fetched.
    let forged = r#"{"name":"Mallory"}"#;
    let s = entry_signature("acme", "user:u2", epoch, v, &secret);
    write("user:u2", forged, &s).await;
    w.set("/api/users/u2/profile", 200, json!({ "name": "Bob" }));
    let body = a.reference_get(RefKind::UserProfile, "u2").await.unwrap();
    assert_eq!(name(&body), "Bob");
    assert_eq!(w.hits("/api/users/u2/profile"), 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while shared_value(&r, "acme", "user:u2").await.as_deref() == Some(forged) {
        assert!(
            std::time::Instant::now() < deadline,
            "the forged entry stays"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Unsigned entries are refused too while a secret is set.
    let entry = "crm:{acme}:ref:user:u3";
    redis_cmd(&r, &["HSET", entry, "v", v, "e", epoch]).await;
    w.set("/api/users/u3/profile", 200, json!({ "name": "Cy" }));
    let body = a.reference_get(RefKind::UserProfile, "u3").await.unwrap();
    assert_eq!(name(&body), "Cy");
    a.shutdown().await;
}
