//! The subscription task: connects to Redis, subscribes to the tenant's seven
//! channels, keeps the link alive with a heartbeat, applies events, and runs
//! every full reload of critical data (initial, after a reconnect, on
//! `resync-required`, and periodically).
//!
//! One task owns one connection at a time, so a reconnect can never leave two
//! live subscriptions: the old connection's driver is aborted when its stream
//! is dropped, before the next connection is opened.
//!
//! A reload never pauses event application. Events keep being applied while the
//! snapshot is fetched, and are recorded; when the snapshot arrives it replaces
//! the store and the recorded events are applied again on top of it (quietly:
//! no metrics, no replay check), so an event published during the fetch is
//! never overwritten by an older snapshot. Only then does the consumer report
//! itself connected.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::consumer::{InitState, Shared};
use crate::delta::{Delta, Notice};
use crate::error::{CoreError, Result};
use crate::metrics::{now_ms, Metrics};
use crate::model::Snapshot;
use crate::protocol::{parse_event, Context, Event, Rejection, Topic};

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that stayed healthy this long resets the reconnect backoff.
const HEALTHY_RESET: Duration = Duration::from_secs(60);
/// Most messages handled before the outbox is flushed.
const DRAIN_BATCH: usize = 4096;
/// Most events recorded during one reload; beyond it the reload restarts.
const MAX_RECORDED: usize = 1_000_000;

/// Why a session ended.
enum End {
    /// The link was lost (EOF, error or silence).
    Lost,
    /// Shutdown was requested.
    Shutdown,
}

type ReloadFuture = Pin<Box<dyn std::future::Future<Output = Result<Snapshot>> + Send>>;

/// The task body: connect, run a session, back off, repeat until shutdown.
pub(crate) async fn run(shared: Arc<Shared>) {
    let cancel = shared.shutdown.clone();
    let client = match redis::Client::open(shared.config.redis_url.expose()) {
        Ok(c) => c,
        Err(_) => {
            shared.init_failed(CoreError::RedisUnavailable("invalid redis URL".into()));
            return;
        }
    };
    let mut backoff = Backoff::reconnect();
    let mut ever_connected = false;
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect(&client, &shared)) => r,
        };
        let pubsub = match attempt {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                fail_connect(
                    &shared,
                    &format!("{} ({})", e.kind_str(), shared.config.redis_url_redacted),
                );
                if !sleep_or_cancel(&cancel, backoff.next_delay()).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                fail_connect(
                    &shared,
                    &format!("connect timed out ({})", shared.config.redis_url_redacted),
                );
                if !sleep_or_cancel(&cancel, backoff.next_delay()).await {
                    return;
                }
                continue;
            }
        };
        if ever_connected {
            Metrics::inc(&shared.metrics.reconnects);
        }
        let reason = if ever_connected {
            "reconnect"
        } else {
            "initial"
        };
        let level = if ever_connected { "info" } else { "debug" };
        shared.metrics.redis_down.store(false, Relaxed);
        shared.log(
            level,
            format!(
                "subscribed to {} ({reason})",
                shared.config.redis_url_redacted
            ),
        );
        ever_connected = true;
        let began = Instant::now();
        let end = session(&shared, pubsub, reason).await;
        let was_connected = shared.metrics.connected.swap(false, Relaxed);
        shared.metrics.redis_down.store(true, Relaxed);
        if let End::Shutdown = end {
            return;
        }
        if was_connected {
            shared
                .outbox
                .notice(Notice::Connection { connected: false });
        }
        if began.elapsed() >= HEALTHY_RESET {
            backoff.reset();
        }
        if !sleep_or_cancel(&cancel, backoff.next_delay()).await {
            return;
        }
    }
}

trait KindStr {
    fn kind_str(&self) -> String;
}

impl KindStr for redis::RedisError {
    /// A description without the URL (which may hold a password).
    fn kind_str(&self) -> String {
        if self.is_connection_refusal() {
            "connection refused".into()
        } else if self.is_timeout() {
            "timed out".into()
        } else if self.kind() == redis::ErrorKind::AuthenticationFailed {
            "authentication failed".into()
        } else {
            format!("{:?}", self.kind())
        }
    }
}

fn fail_connect(shared: &Shared, why: &str) {
    shared.metrics.redis_down.store(true, Relaxed);
    let e = CoreError::RedisUnavailable(why.to_owned());
    shared.outbox.notice(Notice::Error {
        code: e.code().to_owned(),
        message: e.to_string(),
    });
    shared.init_failed(e);
}

