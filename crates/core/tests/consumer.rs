//! End-to-end tests of the core without Node: a real `redis-server` started on
//! a free port (killed by PID when the test ends) and a minimal Wrapper served
//! over real HTTP from a tokio listener.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smart_crm_core::config::Secret;
use smart_crm_core::ids::RefKind;
use smart_crm_core::outbox::{Batch, Sink};
use smart_crm_core::publisher::{Publisher, PublisherOptions};
use smart_crm_core::{Config, Consumer, CoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A private redis-server, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny Wrapper: fixed JSON per path, a request counter per path, and an
/// optional delay for profile requests.
#[derive(Clone, Default)]
struct Wrapper {
    routes: Arc<Mutex<HashMap<String, (u16, String)>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    profile_delay: Arc<Mutex<Duration>>,
}

impl Wrapper {
    fn set(&self, path: &str, status: u16, body: Value) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.into(), (status, body.to_string()));
    }
    fn hits(&self, path: &str) -> usize {
        *self.hits.lock().unwrap().get(path).unwrap_or(&0)
    }
    async fn serve(self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let me = self.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let path = req.split_whitespace().nth(1).unwrap_or("/").to_string();
                    *me.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    // The answer is fixed when the request arrives, as with a real server.
                    let (status, body) = me
                        .routes
                        .lock()
                        .unwrap()
                        .get(&path)
                        .cloned()
                        .unwrap_or((404, "{}".into()));
                    if path.ends_with("/profile") {
                        let d = *me.profile_delay.lock().unwrap();
                        tokio::time::sleep(d).await;
                    }
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}")
    }
}

/// Collects batches; the JS side would apply them to its replica.
#[derive(Default)]
struct Collect(Mutex<Vec<Value>>);

impl Sink for Collect {
    fn deliver(&self, batch: Batch) {
        self.0
            .lock()
            .unwrap()
            .push(serde_json::from_str(&batch.json).unwrap());
    }
}

fn seed(w: &Wrapper) {
    w.set(
        "/api/credits/configs",
        200,
        json!([{ "operationCode": "op", "creditCost": 2.5 }]),
    );
    w.set(
        "/api/roles",
        200,
        json!([{ "roleId": "r", "permissions": ["a.*"] }]),
    );
    w.set("/api/users/access", 200, json!({ "items": [{ "userId": "u1", "status": "active", "roles": ["r"] }], "nextCursor": "p2" }));
    w.set("/api/users/access?cursor=p2", 200, json!({ "items": [{ "userId": "u2", "status": "suspended", "roles": [] }], "nextCursor": null }));
    w.set(
        "/api/configs/active",
        200,
        json!([{ "configId": "c", "config": { "x": 1 } }]),
    );
    w.set("/api/users/u1/profile", 200, json!({ "name": "Ann" }));
}

fn consumer(wrapper_url: &str, redis_url: &str, tenant: &str) -> Consumer {
    let opts = json!({ "tenantId": tenant, "wrapperUrl": wrapper_url, "redisUrl": redis_url, "heartbeatMs": 500, "initTimeoutMs": 5000 });
    Consumer::new(Config::from_json(&opts, &HashMap::new()).unwrap()).unwrap()
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

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
            s.user_access("u2").unwrap().status,
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
        redis_url: Secret::new(redis.url()),
        tenant_id: "t1".into(),
        channel_prefix: "crm".into(),
        signing_secret: None,
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
