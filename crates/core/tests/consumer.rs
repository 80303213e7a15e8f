//! End-to-end tests of the core without Node: a real `redis-server` started on
//! a free port (killed by PID when the test ends) and a minimal Wrapper served
//! over real HTTP from a tokio listener (see `common/mod.rs`).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use common::{consumer, seed, wait_until, Collect, Redis, Wrapper};
use serde_json::json;
use smart_crm_core::ids::RefKind;
use smart_crm_core::publisher::{Publisher, PublisherOptions};
use smart_crm_core::redis_target::RedisTarget;
use smart_crm_core::{Config, Consumer, CoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_snapshot_applies_events_and_ships_batches() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let c = consumer(&url, &redis.url(), "t1");
    let sink = Arc::new(Collect::default());
    c.start(sink.clone()).unwrap();
    c.wait_ready().await.unwrap();
    c.with_store(|s| {
        assert_eq!(s.credit_cost("op"), Some(2.5));
        assert_eq!(
            s.user_access("u2").unwrap().status(),
            "suspended",
            "second page loaded"
        );
        assert_eq!(s.config_json("c"), Some(r#"{"x":1}"#));
    });
    wait_until(|| {
        sink.0.lock().unwrap().iter().any(|b| {
            b["notices"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["kind"] == "ready")
        })
    })
    .await;

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
    let receivers = publisher
        .publish(
            "credit-configs",
            "credit-config-changed",
            json!({ "operationCode": "op", "newValue": 4 }),
            Some(3),
        )
        .await
        .unwrap();
    assert_eq!(receivers, 1, "exactly one subscription");
    wait_until(|| c.with_store(|s| s.credit_cost("op")) == Some(4.0)).await;
    wait_until(|| {
        sink.0
            .lock()
            .unwrap()
            .iter()
            .any(|b| b["credits"] == json!([["op", 4.0]]))
    })
    .await;
    // the same version again is stale
    publisher
        .publish(
            "credit-configs",
            "credit-config-changed",
            json!({ "operationCode": "op", "newValue": 5 }),
            Some(3),
        )
        .await
        .unwrap();
    wait_until(|| c.metrics().events_rejected["stale"] == 1).await;
    assert_eq!(c.with_store(|s| s.credit_cost("op")), Some(4.0));
    c.shutdown().await;
    assert!(c.is_shut_down());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_share_one_request_and_invalidation_wins() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    *w.profile_delay.lock().unwrap() = Duration::from_millis(200);
    let url = w.clone().serve().await;
    let c = consumer(&url, &redis.url(), "t2");

    let calls: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.reference_get(RefKind::UserProfile, "u1").await })
        })
        .collect();
    for call in calls {
        assert_eq!(&*call.await.unwrap().unwrap(), r#"{"name":"Ann"}"#);
    }
    assert_eq!(w.hits("/api/users/u1/profile"), 1);
    assert_eq!(c.metrics().coalesced_requests, 49);

    // An invalidation during a fetch: the waiting caller gets the old value,
    // but it is not cached.
    c.invalidate("user:u1");
    let pending = {
        let c = c.clone();
        tokio::spawn(async move { c.reference_get(RefKind::UserProfile, "u1").await })
    };
    wait_until(|| w.hits("/api/users/u1/profile") == 2).await;
    w.set("/api/users/u1/profile", 200, json!({ "name": "Bea" }));
    c.invalidate("user:u1");
    assert_eq!(&*pending.await.unwrap().unwrap(), r#"{"name":"Ann"}"#);
    assert_eq!(
        c.cache_expiry("user:u1"),
        None,
        "the outdated value was not kept"
    );
    assert_eq!(
        &*c.reference_get(RefKind::UserProfile, "u1").await.unwrap(),
        r#"{"name":"Bea"}"#
    );

    // Ids stay in their path segment; '..' is refused without a request.
    let err = c
        .reference_get(RefKind::UserProfile, "..")
        .await
        .unwrap_err();
    assert!(matches!(err, CoreError::InvalidArgument { .. }));
    let err = c
        .reference_get(RefKind::UserProfile, "../admin")
        .await
        .unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND");
    assert_eq!(w.hits("/api/users/..%2Fadmin/profile"), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_reports_the_cause_and_keeps_trying() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    w.set("/api/roles", 500, json!({}));
    let url = w.clone().serve().await;
    let opts = json!({ "tenantId": "t3", "wrapperUrl": url, "redisUrl": redis.url(), "initTimeoutMs": 1500 });
    let c = Consumer::new(Config::from_json(&opts, &HashMap::new()).unwrap()).unwrap();
    let sink = Arc::new(Collect::default());
    c.start(sink).unwrap();
    assert_eq!(
        c.wait_ready().await.unwrap_err().code(),
        "WRAPPER_UNAVAILABLE"
    );
    w.set("/api/roles", 200, json!([]));
    let calls = Arc::new(AtomicUsize::new(0));
    wait_until(|| {
        calls.fetch_add(1, SeqCst);
        c.health().ready
    })
    .await;
    c.shutdown().await;
}
