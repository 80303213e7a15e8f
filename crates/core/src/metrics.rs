//! Counters and health flags shared by every task of one consumer.
//!
//! All fields are atomics updated with relaxed ordering: they are statistics,
//! read as a consistent-enough snapshot by `getMetrics()` and `health()`. The
//! critical-read counters live on the JS side (those reads never enter Rust)
//! and are merged there.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::breaker::Circuit;
use crate::protocol::Rejection;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Reference reads answered from the cache (fresh or remembered 404).
    pub reference_hits: AtomicU64,
    /// Reference reads that had to ask the Wrapper (or join a fetch).
    pub reference_misses: AtomicU64,
    /// HTTP requests sent to the Wrapper, retries included.
    pub wrapper_requests: AtomicU64,
    /// Wrapper requests that failed (any code).
    pub wrapper_errors: AtomicU64,
    /// Reference misses that joined a fetch already in flight.
    pub coalesced_requests: AtomicU64,
    /// Expired entries served because the Wrapper was unavailable.
    pub stale_served: AtomicU64,
    /// With `sharedReference`: local misses answered by the shared tier in
    /// Redis (one per fetch, however many callers joined it).
    pub shared_hits: AtomicU64,
    /// With `sharedReference`: local misses the shared tier did not hold, so
    /// this instance asked the Wrapper (one per fetch). Misses while Redis is
    /// unavailable count in neither.
    pub shared_misses: AtomicU64,
    /// Messages received on the subscription.
    pub events_received: AtomicU64,
    /// Events applied.
    pub events_applied: AtomicU64,
    /// Rejected events by reason, indexed by [`Rejection::index`].
    pub events_rejected: [AtomicU64; 9],
    /// Subscription connections re-established after a loss.
    pub reconnects: AtomicU64,
    /// Full reloads after the first one.
    pub resyncs: AtomicU64,
    /// Subscribed and resynced.
    pub connected: AtomicBool,
    /// The first full load has completed.
    pub ready: AtomicBool,
    /// The Redis link is down (or not yet up).
    pub redis_down: AtomicBool,
    /// The last Wrapper call failed with `WRAPPER_UNAVAILABLE`.
    pub wrapper_failing: AtomicBool,
    /// The latest full reload failed; retried until one succeeds (the data
    /// may be stale meanwhile, so health says so).
    pub resync_failing: AtomicBool,
    /// Times a bounded queue overflowed (push messages, recorded events,
    /// change notices) and its defined overflow behaviour ran.
    pub queue_overflows: AtomicU64,
    /// Epoch ms of the last event received, 0 = never.
    pub last_event_at: AtomicI64,
    /// Epoch ms of the last completed full load, 0 = never.
    pub last_sync_at: AtomicI64,
    /// Reconnects caught up from the stream without a full reload.
    pub resumes: AtomicU64,
    /// Full loads whose data came from the Wrapper.
    pub snapshot_loads_wrapper: AtomicU64,
    /// Full loads whose data came from the shared snapshot in Redis.
    pub snapshot_loads_redis: AtomicU64,
    /// Shared snapshots that failed a check (and were ignored).
    pub snapshot_rejected: AtomicU64,
    /// Where the last full load's data came from: 0 none yet, 1 the Wrapper,
    /// 2 the shared snapshot.
    pub source: std::sync::atomic::AtomicU8,
}

/// A copy of the Rust-side figures, serialised for JS (camelCase).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsSnapshot {
    /// See [`Metrics`].
    pub reference_hits: u64,
    /// See [`Metrics`].
    pub reference_misses: u64,
    /// See [`Metrics`].
    pub wrapper_requests: u64,
    /// See [`Metrics`].
    pub wrapper_errors: u64,
    /// See [`Metrics`].
    pub coalesced_requests: u64,
    /// See [`Metrics`].
    pub stale_served: u64,
    /// See [`Metrics`].
    pub shared_hits: u64,
    /// See [`Metrics`].
    pub shared_misses: u64,
    /// See [`Metrics`].
    pub events_received: u64,
    /// See [`Metrics`].
    pub events_applied: u64,
    /// Rejections by reason name.
    pub events_rejected: std::collections::BTreeMap<&'static str, u64>,
    /// See [`Metrics`].
    pub reconnects: u64,
    /// See [`Metrics`].
    pub resyncs: u64,
    /// See [`Metrics`].
    pub connected: bool,
    /// See [`Metrics`].
    pub queue_overflows: u64,
    /// Entries in the reference cache.
    pub reference_cache_size: u64,
    /// Bytes held by the reference cache (weighted size).
    pub reference_cache_bytes: u64,
    /// Live critical entries: credits, roles, users, configs.
    pub critical_cache_size: u64,
    /// See [`Metrics`].
    pub resumes: u64,
    /// See [`Metrics`].
    pub snapshot_loads_wrapper: u64,
    /// See [`Metrics`].
    pub snapshot_loads_redis: u64,
    /// See [`Metrics`].
    pub snapshot_rejected: u64,
}

