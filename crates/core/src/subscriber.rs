//! The subscription task: connects to Redis, subscribes to the tenant's seven
//! channels, keeps the link alive with a heartbeat, and runs one session per
//! connection, in which events are applied (`apply.rs`) and full reloads run
//! (`reload.rs`). Between sessions it backs off (SPEC §3 schedule).
//!
//! The parts a tenant pool (`pool.rs`) shares are here too: [`open_link`]
//! (a connection whose push messages go to a bounded queue), [`watch_link`]
//! (the heartbeat), and [`session`], which runs on any [`Feed`] of messages:
//! a standalone consumer's own link, or a pool tenant's share of the pool's.
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

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
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
use crate::config::{Config, Limits};
use crate::delta::Notice;
use crate::error::CoreError;
use crate::fleet::FleetContext;
use crate::metrics::Metrics;
use crate::reload::{Reason, RecordLimits, Reloads};
use crate::stream;
use crate::tenant::Tenant;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most messages handled before the outbox is flushed (or, in a pool, before
/// the link task's other work gets a turn).
pub(crate) const DRAIN_BATCH: usize = 4096;

/// The bounded-queue state shared with the connection's push sender (or, in
/// a pool, with the router that forwards a tenant's messages).
#[derive(Default)]
pub(crate) struct PushQueue {
    /// Payload bytes waiting in the channel.
    pub bytes: AtomicUsize,
    /// A message did not fit: the session must end and resync.
    pub overflowed: AtomicBool,
}

impl PushQueue {
    /// Puts `info` on `tx` within `limits` (count and bytes); on overflow
    /// sets the flag and drops it. `Err` when the receiver is gone.
    pub fn offer(
        &self,
        tx: &mpsc::Sender<PushInfo>,
        info: PushInfo,
        limits: &Limits,
    ) -> Result<(), ()> {
        let bytes = push_bytes(&info);
        if self.bytes.load(Relaxed) + bytes > limits.push_bytes {
            self.overflowed.store(true, Relaxed);
            return Ok(());
        }
        match tx.try_send(info) {
            Ok(()) => {
                self.bytes.fetch_add(bytes, Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Relaxed);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        }
    }
}

/// One connected link.
pub(crate) struct Link {
    /// The connection (its driver task ends when every handle is dropped).
    pub conn: MultiplexedConnection,
    /// Push messages (events, disconnection), bounded.
    pub messages: mpsc::Receiver<PushInfo>,
    /// Shared with the sender: bytes waiting, overflow flag.
    pub queue: Arc<PushQueue>,
    /// With Sentinel: the master's address this link is on; the heartbeat
    /// asks the sentinels whether it still is.
    pub master: Option<(String, u16)>,
}

/// When a link last carried traffic (a message or a `PONG`): shared by the
/// session's message arm and [`watch_link`].
pub(crate) struct Traffic {
    /// The origin of `last_ms`.
    base: Instant,
    /// Milliseconds after `base` of the latest traffic.
    last_ms: AtomicU64,
}

impl Traffic {
    /// Traffic seen now.
    pub fn new() -> Traffic {
        Traffic {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Records traffic now.
    pub fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Relaxed);
    }

    /// Time since the latest traffic.
    fn silent(&self) -> Duration {
        self.base
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_ms.load(Relaxed)))
    }
}

/// Where a [`session`]'s messages come from, and how it learns that the link
/// under it is gone.
pub(crate) struct Feed<'a> {
    /// The tenant's messages, in order.
    pub messages: &'a mut mpsc::Receiver<PushInfo>,
    /// The bound's accounting for `messages`.
    pub queue: &'a PushQueue,
    /// Touched on every message, when the session owns the link's heartbeat.
    pub traffic: Option<&'a Traffic>,
    /// Resolves, with a log line (empty: the owner of the link logs it),
    /// when the link must be treated as lost.
    pub lost: BoxFuture<'a, String>,
    /// The link's connection, for commands (the stream transport reads its
    /// stream and shared snapshot with it).
    pub commands: MultiplexedConnection,
}

/// Why a session ended.
pub(crate) enum End {
    /// The link was lost (EOF, error, silence or queue overflow).
    Lost,
    /// Shutdown was requested.
    Shutdown,
}

