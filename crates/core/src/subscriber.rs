//! The subscription task: connects to Redis, subscribes to the tenant's seven
//! channels, keeps the link alive with a heartbeat, and runs one session per
//! connection, in which events are applied (`apply.rs`) and full reloads run
//! (`reload.rs`). Between sessions it backs off (SPEC §3 schedule).
//!
//! Where it connects (a server, a Sentinel master, a Cluster node; TLS) is
//! `redis_target.rs`'s concern. The link is a RESP3 connection (Redis ≥ 6)
//! whose push messages go into a
//! queue bounded by count and bytes; a queue that overflows (this process
//! cannot keep up) is treated like a lost link: the session ends, and the
//! next one resyncs. One task owns one connection at a time and drops every
//! handle of it before the next connect, so a reconnect can never leave two
//! live subscriptions.
//!
//! A reload never pauses event application: events keep being applied while
//! the snapshot downloads, and are recorded; the new store is swapped in with
//! them re-applied, and only then does the consumer report itself connected.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::apply::Applier;
use crate::backoff::Backoff;
use crate::config::Limits;
use crate::delta::Notice;
use crate::error::CoreError;
use crate::metrics::Metrics;
use crate::protocol::Topic;
use crate::reload::{Reason, RecordLimits, Reloads};
use crate::tenant::Tenant;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages handled before the outbox is flushed.
const DRAIN_BATCH: usize = 4096;

/// The bounded-queue state shared with the connection's push sender.
#[derive(Default)]
struct PushQueue {
    /// Payload bytes waiting in the channel.
    bytes: AtomicUsize,
    /// A message did not fit: the session must end and resync.
    overflowed: AtomicBool,
}

/// One connected, subscribed link.
struct Link {
    /// The connection (its driver task ends when every handle is dropped).
    conn: MultiplexedConnection,
    /// Push messages (events, disconnection), bounded.
    messages: mpsc::Receiver<PushInfo>,
    /// Shared with the sender: bytes waiting, overflow flag.
    queue: Arc<PushQueue>,
    /// With Sentinel: the master's address this link is on; the heartbeat
    /// asks the sentinels whether it still is.
    master: Option<(String, u16)>,
}

/// Why a session ended.
enum End {
    /// The link was lost (EOF, error, silence or queue overflow).
    Lost,
    /// Shutdown was requested.
    Shutdown,
}

/// The task body: connect, run a session, back off, repeat until shutdown.
pub(crate) async fn run(tenant: Arc<Tenant>) {
    let cancel = tenant.shutdown.clone();
    let target = &tenant.config.redis;
    let limits = tenant.config.limits;
    let mut backoff = Backoff::reconnect();
    let mut ever_connected = false;
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, connect(&tenant, limits)) => r,
        };
        let why = match attempt {
            Ok(Ok(link)) => {
                if ever_connected {
                    Metrics::inc(&tenant.metrics.reconnects);
                }
                let reason = if ever_connected {
                    Reason::Reconnect
                } else {
                    Reason::Initial
                };
                ever_connected = true;
                tenant.metrics.redis_down.store(false, Relaxed);
                tenant.redis_failed(None);
                tenant.log(
                    if reason == Reason::Initial {
                        "debug"
                    } else {
                        "info"
                    },
                    format!("subscribed to {} ({})", target.describe(), reason.name()),
                );
                let (end, connected_for) = session(&tenant, link, reason).await;
                let was_connected = tenant.metrics.connected.swap(false, Relaxed);
                tenant.metrics.redis_down.store(true, Relaxed);
                if let End::Shutdown = end {
                    return;
                }
                if was_connected {
                    tenant
                        .outbox
                        .notice(Notice::Connection { connected: false });
                }
                backoff.after_session(connected_for);
                None
            }
            Ok(Err(e)) => Some(format!(
                "{} ({})",
                target.describe_error(&e),
                target.describe()
            )),
            Err(_) => Some(format!(
                "connect timed out{} ({})",
                if target.uses_tls() { " (TLS)" } else { "" },
                target.describe()
            )),
        };
        if let Some(why) = why {
            tenant.metrics.redis_down.store(true, Relaxed);
            let e = CoreError::RedisUnavailable(why);
            tenant.report(&e, "");
            tenant.redis_failed(Some(e));
        }
        if !sleep_or_cancel(&cancel, backoff.next_delay()).await {
            return;
        }
    }
}