/// Sleeps; false when shutdown came first.
async fn sleep_or_cancel(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

async fn connect(
    client: &redis::Client,
    shared: &Shared,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    let channels: Vec<String> = Topic::ALL
        .iter()
        .map(|t| shared.config.channel(t.name()))
        .collect();
    pubsub.subscribe(&channels).await?;
    Ok(pubsub)
}

/// State of one connected session.
struct Session<'a> {
    shared: &'a Shared,
    /// `{prefix}:{tenant}:` — stripped from channel names to find the topic.
    channel_head: String,
    /// Events applied during the running reload, to re-apply on its snapshot.
    recorded: Option<Vec<Event>>,
    /// A reload was asked for while one was running.
    reload_again: Option<&'static str>,
}

async fn session(shared: &Shared, pubsub: redis::aio::PubSub, reason: &'static str) -> End {
    let cancel = shared.shutdown.child_token();
    let _stop_heartbeat = cancel.clone().drop_guard();
    let (sink, mut stream) = pubsub.split();
    let hb = shared.config.heartbeat;
    let last_traffic = Arc::new(AtomicI64::new(now_ms()));
    tokio::spawn(heartbeat(sink, hb, last_traffic.clone(), cancel.clone()));

    let mut s = Session {
        shared,
        channel_head: format!(
            "{}:{}:",
            shared.config.channel_prefix, shared.config.tenant_id
        ),
        recorded: Some(Vec::new()),
        reload_again: None,
    };
    let mut reload_reason = reason;
    let mut reload: Option<ReloadFuture> = Some(start_reload(shared));
    let mut retry: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut wrapper_backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut check = tokio::time::interval(hb / 2);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let refresh_every = shared.config.refresh_interval;
    let mut refresh =
        tokio::time::interval(refresh_every.unwrap_or(Duration::from_secs(3600 * 24 * 365)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh.reset();

    loop {
        tokio::select! {
            _ = cancel.cancelled() => return End::Shutdown,
            msg = stream.next() => {
                let Some(msg) = msg else {
                    shared.log("warn", "redis subscription closed by the server");
                    return End::Lost;
                };
                last_traffic.store(now_ms(), Relaxed);
                s.handle(&msg);
                let mut n = 1;
                while n < DRAIN_BATCH {
                    match stream.next().now_or_never() {
                        Some(Some(m)) => { s.handle(&m); n += 1; }
                        Some(None) => { shared.outbox.flush(); return End::Lost; }
                        None => break,
                    }
                }
                shared.outbox.flush();
                if s.recorded.as_ref().is_some_and(|r| r.len() > MAX_RECORDED) {
                    s.reload_again.get_or_insert(reload_reason);
                }
            }
            _ = check.tick() => {
                let silent = now_ms() - last_traffic.load(Relaxed);
                if silent > 2 * hb.as_millis() as i64 {
                    shared.log("warn", format!("no traffic on the subscription for {silent} ms: treating the link as lost"));
                    return End::Lost;
                }
            }
            res = async { reload.as_mut().unwrap().await }, if reload.is_some() => {
                reload = None;
                match res {
                    Ok(snap) => {
                        s.finish_reload(snap, reload_reason);
                        wrapper_backoff.reset();
                        refresh.reset();
                    }
                    Err(e) => {
                        s.recorded = None;
                        shared.outbox.notice(Notice::Error {
                            code: e.code().to_owned(),
                            message: format!("critical reload failed: {e}"),
                        });
                        shared.init_failed(e);
                        retry = Some(Box::pin(tokio::time::sleep(wrapper_backoff.next_delay())));
                    }
                }
            }
            _ = async { retry.as_mut().unwrap().await }, if retry.is_some() => {
                retry = None;
                s.recorded = Some(Vec::new());
                reload = Some(start_reload(shared));
            }
            _ = refresh.tick(), if refresh_every.is_some() && reload.is_none() && retry.is_none() => {
                s.reload_again.get_or_insert("refresh");
            }
        }
        if let Some(why) = s.reload_again.take() {
            // A reload already running restarts so that its snapshot is newer than the request.
            reload_reason = if reload_reason == "reconnect" && reload.is_some() {
                "reconnect"
            } else {
                why
            };
            s.recorded = Some(Vec::new());
            retry = None;
            reload = Some(start_reload(shared));
        }
    }
}

fn start_reload(shared: &Shared) -> ReloadFuture {
    let wrapper = shared.wrapper.clone();
    Box::pin(async move { wrapper.snapshot().await })
}

/// Pings the subscription every `hb`; a reply counts as traffic.
async fn heartbeat(
    mut sink: redis::aio::PubSubSink,
    hb: Duration,
    last_traffic: Arc<AtomicI64>,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(hb) => {}
        }
        let ping = tokio::time::timeout(hb * 2, sink.ping::<redis::Value>());
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = ping => match r {
                Ok(Ok(_)) => last_traffic.store(now_ms(), Relaxed),
                Ok(Err(_)) => return, // the connection is gone; the stream ends too
                Err(_) => {}          // no answer: silence detection decides
            }
        }
    }
}

