//! Event application: from one raw message to the store, the replica delta,
//! the reference cache and the counters; and the installation of a reloaded
//! store with the events recorded during its download.
//!
//! Called only from the subscription task (the store's one writer). Each
//! event takes the store's write lock once, for the few microseconds of the
//! write and of recording its replica change (lock order: store, then the
//! outbox's pending delta). An installation builds nothing under the lock:
//! the new store was built by the reload task; here the recorded events are
//! re-applied to it, the small tables are compared under a read lock, and
//! the swap itself is O(1).

use std::sync::atomic::Ordering::Relaxed;

use crate::delta::{Delta, Notice};
use crate::fleet::{Loaded, Source};
use crate::metrics::{now_ms, Metrics};
use crate::protocol::Change;
use crate::protocol::{parse_event_since, Context, Event, Rejection, Topic};
use crate::reload::{Reason, Recorded, Reloads};
use crate::stream::{parse_live, StreamId, LIVE_SEGMENT};
use crate::tenant::Tenant;

/// How far ahead of this host's clock a live entry id may be (Redis's clock
/// made it): beyond, the id is forged and the message rejected.
const FUTURE_ID_MS: i64 = 5 * 60_000;

/// Applies messages of one tenant's channels.
pub struct Applier<'a> {
    /// The tenant whose store is written.
    tenant: &'a Tenant,
    /// `{prefix}:{tenant}:`, stripped from channel names to find the topic.
    channel_head: String,
}

/// A replaced store with fewer entries than this is freed where it is
/// replaced; a larger one on a low-priority thread (background.rs).
const SMALL_STORE_ROWS: usize = 4096;

impl<'a> Applier<'a> {
    /// An applier for `tenant`'s channels.
    pub fn new(tenant: &'a Tenant) -> Self {
        Applier {
            tenant,
            channel_head: format!(
                "{}:{}:",
                tenant.config.channel_prefix, tenant.config.tenant_id
            ),
        }
    }

    /// Handles one raw message: parse, replay check, apply, record.
    /// A `resync-required` becomes a reload request. With the stream
    /// transport the message is a live stream entry (`stream.rs`).
    pub fn handle(&self, channel: &str, payload: &[u8], reloads: &mut Reloads) {
        let tenant = self.tenant;
        Metrics::inc(&tenant.metrics.events_received);
        let now = now_ms();
        tenant.metrics.last_event_at.store(now, Relaxed);
        let segment = channel.strip_prefix(self.channel_head.as_str());
        if tenant.stream.is_some() && segment == Some(LIVE_SEGMENT) {
            if let Some(at) = payload.strip_prefix(b"snapshot ") {
                if at.ends_with(crate::fleet::RELEASED.as_bytes()) {
                    // A lease holder is done: wake whoever waits for the lease.
                    if let Some(st) = &tenant.stream {
                        st.wake.notify_waiters();
                    }
                    return;
                }
                // Another instance refreshed the shared snapshot (fleet.rs).
                if let Some(id) = std::str::from_utf8(at).ok().and_then(StreamId::parse) {
                    reloads.follow(id);
                }
                return;
            }
            return match parse_live(payload) {
                Some((id, topic, msg)) => self.entry(id, Some(topic), msg, false, reloads),
                None => self.reject(Rejection::Malformed, LIVE_SEGMENT),
            };
        }
        let Some(topic) = segment.and_then(Topic::from_name) else {
            return self.reject(Rejection::WrongTopic, "unknown channel");
        };
        let ctx = Context {
            tenant_id: &tenant.config.tenant_id,
            topic,
            signing_secret: tenant.config.signing_secret.as_ref(),
            now_ms: now,
        };
        let not_before = tenant.replay.not_before_ms(tenant.config.max_clock_skew);
        match parse_event_since(payload, &ctx, not_before) {
            Ok(p) => self.apply(p.event, p.timestamp_ms, payload.len(), None, reloads),
            Err(r) => self.reject(r, topic.name()),
        }
    }