/// Sleeps; false when shutdown came first.
async fn sleep_or_cancel(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Payload bytes of a push message (what the queue bound counts).
fn push_bytes(info: &PushInfo) -> usize {
    info.data
        .iter()
        .map(|v| match v {
            redis::Value::BulkString(b) => b.len(),
            _ => 16,
        })
        .sum()
}

/// Connects (a server, the sentinels' current master, or the first cluster
/// node that answers: see `redis_target.rs`) with RESP3 and subscribes.
async fn connect(tenant: &Tenant, limits: Limits) -> redis::RedisResult<Link> {
    let (tx, messages) = mpsc::channel(limits.push_messages.max(1));
    let queue = Arc::new(PushQueue::default());
    let q = queue.clone();
    let sender = move |info: PushInfo| -> Result<(), ()> {
        if !matches!(info.kind, PushKind::Message | PushKind::Disconnection) {
            return Ok(()); // subscription confirmations: the client tracks them
        }
        let bytes = push_bytes(&info);
        if q.bytes.load(Relaxed) + bytes > limits.push_bytes {
            q.overflowed.store(true, Relaxed);
            return Ok(());
        }
        match tx.try_send(info) {
            Ok(()) => {
                q.bytes.fetch_add(bytes, Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                q.overflowed.store(true, Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        }
    };
    let config = AsyncConnectionConfig::new()
        .set_push_sender(sender)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    let (mut conn, master) = tenant
        .config
        .redis
        .connect(config, ProtocolVersion::RESP3)
        .await?;
    let channels: Vec<String> = Topic::ALL
        .iter()
        .map(|t| tenant.config.channel(t.name()))
        .collect();
    conn.subscribe(&channels).await?;
    Ok(Link {
        conn,
        messages,
        queue,
        master,
    })
}

/// When the next periodic refresh is due: the interval ±10 % (SPEC §7).
fn next_refresh(every: Option<Duration>) -> Option<Instant> {
    every.map(|d| Instant::now() + d.mul_f64(rand::rng().random_range(0.9..=1.1)))
}

/// Runs one connected session until the link is lost or shutdown. Returns
/// why it ended and how long the consumer was connected (resynced) in it.
async fn session(tenant: &Tenant, mut link: Link, reason: Reason) -> (End, Duration) {
    let cancel = tenant.shutdown.clone();
    let config = &tenant.config;
    let applier = Applier::new(tenant);
    let mut reloads = Reloads::new(
        tenant.wrapper.clone(),
        config.resync_jitter,
        RecordLimits {
            events: config.limits.recorded_events,
            bytes: config.limits.recorded_bytes,
        },
    );
    reloads.request(reason);
    let heartbeat = config.heartbeat;
    let mut last_traffic = Instant::now();
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping: Option<BoxFuture<'static, redis::RedisResult<redis::Value>>> = None;
    type MasterCheck<'a> = BoxFuture<'a, redis::RedisResult<Option<(String, u16)>>>;
    let mut master_check: Option<MasterCheck<'_>> = None;
    let mut refresh_at: Option<Instant> = None;
    let mut connected_since: Option<Instant> = None;
    let connected_for = |since: Option<Instant>| since.map_or(Duration::ZERO, |t| t.elapsed());

    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => break End::Shutdown,
            msg = link.messages.recv() => {
                let Some(first) = msg else {
                    tenant.log("warn", "redis subscription closed");
                    break End::Lost;
                };
                last_traffic = Instant::now();
                let mut next = Some(first);
                let mut n = 0;
                let mut lost = false;
                while let Some(info) = next.take() {
                    link.queue.bytes.fetch_sub(push_bytes(&info), Relaxed);
                    match info.kind {
                        PushKind::Message => {
                            if let [redis::Value::BulkString(ch), redis::Value::BulkString(payload)] = &info.data[..] {
                                applier.handle(&String::from_utf8_lossy(ch), payload, &mut reloads);
                            }
                        }
                        PushKind::Disconnection => {
                            lost = true;
                            break;
                        }
                        _ => {}
                    }
                    n += 1;
                    if n < DRAIN_BATCH {
                        next = link.messages.try_recv().ok();
                    }
                }
                tenant.outbox.flush();
                if lost {
                    tenant.log("warn", "redis connection lost");
                    break End::Lost;
                }
                if link.queue.overflowed.load(Relaxed) {
                    Metrics::inc(&tenant.metrics.queue_overflows);
                    tenant.log("warn", "events arrived faster than they could be applied and the queue bound was hit: reconnecting to resync");
                    break End::Lost;
                }
            }
            _ = tick.tick() => {
                let silent = last_traffic.elapsed();
                if silent > heartbeat * 2 {
                    tenant.log("warn", format!("no traffic on the subscription for {} ms: treating the link as lost", silent.as_millis()));
                    break End::Lost;
                }
                if ping.is_none() {
                    let mut conn = link.conn.clone();
                    ping = Some(async move { redis::cmd("PING").query_async(&mut conn).await }.boxed());
                }
                if link.master.is_some() && master_check.is_none() {
                    master_check = Some(config.redis.current_master().boxed());
                }
            }
            res = async { ping.as_mut().expect("guarded").await }, if ping.is_some() => {
                ping = None;
                match res {
                    Ok(_) => last_traffic = Instant::now(),
                    Err(e) if e.is_timeout() => {}
                    Err(_) => {
                        tenant.log("warn", "redis connection lost (ping failed)");
                        break End::Lost;
                    }
                }
            }
            res = async { master_check.as_mut().expect("guarded").await }, if master_check.is_some() => {
                master_check = None;
                // An unreachable sentinel says nothing; a different master says failover.
                if let Ok(Some(now)) = res {
                    if Some(&now) != link.master.as_ref() {
                        tenant.log("info", format!("the sentinels name a new master ({}:{}): reconnecting", now.0, now.1));
                        break End::Lost;
                    }
                }
            }
            done = reloads.next(&tenant.replay) => {
                match done.result {
                    Ok(store) => {
                        applier.install(store, &done.recorded, done.reason);
                        reloads.done(done.reason, true);
                        refresh_at = next_refresh(config.refresh_interval);
                        connected_since.get_or_insert_with(Instant::now);
                    }
                    Err(e) => {
                        let delay = reloads.done(done.reason, false).unwrap_or_default();
                        tenant.metrics.resync_failing.store(true, Relaxed);
                        tenant.report(&e, &format!(
                            "critical reload ({}) failed, retrying in {} ms: ",
                            done.reason.name(),
                            delay.as_millis()
                        ));
                        tenant.load_failed(e);
                    }
                }
            }
            _ = async { tokio::time::sleep_until(refresh_at.expect("guarded")).await }, if refresh_at.is_some() => {
                refresh_at = next_refresh(config.refresh_interval);
                reloads.request(Reason::Refresh);
            }
        }
    };
    (end, connected_for(connected_since))
}
