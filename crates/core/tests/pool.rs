//! The tenant pool without Node: many tenants over one Redis connection
//! (counted with `CLIENT LIST`), events routed by channel, release
//! unsubscribing, and the native memory one small tenant costs (counted by
//! this binary's allocator).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use common::{seed, wait_until, Redis, Wrapper};
use serde_json::json;
use smart_crm_core::config::PoolConfig;
use smart_crm_core::outbox::Batch;
use smart_crm_core::pool::{Pool, PoolSink};

/// Counts the bytes allocated and not yet freed, process-wide.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
// SAFETY: every call is forwarded to `System` unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}
#[global_allocator]
static ALLOC: Counting = Counting;

/// Takes every batch at once (as a JS thread that keeps up), counting them per slot.
#[derive(Default)]
struct Taken(Mutex<HashMap<u64, usize>>);

impl PoolSink for Taken {
    fn deliver(&self, slot: u64, batch: Batch) {
        drop(batch);
        *self.0.lock().unwrap().entry(slot).or_default() += 1;
    }
}

fn pool(wrapper: &str, redis: &str) -> Pool {
    let opts = json!({ "wrapperUrl": wrapper, "redisUrl": redis, "heartbeatMs": 500, "resyncJitterMs": 0 });
    Pool::new(PoolConfig::from_json(&opts, &HashMap::new()).unwrap()).unwrap()
}

async fn command(redis: &str, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(redis).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

/// Subscriber connections (`flags=P`) in `CLIENT LIST`.
async fn subscribers(redis: &str) -> usize {
    match command(redis, &["CLIENT", "LIST"]).await {
        redis::Value::VerbatimString { text, .. } => text,
        redis::Value::BulkString(b) => String::from_utf8(b).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
    .lines()
    .filter(|l| l.contains(" flags=P "))
    .count()
}

async fn numsub(redis: &str, channel: &str) -> i64 {
    match command(redis, &["PUBSUB", "NUMSUB", channel]).await {
        redis::Value::Array(v) => redis::from_redis_value(v[1].clone()).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tenants_share_one_connection_and_a_small_tenant_costs_little_native_memory() {
    let redis = Redis::start();
    let w = Wrapper::default();
    seed(&w);
    let url = w.clone().serve().await;
    let pool = pool(&url, &redis.url());
    let sink = Arc::new(Taken::default());
    pool.start(sink.clone()).unwrap();

    // Warm up the shared parts (link, HTTP pool, runtime) with one tenant.
    let (first, _) = pool.tenant("warm").unwrap();
    first.wait_ready().await.unwrap();

    const N: usize = 300;
    let before = LIVE.load(Relaxed);
    let mut tenants = Vec::new();
    for i in 0..N {
        tenants.push(pool.tenant(&format!("t{i}")).unwrap());
    }
    for (c, _) in &tenants {
        c.wait_ready().await.unwrap();
    }
    // Let the loads' transient buffers go.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let per_tenant = (LIVE.load(Relaxed) - before) / N as isize;
    println!("native memory per loaded tenant (2 credits, 1 role, 2 users): {per_tenant} B");
    assert!(
        per_tenant < 24 * 1024,
        "a small tenant costs {per_tenant} B of native memory"
    );

    assert_eq!(pool.status().tenants, N + 1);
    assert_eq!(
        subscribers(&redis.url()).await,
        1,
        "one connection for every tenant"
    );
    assert_eq!(numsub(&redis.url(), "crm:t7:credit-configs").await, 1);

    // An event reaches its tenant only.
    let ev = json!({ "eventId": "e1", "eventType": "credit-config-changed", "tenantId": "t7",
        "timestamp": chrono_now(), "data": { "operationCode": "op", "newValue": 9, "isActive": true } });
    command(
        &redis.url(),
        &["PUBLISH", "crm:t7:credit-configs", &ev.to_string()],
    )
    .await;
    let (t7, t8) = (&tenants[7].0, &tenants[8].0);
    wait_until(|| t7.with_store(|s| s.credit_cost("op")) == Some(9.0)).await;
    assert_eq!(t8.with_store(|s| s.credit_cost("op")), Some(2.5));
    assert_eq!(t8.metrics().events_received, 0);

    // Release: unsubscribed, SHUTDOWN afterwards, nothing of it left in the pool.
    t7.shutdown().await;
    assert_eq!(pool.status().tenants, N);
    let r = redis.url();
    for _ in 0..200 {
        if numsub(&r, "crm:t7:credit-configs").await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(numsub(&r, "crm:t7:credit-configs").await, 0);
    assert_eq!(numsub(&r, "crm:t8:credit-configs").await, 1);
    assert!(t7.user_credits("u1").await.is_err());
    pool.shutdown().await;
}

fn chrono_now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339()
}