/// The task body: connect, run a session, back off, repeat until shutdown.
pub(crate) async fn run(tenant: Arc<Tenant>) {
    let cancel = tenant.shutdown.clone();
    let target = &tenant.config.redis;
    let channels = tenant.config.channels();
    let mut backoff = Backoff::reconnect();
    let mut ever_connected = false;
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let mut link = open_link(&tenant.config).await?;
                link.conn.subscribe(&channels).await?;
                let commands =
                    stream_commands(&tenant.config, &link, Some(&tenant.config.tenant_id)).await?;
                Ok::<_, redis::RedisError>((link, commands))
            }) => r,
        };
        let why = match attempt {
            Ok(Ok((mut link, commands))) => {
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
                let traffic = Traffic::new();
                let feed = Feed {
                    commands,
                    lost: watch_link(
                        link.conn.clone(),
                        link.master.clone(),
                        &tenant.config,
                        &traffic,
                    )
                    .boxed(),
                    messages: &mut link.messages,
                    queue: &link.queue,
                    traffic: Some(&traffic),
                };
                let (end, connected_for) = session(&tenant, feed, reason).await;
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
            Ok(Err(e)) => Some(describe_failure(&tenant.config, Some(&e))),
            Err(_) => Some(describe_failure(&tenant.config, None)),
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

/// A failed connection attempt in words (`None`: it timed out); no secrets.
pub(crate) fn describe_failure(config: &Config, e: Option<&redis::RedisError>) -> String {
    let target = &config.redis;
    match e {
        Some(e) => format!("{} ({})", target.describe_error(e), target.describe()),
        None => format!(
            "connect timed out{} ({})",
            if target.uses_tls() { " (TLS)" } else { "" },
            target.describe()
        ),
    }
}

/// Sleeps; false when shutdown came first.
pub(crate) async fn sleep_or_cancel(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Payload bytes of a push message (what the queue bound counts).
pub(crate) fn push_bytes(info: &PushInfo) -> usize {
    info.data
        .iter()
        .map(|v| match v {
            redis::Value::BulkString(b) => b.len(),
            _ => 16,
        })
        .sum()
}

/// Connects (a server, the sentinels' current master, or the first cluster
/// node that answers: see `redis_target.rs`) with RESP3; push messages go
/// to a queue bounded by `config.limits`. Subscribes to nothing.
pub(crate) async fn open_link(config: &Config) -> redis::RedisResult<Link> {
    let limits = config.limits;
    let (tx, messages) = mpsc::channel(limits.push_messages.max(1));
    let queue = Arc::new(PushQueue::default());
    let q = queue.clone();
    let sender = move |info: PushInfo| -> Result<(), ()> {
        if !matches!(info.kind, PushKind::Message | PushKind::Disconnection) {
            return Ok(()); // subscription confirmations: the client tracks them
        }
        q.offer(&tx, info, &limits)
    };
    let async_config = AsyncConnectionConfig::new()
        .set_push_sender(sender)
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    let (conn, master) = config
        .redis
        .connect(async_config, ProtocolVersion::RESP3)
        .await?;
    Ok(Link {
        conn,
        messages,
        queue,
        master,
    })
}

/// The connection a session's commands go on: the link itself with the
/// pub/sub transport; with the stream transport a second, unsubscribed one,
/// because Redis holds a subscribed connection's replies to the pub/sub
/// output-buffer limit (32 MB by default) and closes it in the middle of a
/// large shared snapshot's `GET`.
///
/// With Cluster and a `tenant` (a consumer's session), that connection goes
/// to the node owning the tenant's slot: every stream key of a tenant shares
/// its `{tenant}` hash tag, so one node holds them all. The owner is found
/// the way Redis tells it: a read of the tenant's epoch key on the first node,
/// answered there or with `MOVED` to the owner. A slot that moves later makes
/// a command fail, which ends the session like a lost link; the next one asks
/// again. (A pool's connection serves many tenants: `tenant` is `None`.)
pub(crate) async fn stream_commands(
    config: &Config,
    link: &Link,
    tenant: Option<&str>,
) -> redis::RedisResult<MultiplexedConnection> {
    if config.transport != crate::config::Transport::Stream {
        return Ok(link.conn.clone());
    }
    let async_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    let mut conn = config
        .redis
        .connect(async_config.clone(), ProtocolVersion::RESP2)
        .await?
        .0;
    let (Some(tenant), true) = (tenant, config.redis.is_cluster()) else {
        return Ok(conn);
    };
    let keys = crate::stream::Keys::new(&config.channel_prefix, tenant);
    match redis::cmd("EXISTS")
        .arg(&keys.epoch)
        .query_async::<i64>(&mut conn)
        .await
    {
        Ok(_) => Ok(conn),
        Err(e) => match e.redirect_node() {
            Some((addr, _slot)) => {
                config
                    .redis
                    .connect_node(addr, async_config, ProtocolVersion::RESP2)
                    .await
            }
            None => Err(e),
        },
    }
}

/// The heartbeat of a link (`conn`, on `master` with Sentinel): every `heartbeatMs` a `PING` (and, with
/// Sentinel, "is this still the master?"). Resolves, with a log line, when
/// the link must be treated as lost: two heartbeats without traffic, a
/// failed `PING`, or the sentinels naming another master.
pub(crate) async fn watch_link(
    conn: MultiplexedConnection,
    master: Option<(String, u16)>,
    config: &Config,
    traffic: &Traffic,
) -> String {
    let heartbeat = config.heartbeat;
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let silent = traffic.silent();
        if silent > heartbeat * 2 {
            return format!(
                "no traffic on the subscription for {} ms: treating the link as lost",
                silent.as_millis()
            );
        }
        let mut conn = conn.clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(heartbeat, ping.query_async::<redis::Value>(&mut conn)).await {
            Ok(Ok(_)) => traffic.touch(),
            Ok(Err(e)) if !e.is_timeout() => {
                return "redis connection lost (ping failed)".into();
            }
            // No answer yet: the silence check decides.
            _ => {}
        }
        if let Some(master) = &master {
            // An unreachable sentinel says nothing; a different master says failover.
            let check = tokio::time::timeout(heartbeat, config.redis.current_master()).await;
            if let Ok(Ok(Some(now))) = check {
                if &now != master {
                    return format!(
                        "the sentinels name a new master ({}:{}): reconnecting",
                        now.0, now.1
                    );
                }
            }
        }
    }
}

/// Takes `first` and what follows it at once (up to [`DRAIN_BATCH`]
/// messages) off `messages`, keeping `queue`'s byte count, and passes each
/// message (`PushKind::Message`) to `on_message`. Returns true when the
/// connection reported its loss (what follows that is left in the queue).
pub(crate) fn drain(
    messages: &mut mpsc::Receiver<PushInfo>,
    queue: &PushQueue,
    first: PushInfo,
    mut on_message: impl FnMut(PushInfo),
) -> bool {
    let mut next = Some(first);
    let mut n = 0;
    while let Some(info) = next.take() {
        queue.bytes.fetch_sub(push_bytes(&info), Relaxed);
        match info.kind {
            PushKind::Message => on_message(info),
            PushKind::Disconnection => return true,
            _ => {}
        }
        n += 1;
        if n < DRAIN_BATCH {
            next = messages.try_recv().ok();
        }
    }
    false
}

/// After a reconnect with the stream transport: catches up from the stream
/// (SPEC §7) when Redis kept its data (same epoch) and the stream still holds
/// the last entry applied; then reports the consumer connected. False when
/// it cannot prove there is no gap (the caller reloads).
async fn resume(
    tenant: &Tenant,
    applier: &Applier<'_>,
    ctx: &FleetContext,
    reloads: &mut Reloads,
) -> bool {
    let Some((epoch, at)) = tenant.stream.as_ref().and_then(|s| s.get()) else {
        return false;
    };
    let mut conn = ctx.conn.clone();
    let same_epoch =
        matches!(stream::current_epoch(&mut conn, &ctx.keys).await, Ok(Some(e)) if e == epoch);
    if !same_epoch || !matches!(stream::holds(&mut conn, &ctx.keys, at).await, Ok(true)) {
        tenant.log(
            "info",
            if same_epoch {
                "the stream no longer holds the last entry applied (trimmed): reloading"
            } else {
                "Redis lost the stream (its epoch changed): reloading"
            },
        );
        return false;
    }
    // Counted before anything is applied: a reader that sees the caught-up
    // data sees the resume counted.
    Metrics::inc(&tenant.metrics.resumes);
    let mut from = at;
    loop {
        let batch = match stream::read_after(
            &mut conn,
            &ctx.keys,
            from,
            crate::fleet::CATCH_UP_BATCH,
        )
        .await
        {
            Ok(b) => b,
            Err(_) => {
                // Not a resume after all: the caller reloads.
                tenant.metrics.resumes.fetch_sub(1, Relaxed);
                return false;
            }
        };
        for e in &batch {
            applier.entry(e.id, e.topic, &e.msg, true, reloads);
            from = e.id;
        }
        tenant.outbox.flush();
        if batch.len() < crate::fleet::CATCH_UP_BATCH {
            break;
        }
    }
    if !tenant.metrics.connected.swap(true, Relaxed) {
        tenant.outbox.notice(Notice::Connection { connected: true });
    }
    tenant.log("info", format!("caught up from the stream after {at}"));
    true
}

/// When the next periodic refresh is due: the interval ±10 % (SPEC §7).
fn next_refresh(every: Option<Duration>) -> Option<Instant> {
    every.map(|d| Instant::now() + d.mul_f64(rand::rng().random_range(0.9..=1.1)))
}

/// Runs one connected session until the link is lost or shutdown. Returns
/// why it ended and how long the consumer was connected (resynced) in it.
pub(crate) async fn session(tenant: &Tenant, feed: Feed<'_>, reason: Reason) -> (End, Duration) {
    let Feed {
        messages,
        queue,
        traffic,
        mut lost,
        commands,
    } = feed;
    let cancel = tenant.shutdown.clone();
    let config = &tenant.config;
    let applier = Applier::new(tenant);
    let fleet = tenant.stream.as_ref().map(|st| FleetContext {
        conn: commands.clone(),
        keys: st.keys.clone(),
        tenant_id: config.tenant_id.clone(),
        owner: st.owner.clone(),
        shared: config.shared_snapshot,
        signing: config.signing_secret.clone(),
        max_bytes: config
            .max_response_bytes
            .saturating_mul(crate::wrapper::LOAD_BYTES_FACTOR),
        wait: config.init_timeout,
        refresh_every: config.refresh_interval,
        metrics: tenant.metrics.clone(),
        wake: st.wake.clone(),
    });
    let mut reloads = Reloads::new(
        tenant.wrapper.clone(),
        config.resync_jitter,
        RecordLimits {
            events: config.limits.recorded_events,
            bytes: config.limits.recorded_bytes,
        },
        tenant.load_gate.clone(),
        fleet.clone(),
    );
    let mut refresh_at: Option<Instant> = None;
    let mut connected_since: Option<Instant> = None;
    let connected_for = |since: Option<Instant>| since.map_or(Duration::ZERO, |t| t.elapsed());
    // The stream transport catches up instead of reloading when it can.
    let resumed = match (&fleet, reason) {
        (Some(ctx), Reason::Reconnect) => resume(tenant, &applier, ctx, &mut reloads).await,
        _ => false,
    };
    if resumed {
        refresh_at = next_refresh(config.refresh_interval);
        connected_since = Some(Instant::now());
    } else {
        reloads.request(reason);
    }

    let end = loop {
        tokio::select! {
            _ = cancel.cancelled() => break End::Shutdown,
            msg = messages.recv() => {
                let Some(first) = msg else {
                    tenant.log("warn", "redis subscription closed");
                    break End::Lost;
                };
                if let Some(t) = traffic {
                    t.touch();
                }
                let disconnected = drain(messages, queue, first, |info| {
                    if let [redis::Value::BulkString(ch), redis::Value::BulkString(payload)] = &info.data[..] {
                        applier.handle(&String::from_utf8_lossy(ch), payload, &mut reloads);
                    }
                });
                tenant.outbox.flush();
                if disconnected {
                    tenant.log("warn", "redis connection lost");
                    break End::Lost;
                }
                if queue.overflowed.swap(false, Relaxed) {
                    Metrics::inc(&tenant.metrics.queue_overflows);
                    tenant.log("warn", "events arrived faster than they could be applied and the queue bound was hit: reconnecting to resync");
                    break End::Lost;
                }
            }
            why = &mut lost => {
                if !why.is_empty() {
                    tenant.log("warn", why);
                }
                break End::Lost;
            }
            done = reloads.next(&tenant.replay) => {
                match done.result {
                    Ok(loaded) => {
                        if let Some(loaded) = loaded {
                            applier.install(loaded, &done.recorded, done.reason, done.started_ms);
                        }
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
