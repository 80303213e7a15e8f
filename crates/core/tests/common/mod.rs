//! The harness of the core's integration tests: a real `redis-server` on a
//! free port (killed by PID when dropped), a minimal Wrapper served over real
//! HTTP, sinks standing in for the JS thread, and a poll-until helper.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use smart_crm_core::outbox::{Batch, Sink};
use smart_crm_core::{Config, Consumer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A private redis-server, killed when dropped.
pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    pub fn start() -> Redis {
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
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tiny Wrapper: fixed JSON per path, a request counter per path, and an
/// optional delay for profile requests.
#[derive(Clone, Default)]
pub struct Wrapper {
    /// path (with query) → status and body.
    routes: Arc<Mutex<HashMap<String, (u16, String)>>>,
    /// Requests per path.
    hits: Arc<Mutex<HashMap<String, usize>>>,
    /// How long profile requests wait before answering.
    pub profile_delay: Arc<Mutex<Duration>>,
    /// How long requests of a path (without query) wait before answering.
    pub delays: Arc<Mutex<HashMap<String, Duration>>>,
    /// Profile requests answer only while they can take a read lock of
    /// this: a test holds them with `hold.write().await`.
    pub hold: Arc<tokio::sync::RwLock<()>>,
}

impl Wrapper {
    pub fn set(&self, path: &str, status: u16, body: Value) {
        self.routes
            .lock()
            .unwrap()
            .insert(path.into(), (status, body.to_string()));
    }
    pub fn hits(&self, path: &str) -> usize {
        *self.hits.lock().unwrap().get(path).unwrap_or(&0)
    }
    pub async fn serve(self) -> String {
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
                        drop(me.hold.read().await);
                    }
                    let bare = path.split('?').next().unwrap_or("").to_string();
                    let d = me.delays.lock().unwrap().get(&bare).copied();
                    if let Some(d) = d {
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
pub struct Collect(pub Mutex<Vec<Value>>);

impl Sink for Collect {
    fn deliver(&self, batch: Batch) {
        self.0
            .lock()
            .unwrap()
            .push(serde_json::from_str(&batch.json).unwrap());
    }
}

pub fn seed(w: &Wrapper) {
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

pub fn consumer(wrapper_url: &str, redis_url: &str, tenant: &str) -> Consumer {
    let opts = json!({ "tenantId": tenant, "wrapperUrl": wrapper_url, "redisUrl": redis_url, "heartbeatMs": 500, "initTimeoutMs": 5000 });
    Consumer::new(Config::from_json(&opts, &HashMap::new()).unwrap()).unwrap()
}

pub async fn wait_until(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A sink that keeps every batch without taking it, as a JS thread that is
/// busy would: no further batch is sent until [`Hold::release`].
#[derive(Default)]
pub struct Hold {
    /// Batches delivered and not yet taken.
    pub held: Mutex<Vec<Batch>>,
    /// Batches taken so far, parsed.
    pub taken: Mutex<Vec<Value>>,
}

impl Sink for Hold {
    fn deliver(&self, batch: Batch) {
        self.held.lock().unwrap().push(batch);
    }
}

impl Hold {
    /// Takes every held batch (which lets the next one be sent).
    pub fn release(&self) {
        let held: Vec<Batch> = std::mem::take(&mut *self.held.lock().unwrap());
        let mut taken = self.taken.lock().unwrap();
        for b in held {
            taken.push(serde_json::from_str(&b.json).unwrap());
        }
    }
}

/// A consumer built from `opts` (JSON options) with `tweak` applied to its config.
pub fn consumer_with(opts: Value, tweak: impl FnOnce(&mut Config)) -> Consumer {
    let mut config = Config::from_json(&opts, &HashMap::new()).unwrap();
    tweak(&mut config);
    Consumer::new(config).unwrap()
}
