//! CPU per event of the event path (issue 13, row 2b): a real consumer on a
//! runtime of its own, fed 100,000 `credit-config-changed` events in the
//! bench's format (`bench/lib/data.js` `creditEvent`) by a publisher on
//! another thread, pipelined. Measures the on-CPU time of the consumer's
//! runtime threads (`/proc/self/task/*/schedstat`, nanoseconds) from the
//! first publish until every event is applied, and prints it per event.
//!
//! `#[ignore]`d: it is a measurement, not a check. Run it in release:
//! `cargo test --release -p smart-crm-core --test storm_cpu -- --ignored --nocapture`
//! (`STORM_EVENTS=N` changes the count). The sink drops each batch at once,
//! as a JS thread that keeps up would: the JS side's CPU is not counted.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{consumer_with, seed, Redis, Wrapper};
use serde_json::json;
use smart_crm_core::outbox::{Batch, Sink};

/// Thread-name prefix of the consumer's runtime (its workers).
const WORKER: &str = "storm-worker";

/// Takes every batch and drops it.
struct Drop0;

impl Sink for Drop0 {
    fn deliver(&self, batch: Batch) {
        drop(batch);
    }
}

/// Summed on-CPU nanoseconds of this process's threads whose name starts
/// with `prefix`.
fn cpu_ns(prefix: &str) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let sched = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        total += sched
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// The bench's event (`creditEvent(tenant, op, seq)`), with a fixed timestamp.
fn event(tenant: &str, ops: usize, seq: usize) -> String {
    json!({
        "eventId": format!("bench-{seq}"),
        "eventType": "credit-config-changed",
        "tenantId": tenant,
        "version": seq + 1,
        "timestamp": "2026-01-01T00:00:00.000Z",
        "data": {
            "operationCode": format!("op.{:05}", (seq - 1) % ops),
            "changedFields": ["credit_cost"],
            "newValue": seq,
            "oldValue": seq - 1,
        },
    })
    .to_string()
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn storm_cpu_per_event() {
    let n: usize = std::env::var("STORM_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let ops = 1_000;
    let tenant = "storm";
    let redis = Redis::start();
    let workers: usize = std::env::var("STORM_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name(WORKER)
        .enable_all()
        .build()
        .unwrap();
    let w = Wrapper::default();
    seed(&w);
    let url = rt.block_on(w.clone().serve());
    let opts = json!({ "tenantId": tenant, "wrapperUrl": url, "redisUrl": redis.url(),
                       "heartbeatMs": 5000, "initTimeoutMs": 5000 });
    let _guard = rt.enter();
    let c = consumer_with(opts, |_| {});
    c.start(Arc::new(Drop0)).unwrap();
    rt.block_on(c.wait_ready()).unwrap();

    let messages: Vec<String> = (1..=n).map(|i| event(tenant, ops, i)).collect();
    let redis_url = redis.url();
    let channel = format!("crm:{tenant}:credit-configs");
    let before = c.metrics().events_applied;
    let cpu0 = cpu_ns(WORKER);
    let t0 = Instant::now();
    let publisher = std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let client = redis::Client::open(redis_url).unwrap();
            let mut conn = client.get_connection().unwrap();
            for chunk in messages.chunks(10_000) {
                let mut pipe = redis::pipe();
                for m in chunk {
                    pipe.cmd("PUBLISH").arg(&channel).arg(m).ignore();
                }
                let () = pipe.query(&mut conn).unwrap();
            }
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // Polls the consumer's own counter (a condition, not a timed wait).
    while c.metrics().events_applied - before < n as u64 {
        assert!(Instant::now() < deadline, "not every event was applied");
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = t0.elapsed();
    let cpu = cpu_ns(WORKER) - cpu0;
    publisher.join().unwrap();
    let m = c.metrics();
    assert_eq!(m.events_applied - before, n as u64);
    println!(
        "storm_cpu: {n} events, worker CPU {:.1} ms ({:.2} µs/event), wall {:.0} ms",
        cpu as f64 / 1e6,
        cpu as f64 / 1e3 / n as f64,
        wall.as_secs_f64() * 1e3
    );
    rt.block_on(c.shutdown());
}