/// `health()` as the core sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// First load done.
    pub ready: bool,
    /// Subscribed and resynced.
    pub connected: bool,
    /// Redis down, the latest reload failed, or Wrapper calls failing.
    pub degraded: bool,
    /// Epoch ms or `None`.
    pub last_event_at: Option<i64>,
    /// Epoch ms or `None`.
    pub last_sync_at: Option<i64>,
    /// `redis-disconnected`, `resync-failed`, `wrapper-unavailable`, or `None`.
    pub reason: Option<&'static str>,
    /// The Wrapper circuit breaker: `closed`, `open` or `half-open`.
    pub circuit: &'static str,
    /// Where the last full load came from: `wrapper`, `snapshot`, or `None`.
    pub source: Option<&'static str>,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Counts a rejected event.
    pub fn reject(&self, r: Rejection) {
        self.events_rejected[r.index()].fetch_add(1, Relaxed);
    }

    /// Rejections of one reason.
    pub fn rejected(&self, r: Rejection) -> u64 {
        self.events_rejected[r.index()].load(Relaxed)
    }

    /// Snapshot of the counters; sizes are filled by the caller.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let l = |c: &AtomicU64| c.load(Relaxed);
        MetricsSnapshot {
            reference_hits: l(&self.reference_hits),
            reference_misses: l(&self.reference_misses),
            wrapper_requests: l(&self.wrapper_requests),
            wrapper_errors: l(&self.wrapper_errors),
            coalesced_requests: l(&self.coalesced_requests),
            stale_served: l(&self.stale_served),
            shared_hits: l(&self.shared_hits),
            shared_misses: l(&self.shared_misses),
            events_received: l(&self.events_received),
            events_applied: l(&self.events_applied),
            events_rejected: Rejection::ALL
                .iter()
                .map(|r| (r.name(), self.rejected(*r)))
                .collect(),
            reconnects: l(&self.reconnects),
            resyncs: l(&self.resyncs),
            connected: self.connected.load(Relaxed),
            queue_overflows: l(&self.queue_overflows),
            reference_cache_size: 0,
            reference_cache_bytes: 0,
            critical_cache_size: 0,
            resumes: l(&self.resumes),
            snapshot_loads_wrapper: l(&self.snapshot_loads_wrapper),
            snapshot_loads_redis: l(&self.snapshot_loads_redis),
            snapshot_rejected: l(&self.snapshot_rejected),
        }
    }

    /// The health view, with the breaker's state.
    pub fn health(&self, circuit: Circuit) -> Health {
        let at = |a: &AtomicI64| Some(a.load(Relaxed)).filter(|t| *t > 0);
        let reason = if self.redis_down.load(Relaxed) {
            Some("redis-disconnected")
        } else if self.resync_failing.load(Relaxed) {
            Some("resync-failed")
        } else if self.wrapper_failing.load(Relaxed) {
            Some("wrapper-unavailable")
        } else {
            None
        };
        Health {
            ready: self.ready.load(Relaxed),
            connected: self.connected.load(Relaxed),
            degraded: reason.is_some(),
            last_event_at: at(&self.last_event_at),
            last_sync_at: at(&self.last_sync_at),
            reason,
            circuit: circuit.name(),
            source: match self.source.load(Relaxed) {
                1 => Some("wrapper"),
                2 => Some("snapshot"),
                _ => None,
            },
        }
    }
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