impl Session<'_> {
    /// Handles one raw message.
    fn handle(&mut self, msg: &redis::Msg) {
        let shared = self.shared;
        Metrics::inc(&shared.metrics.events_received);
        let now = now_ms();
        shared.metrics.last_event_at.store(now, Relaxed);
        let topic = msg
            .get_channel_name()
            .strip_prefix(self.channel_head.as_str())
            .and_then(Topic::from_name);
        let Some(topic) = topic else {
            return self.reject(Rejection::WrongTopic, "unknown channel");
        };
        let ctx = Context {
            tenant_id: &shared.config.tenant_id,
            topic,
            signing_secret: shared.config.signing_secret.as_ref(),
            now_ms: now,
        };
        match parse_event(msg.get_payload_bytes(), &ctx) {
            Ok(ev) => self.apply(ev),
            Err(r) => self.reject(r, topic.name()),
        }
    }

    fn reject(&self, r: Rejection, channel: &str) {
        self.shared.metrics.reject(r);
        let now = now_ms();
        let last = self.shared.last_reject_log.load(Relaxed);
        if now - last >= 1000
            && self
                .shared
                .last_reject_log
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.shared.log("warn", format!("rejected an event on {channel}: {} (further rejections this second are only counted)", r.name()));
        }
    }

    /// Applies a validated event live.
    fn apply(&mut self, ev: Event) {
        let shared = self.shared;
        if let Some(id) = &ev.event_id {
            if shared.replay.seen(id) {
                return self.reject(Rejection::Replay, "replay");
            }
        }
        let listen = shared.outbox.listen_changes();
        let applied = {
            let mut store = shared.store();
            shared.outbox.with(|delta| {
                let out = store.apply(&ev, delta);
                if let (Ok(a), true) = (&out, listen) {
                    if !a.keys.is_empty() {
                        delta.notice(Notice::Change {
                            event_type: ev.event_type.to_owned(),
                            keys: a.keys.clone(),
                        });
                    }
                }
                out
            })
        };
        match applied {
            Err(r) => self.reject(r, "stale"),
            Ok(a) => {
                if let Some(id) = &ev.event_id {
                    shared.replay.remember(id);
                }
                Metrics::inc(&shared.metrics.events_applied);
                for key in &a.invalidate {
                    shared.reference.invalidate(key);
                }
                if a.resync {
                    self.reload_again = Some("resync-required");
                } else if let Some(rec) = self.recorded.as_mut() {
                    rec.push(ev);
                }
            }
        }
    }

    /// Installs a loaded snapshot, re-applies what arrived meanwhile, and
    /// reports the consumer synced.
    fn finish_reload(&mut self, snap: Snapshot, reason: &'static str) {
        let shared = self.shared;
        let recorded = self.recorded.take().unwrap_or_default();
        let first = !shared.metrics.ready.load(Relaxed);
        {
            let mut store = shared.store();
            let mut delta = Delta::default();
            // The first load ships no users: the replica reads them on first access.
            store.replace(snap, &mut delta, !first);
            for ev in &recorded {
                let _ = store.apply(ev, &mut delta); // stale here just means the snapshot was newer
            }
            shared.outbox.with(|d| d.merge(delta));
        }
        if reason != "refresh" && reason != "initial" {
            shared.reference.clear();
        }
        let m = &shared.metrics;
        m.last_sync_at.store(now_ms(), Relaxed);
        m.ready.store(true, Relaxed);
        if !first {
            Metrics::inc(&m.resyncs);
        }
        let was_connected = m.connected.swap(true, Relaxed);
        let level = if reason == "refresh" || reason == "initial" {
            "debug"
        } else {
            "info"
        };
        shared.outbox.with(|d| {
            d.notice(Notice::Log {
                level,
                msg: format!("critical data loaded ({reason})"),
            });
            d.notice(Notice::Resync {
                reason: reason.to_owned(),
            });
            if first {
                d.notice(Notice::Ready);
            }
            if !was_connected {
                d.notice(Notice::Connection { connected: true });
            }
        });
        shared.outbox.flush();
        shared.init.send_if_modified(|s| {
            let pending = matches!(s, InitState::Pending(_));
            if pending {
                *s = InitState::Ready;
            }
            pending
        });
    }
}