    /// Handles one stream entry, live or read back while catching up. An
    /// entry at or before the position was applied already and is skipped.
    /// Read back, its timestamp window is measured from the entry's own id
    /// (when Redis added it) instead of now, and the load fence does not
    /// apply: the position already orders and deduplicates entries.
    pub fn entry(
        &self,
        id: StreamId,
        topic: Option<Topic>,
        msg: &[u8],
        read_back: bool,
        reloads: &mut Reloads,
    ) {
        let tenant = self.tenant;
        let Some(stream) = &tenant.stream else { return };
        if stream.id().is_some_and(|at| id <= at) {
            return;
        }
        // Redis's clock made the id: one far ahead of ours is forged.
        if !read_back && id.ms as i64 > now_ms() + FUTURE_ID_MS {
            return self.reject(Rejection::Malformed, LIVE_SEGMENT);
        }
        if read_back {
            Metrics::inc(&tenant.metrics.events_received);
        }
        let Some(topic) = topic else {
            return self.reject(Rejection::WrongTopic, LIVE_SEGMENT);
        };
        let ctx = Context {
            tenant_id: &tenant.config.tenant_id,
            topic,
            signing_secret: tenant.config.signing_secret.as_ref(),
            now_ms: if read_back { id.ms as i64 } else { now_ms() },
        };
        let not_before = if read_back {
            None
        } else {
            tenant.replay.not_before_ms(tenant.config.max_clock_skew)
        };
        match parse_event_since(msg, &ctx, not_before) {
            Ok(p) => {
                if p.event.change == Change::ResyncRequired {
                    reloads.require(id);
                }
                self.apply(p.event, p.timestamp_ms, msg.len(), Some(id), reloads)
            }
            Err(r) => self.reject(r, topic.name()),
        }
    }

