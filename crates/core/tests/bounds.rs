//! The bounded queues (issue: "queues without bounds"): each bound, set small
//! here, is hit against a real `redis-server`, and its defined overflow
//! behaviour runs and is counted; and the consumer's tasks end with its last
//! handle.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{consumer_with, seed, wait_until, Collect, Hold, Redis, Wrapper};
use serde_json::{json, Value};

/// Publishes `n` cost changes of `op` (costs 1..=n, unversioned) pipelined.
async fn publish_costs(redis_url: &str, tenant: &str, op: &str, n: usize) {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let channel = format!("crm:{tenant}:credit-configs");
    let mut pipe = redis::pipe();
    for i in 1..=n {
        let msg = json!({
            "eventType": "credit-config-changed",
            "tenantId": tenant,
            "data": { "operationCode": op, "newValue": i },
        });
        pipe.cmd("PUBLISH")
            .arg(&channel)
            .arg(msg.to_string())
            .ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
}

async fn publish(redis_url: &str, channel: &str, msg: Value) {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(msg.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
}

fn opts(url: &str, redis: &Redis, tenant: &str) -> Value {
    json!({ "tenantId": tenant, "wrapperUrl": url, "redisUrl": redis.url(), "heartbeatMs": 500,
            "initTimeoutMs": 5000, "resyncJitterMs": 0, "refreshIntervalMs": 0 })
}

fn notices(batches: &[Value]) -> Vec<Value> {
    batches
        .iter()
        .flat_map(|b| b["notices"].as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_notices_for_a_busy_js_thread_collapse_into_one_resync() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let c = consumer_with(opts(&url, &redis, "b1"), |cfg| {
        cfg.limits.pending_changes = 10
    });
    let sink = Arc::new(Hold::default());
    c.start(sink.clone()).unwrap();
    c.wait_ready().await.unwrap();
    c.set_listen_changes(true);
    sink.release();
    // The JS thread "is busy": the next batch is held, the rest accumulates.
    publish_costs(&redis.url(), "b1", "op", 500).await;
    wait_until(|| c.with_store(|s| s.credit_cost("op")) == Some(500.0)).await;
    assert_eq!(c.metrics().queue_overflows, 1, "one overflow, counted");
    assert_eq!(c.metrics().events_applied, 500, "every event applied");
    wait_until(|| {
        sink.release();
        let taken = sink.taken.lock().unwrap();
        taken.iter().any(|b| b["credits"] == json!([["op", 500.0]]))
    })
    .await;
    let all = notices(&sink.taken.lock().unwrap());
    let changes = all.iter().filter(|n| n["kind"] == "change").count();
    assert!(
        changes <= 10 + 1,
        "at most the bound stayed pending: {changes}"
    );
    assert!(
        all.iter()
            .any(|n| n["kind"] == "resync" && n["reason"] == "change-overflow"),
        "listeners are told to re-read everything"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_during_a_reload_are_bounded_and_one_more_reload_follows() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let c = consumer_with(opts(&url, &redis, "b2"), |cfg| {
        cfg.limits.recorded_events = 5
    });
    c.start(Arc::new(Collect::default())).unwrap();
    c.wait_ready().await.unwrap();
    let roles_before = w.hits("/api/roles");
    w.delays
        .lock()
        .unwrap()
        .insert("/api/roles".into(), Duration::from_millis(800));
    publish(
        &redis.url(),
        "crm:b2:control",
        json!({ "eventType": "resync-required", "tenantId": "b2", "data": {} }),
    )
    .await;
    wait_until(|| w.hits("/api/roles") == roles_before + 1).await;
    // 50 events while the snapshot downloads: more than the bound of 5.
    publish_costs(&redis.url(), "b2", "op", 50).await;
    wait_until(|| c.metrics().queue_overflows == 1).await;
    w.delays.lock().unwrap().clear();
    // The reload completes (it is not restarted), then exactly one more runs.
    wait_until(|| c.metrics().resyncs == 2).await;
    assert_eq!(w.hits("/api/roles"), roles_before + 2);
    // The second snapshot is the Wrapper's truth.
    assert_eq!(c.with_store(|s| s.credit_cost("op")), Some(2.5));
    assert!(c.is_connected());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_queue_overflow_is_a_lost_link_then_a_resync() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let c = consumer_with(opts(&url, &redis, "b3"), |cfg| cfg.limits.push_messages = 1);
    c.start(Arc::new(Collect::default())).unwrap();
    c.wait_ready().await.unwrap();
    publish_costs(&redis.url(), "b3", "op", 20_000).await;
    wait_until(|| c.metrics().queue_overflows >= 1).await;
    wait_until(|| c.metrics().reconnects >= 1 && c.is_connected()).await;
    assert!(c.metrics().resyncs >= 1, "the reconnect resynced");
    c.shutdown().await;
}

/// Subscription connections of a redis-server (clients with subscriptions).
async fn subscribers(redis: &Redis) -> usize {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut conn)
        .await
        .unwrap();
    list.lines()
        .filter(|l| l.split(' ').any(|f| f.starts_with("sub=") && f != "sub=0"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_without_shutdown_stops_every_task() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let c = consumer_with(opts(&url, &redis, "b4"), |_| {});
    c.start(Arc::new(Collect::default())).unwrap();
    c.wait_ready().await.unwrap();
    assert_eq!(subscribers(&redis).await, 1);
    drop(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while subscribers(&redis).await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection outlived its consumer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing reconnects later either.
    let hits = w.hits("/api/roles");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(subscribers(&redis).await, 0);
    assert_eq!(w.hits("/api/roles"), hits);
}