    fn reject(&self, r: Rejection, channel: &str) {
        let tenant = self.tenant;
        tenant.metrics.reject(r);
        let now = now_ms();
        let last = tenant.last_reject_log.load(Relaxed);
        if now - last >= 1000
            && tenant
                .last_reject_log
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            tenant.log(
                "warn",
                format!(
                    "rejected an event on {channel}: {} (further rejections this second are only counted)",
                    r.name()
                ),
            );
        }
    }

    /// Applies a validated event live. An event that is stale against the
    /// store is still recorded while a reload downloads: the snapshot being
    /// loaded may be older than it.
    fn apply(
        &self,
        ev: Event,
        timestamp_ms: Option<i64>,
        bytes: usize,
        id: Option<StreamId>,
        reloads: &mut Reloads,
    ) {
        let tenant = self.tenant;
        if let Some(event_id) = &ev.event_id {
            if tenant.replay.seen(event_id) {
                return self.reject(Rejection::Replay, "replay");
            }
        }
        // A stream entry moves the position once it is known not to be a
        // replay: a replayed message under a forged later id must not make
        // the consumer skip the genuine entries before that id.
        if let (Some(id), Some(stream)) = (id, &tenant.stream) {
            stream.advance(id);
        }
        let listen = tenant.outbox.listen_changes();
        let limit = tenant.config.limits.pending_changes;
        let mut overflowed = false;
        let applied = {
            let mut store = tenant.store_mut();
            tenant.outbox.with(|delta| {
                let out = store.apply(&ev, delta);
                if let (Ok(_), true) = (&out, listen) {
                    let keys = ev.change_keys();
                    if !keys.is_empty() {
                        overflowed = delta.push_change(ev.event_type, keys, limit);
                    }
                }
                out
            })
        };
        if overflowed {
            Metrics::inc(&tenant.metrics.queue_overflows);
            tenant.log(
                "warn",
                format!("more than {limit} 'change' notices waited for the JS thread: they were replaced by one 'resync' (change-overflow)"),
            );
        }
        let recorded = match &applied {
            Ok(a) if a.resync => {
                reloads.request(Reason::ResyncRequired);
                false
            }
            Ok(_) | Err(Rejection::Stale) if reloads.is_recording() => {
                if reloads.record(&ev, id, bytes) {
                    Metrics::inc(&tenant.metrics.queue_overflows);
                    tenant.log(
                        "warn",
                        "too many events arrived during one reload: it completes, and one more reload follows",
                    );
                }
                true
            }
            Ok(_) | Err(_) => false,
        };
        match applied {
            Err(r) => {
                if recorded {
                    if let Some(id) = &ev.event_id {
                        tenant.replay.remember_event(id, timestamp_ms);
                    }
                }
                self.reject(r, "stale")
            }
            Ok(a) => {
                if let Some(id) = &ev.event_id {
                    tenant.replay.remember_event(id, timestamp_ms);
                }
                Metrics::inc(&tenant.metrics.events_applied);
                for key in &a.invalidate {
                    tenant.reference.invalidate(key);
                }
            }
        }
    }

    /// Installs a reloaded store: applies the stream entries that follow its
    /// data (a shared snapshot's) and the recorded events it does not hold
    /// yet, tells the replica the differences, swaps it in, and reports the
    /// consumer synced. The old store is freed off this task. `started_ms`:
    /// when the reload began (epoch ms), passed on in the `resync` notice.
    pub fn install(&self, loaded: Loaded, recorded: &[Recorded], reason: Reason, started_ms: i64) {
        let tenant = self.tenant;
        let Loaded {
            store: mut new,
            source,
            position,
            catchup,
            unchanged,
        } = loaded;
        let mut scratch = Delta::default();
        let mut last = position.as_ref().map(|(_, id)| *id);
        for e in &catchup {
            let Some(topic) = e.topic else { continue };
            let ctx = Context {
                tenant_id: &tenant.config.tenant_id,
                topic,
                signing_secret: tenant.config.signing_secret.as_ref(),
                now_ms: e.id.ms as i64,
            };
            match parse_event_since(&e.msg, &ctx, None) {
                Ok(p) => {
                    if let Some(id) = &p.event.event_id {
                        tenant.replay.remember_event(id, p.timestamp_ms);
                    }
                    let _ = new.apply(&p.event, &mut scratch);
                    Metrics::inc(&tenant.metrics.events_applied);
                }
                Err(r) => tenant.metrics.reject(r),
            }
            last = last.max(Some(e.id));
        }
        for (id, ev) in recorded {
            if id.is_some_and(|id| last.is_some_and(|l| id <= l)) {
                continue; // the new data holds it already
            }
            // Stale here just means the snapshot was newer.
            let _ = new.apply(ev, &mut scratch);
            last = last.max(*id);
        }
        if let (Some(stream), Some((epoch, _))) = (&tenant.stream, position) {
            stream.set(epoch, last.unwrap_or_default());
        }
        tenant.metrics.source.store(
            match source {
                Source::Wrapper => 1,
                Source::Redis => 2,
            },
            Relaxed,
        );
        let mut delta = Delta::default();
        tenant.store().diff_changed(&new, unchanged, &mut delta);
        let first = !tenant.metrics.ready.load(Relaxed);
        let new_rows: usize = new.sizes().iter().sum();
        let old = {
            let mut store = tenant.store_mut();
            // Tables the Wrapper said are unchanged stay as they are (O(1)).
            new.adopt(&mut store, unchanged);
            let old = std::mem::replace(&mut *store, new);
            tenant.outbox.with(|d| d.merge(delta));
            old
        };
        // Dropping a million-row table takes a while: not on this task, and
        // at low priority; after a large load (its pages freed too) the
        // memory is given back (background.rs, memory.rs).
        let old_rows: usize = old.sizes().iter().sum();
        let large = new_rows.max(old_rows) >= crate::memory::LARGE_LOAD_ROWS;
        if large || old_rows >= SMALL_STORE_ROWS {
            crate::background::drop_low(old, large);
        } else {
            // A small store (a pool tenant's) frees faster than a thread starts.
            drop(old);
        }
        if reason.drops_reference() {
            tenant.reference.clear();
        }
        let m = &tenant.metrics;
        m.last_sync_at.store(now_ms(), Relaxed);
        m.resync_failing.store(false, Relaxed);
        m.ready.store(true, Relaxed);
        if !first {
            Metrics::inc(&m.resyncs);
        }
        let was_connected = m.connected.swap(true, Relaxed);
        let level = if matches!(reason, Reason::Refresh | Reason::Initial) {
            "debug"
        } else {
            "info"
        };
        tenant.outbox.with(|d| {
            d.notice(Notice::Log {
                level,
                msg: format!("critical data loaded ({})", reason.name()),
            });
            d.notice(Notice::Resync {
                reason: reason.name().to_owned(),
                started_at: Some(started_ms),
                duration_ms: Some((now_ms() - started_ms).max(0)),
                source: Some(match source {
                    Source::Wrapper => "wrapper",
                    Source::Redis => "snapshot",
                }),
            });
            if first {
                d.notice(Notice::Ready);
            }
            if !was_connected {
                d.notice(Notice::Connection { connected: true });
            }
        });
        tenant.outbox.flush();
        if first {
            tenant.settle_init(crate::tenant::InitState::Ready);
        }
    }
}
