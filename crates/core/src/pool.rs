//! The tenant pool (SPEC §8): many tenants' consumers over one Redis link,
//! one HTTP connection pool and one runtime.
//!
//! * **One link.** The pool's link task owns one RESP3 connection (classic
//!   pub/sub reaches a whole Cluster through any node). It subscribes each
//!   loaded tenant's seven channels on it, and unsubscribes them when the
//!   tenant is released; its heartbeat (`subscriber::watch_link`) serves
//!   every tenant. Each push message is routed by its channel
//!   (`{prefix}:{tenant}:{topic}`; tenant ids hold no `:`) to that tenant's
//!   bounded queue; a message for a tenant not loaded is dropped.
//! * **Per tenant**, everything that is its own stays its own: state
//!   ([`Tenant`]), store, caches, breakers, counters, the replay window, and
//!   one session task that runs `subscriber::session` on its share of the
//!   link. Its batches go to the pool's one [`PoolSink`] tagged with the
//!   tenant's *slot*, a number never reused, so a batch of a released
//!   tenant can never reach a later load of the same id.
//! * **Generations.** Every connection of the link has a generation number
//!   (`0` while down). A tenant's session runs only while its channels are
//!   subscribed on the live generation, and ends when the generation changes;
//!   the next one resyncs it (reason `reconnect`). Full loads wait for one of
//!   `maxConcurrentLoads` permits, so a reconnect with thousands of tenants
//!   never sends the Wrapper more loads than that at once; reads answer from
//!   the old data meanwhile, and each tenant reports itself connected when its
//!   own resync is installed.
//! * **Release** is the tenant consumer's shutdown (or drop): its route is
//!   removed at once (no more messages reach it), its channels are
//!   unsubscribed, and its tasks end; nothing of it remains in the pool.
//!
//! Which tenants are loaded, and when one is released for idleness or for
//! `maxTenants`, is decided by the JS pool, which sees the reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::FutureExt;
use redis::aio::MultiplexedConnection;
use redis::PushInfo;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::commands::CommandLink;
use crate::config::PoolConfig;
use crate::consumer::Consumer;
use crate::delta::Notice;
use crate::error::{CoreError, Result};
use crate::metrics::Metrics;
use crate::outbox::{Batch, Outbox, Sink};
use crate::reload::Reason;
use crate::subscriber::{
    describe_failure, drain, open_link, session, sleep_or_cancel, stream_commands, watch_link, End,
    Feed, PushQueue, Traffic,
};
use crate::tasks::Tasks;
use crate::tenant::{command_link, Tenant};
use crate::wrapper::WrapperClient;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Tenants per `SUBSCRIBE` after a reconnect (seven channels each).
const SUBSCRIBE_CHUNK: usize = 1000;
/// The slot of the pool's own notices (log lines, errors, connection).
pub const POOL_SLOT: u64 = 0;

/// Where the batches of every tenant of a pool go (the binding implements it
/// with one threadsafe function). Must not block.
pub trait PoolSink: Send + Sync + 'static {
    /// Queues `batch` of the tenant loaded in `slot` ([`POOL_SLOT`]: the
    /// pool's own notices). Dropping the batch lets that tenant's next go.
    fn deliver(&self, slot: u64, batch: Batch);
}

/// A tenant's outbox sink: the pool's, with the tenant's slot.
struct SlotSink {
    /// The tenant's slot.
    slot: u64,
    /// The pool's sink.
    sink: Arc<dyn PoolSink>,
}

impl Sink for SlotSink {
    fn deliver(&self, batch: Batch) {
        self.sink.deliver(self.slot, batch);
    }
}

/// A loaded tenant as the link task sees it.
struct Route {
    /// Never reused: tells this load of the id from a later one.
    slot: u64,
    /// The tenant (for its channels and its Redis status).
    tenant: Arc<Tenant>,
    /// The tenant's messages.
    tx: mpsc::Sender<PushInfo>,
    /// The bound of `tx` (count and bytes, `Limits::push_*`).
    queue: Arc<PushQueue>,
    /// The link generation its channels are subscribed on (0: none yet).
    subscribed: watch::Sender<u64>,
}

impl Route {
    fn channels(&self) -> Vec<String> {
        self.tenant.config.channels()
    }
}

/// What the link task is asked to do between messages.
enum Command {
    /// Subscribe this tenant's channels (if it is still loaded).
    Subscribe(String),
    /// Unsubscribe them (if it is no longer loaded).
    Unsubscribe(String),
}

/// What the pool's handle and its tasks share.
struct Shared {
    /// Validated options.
    config: PoolConfig,
    /// The one HTTP client of every tenant.
    http: reqwest::Client,
    /// With `sharedReference`: the one command connection of every tenant.
    command_link: Option<Arc<CommandLink>>,
    /// Bounds concurrent full loads across tenants.
    gate: Arc<Semaphore>,
    /// Loaded tenants by id.
    routes: RwLock<HashMap<String, Arc<Route>>>,
    /// To the link task.
    commands: mpsc::UnboundedSender<Command>,
    /// The live link generation (0: down).
    link: watch::Sender<u64>,
    /// The live link's connection (for the tenants' stream commands).
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Fired by `shutdown`; every tenant's token is a child of it.
    shutdown: CancellationToken,
    /// Where batches go; set by `start`.
    sink: Mutex<Option<Arc<dyn PoolSink>>>,
    /// The next tenant slot (slot 0 is the pool's).
    next_slot: AtomicU64,
    /// The pool's own notices.
    outbox: Outbox,
    /// Reconnections of the link after a loss.
    reconnects: AtomicU64,
    /// Times the link's queue overflowed (the link was then reset).
    queue_overflows: AtomicU64,
    /// Set by the first `start`.
    started: AtomicBool,
    /// Notified when a tenant is released: the trimmer gives freed memory
    /// back to the system (see [`trim_after_releases`], memory.rs).
    released: tokio::sync::Notify,
}

impl Shared {
    /// Removes tenant `id` loaded in `slot` (not a later load of the same
    /// id) and has its channels unsubscribed.
    fn detach(&self, id: &str, slot: u64) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if routes.get(id).is_some_and(|r| r.slot == slot) {
            routes.remove(id);
            let _ = self.commands.send(Command::Unsubscribe(id.to_owned()));
            self.released.notify_one();
        }
    }

    fn routes(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Route>>> {
        self.routes.read().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, level: &'static str, msg: impl Into<String>) {
        self.outbox.notice(Notice::Log {
            level,
            msg: msg.into(),
        });
    }
}

/// Link-level figures of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// The link is up and subscribed.
    pub connected: bool,
    /// Tenants loaded in the core.
    pub tenants: usize,
    /// Reconnections of the link after a loss.
    pub reconnects: u64,
    /// Times the link's queue overflowed.
    pub queue_overflows: u64,
    /// Full loads downloading now.
    pub loads_in_flight: usize,
    /// With `sharedReference`: command connections opened so far (one, plus
    /// one per reconnect or Cluster node; never one per tenant).
    pub command_connections: u64,
}

/// See the module docs. All methods are thread-safe. Dropping the pool
/// without [`Pool::shutdown`] cancels its tasks and every tenant's.
pub struct Pool {
    /// Shared with the tasks.
    shared: Arc<Shared>,
    /// The link task's end of `Shared::commands`, taken by `start`.
    commands: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    /// The link task and the pool's flusher.
    tasks: Tasks,
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.tasks.abort();
    }
}

impl Pool {
    /// A pool from validated options. No I/O, no tasks.
    pub fn new(config: PoolConfig) -> Result<Pool> {
        let http = WrapperClient::http_client(&config.template)?;
        let command_link = command_link(&config.template);
        let (commands, rx) = mpsc::unbounded_channel();
        let (link, _) = watch::channel(0);
        Ok(Pool {
            shared: Arc::new(Shared {
                gate: Arc::new(Semaphore::new(config.max_concurrent_loads)),
                config,
                http,
                command_link,
                routes: RwLock::new(HashMap::new()),
                commands,
                link,
                conn: Mutex::new(None),
                shutdown: CancellationToken::new(),
                sink: Mutex::new(None),
                next_slot: AtomicU64::new(POOL_SLOT + 1),
                outbox: Outbox::default(),
                reconnects: AtomicU64::new(0),
                queue_overflows: AtomicU64::new(0),
                started: AtomicBool::new(false),
                released: tokio::sync::Notify::new(),
            }),
            commands: Mutex::new(Some(rx)),
            tasks: Tasks::default(),
        })
    }

    /// The validated options.
    pub fn config(&self) -> &PoolConfig {
        &self.shared.config
    }

    /// Installs the sink and starts the link (once; later calls are
    /// no-ops). Must run inside a tokio runtime.
    pub fn start(&self, sink: Arc<dyn PoolSink>) -> Result<()> {
        let shared = &self.shared;
        if shared.shutdown.is_cancelled() {
            return Err(CoreError::Shutdown);
        }
        if shared.started.swap(true, Relaxed) {
            return Ok(());
        }
        *shared.sink.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink.clone());
        shared.outbox.set_sink(Some(Arc::new(SlotSink {
            slot: POOL_SLOT,
            sink,
        })));
        let rx = self
            .commands
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("taken once, guarded by `started`");
        self.tasks.extend([
            tokio::spawn(shared.outbox.clone().run(shared.shutdown.clone())),
            tokio::spawn(run_link(shared.clone(), rx)),
            tokio::spawn(trim_after_releases(shared.clone())),
        ]);
        Ok(())
    }

    /// Loads tenant `id`: a consumer whose tasks run at once (its first full
    /// load starts when its channels are subscribed; await
    /// [`Consumer::wait_ready`]). The slot tags its batches at the sink.
    /// Errors: a `RangeError`-class error for an invalid id (nothing is
    /// subscribed), `SHUTDOWN` after [`Pool::shutdown`] or before `start`.
    /// A second load of an id still loaded replaces the first's route.
    pub fn tenant(&self, id: &str) -> Result<(Consumer, u64)> {
        let shared = &self.shared;
        let config = shared.config.for_tenant(id)?;
        let sink = shared
            .sink
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(sink) = sink.filter(|_| !shared.shutdown.is_cancelled()) else {
            return Err(CoreError::Shutdown);
        };
        let limits = config.limits;
        let mut tenant = Tenant::shared(
            config,
            shared.http.clone(),
            Some(shared.gate.clone()),
            shared.shutdown.child_token(),
            shared.command_link.clone(),
        )?;
        tenant.refusal_is_final = true;
        let tenant = Arc::new(tenant);
        let slot = shared.next_slot.fetch_add(1, Relaxed);
        tenant
            .outbox
            .set_sink(Some(Arc::new(SlotSink { slot, sink })));
        let (tx, rx) = mpsc::channel(limits.push_messages.max(1));
        let (subscribed, _) = watch::channel(0);
        let route = Arc::new(Route {
            slot,
            tenant: tenant.clone(),
            tx,
            queue: Arc::new(PushQueue::default()),
            subscribed,
        });
        shared
            .routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), route.clone());
        let _ = shared.commands.send(Command::Subscribe(id.to_owned()));
        let flusher = tokio::spawn(tenant.outbox.clone().run(tenant.shutdown.clone()));
        let mut tasks = vec![flusher];
        if let Some(sender) = tenant.reference.shared_task(tenant.shutdown.clone()) {
            tasks.push(tokio::spawn(sender));
        }
        if let Some(refresher) = tenant.reference.refresh_task(tenant.shutdown.clone()) {
            tasks.push(tokio::spawn(refresher));
        }
        tasks.push(tokio::spawn(run_tenant(shared.clone(), route, rx)));
        let weak = Arc::downgrade(shared);
        let id = id.to_owned();
        let on_close = Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.detach(&id, slot);
            }
        });
        // The handle's own memory is freed when JS lets go of it (after the
        // release): the trimmer gives that back too.
        let weak = Arc::downgrade(shared);
        let on_drop = Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.released.notify_one();
            }
        });
        Ok((Consumer::started(tenant, tasks, on_close, on_drop), slot))
    }

    /// Link-level figures.
    pub fn status(&self) -> PoolStatus {
        let shared = &self.shared;
        PoolStatus {
            connected: *shared.link.borrow() != 0,
            tenants: shared.routes().len(),
            reconnects: shared.reconnects.load(Relaxed),
            queue_overflows: shared.queue_overflows.load(Relaxed),
            loads_in_flight: shared.config.max_concurrent_loads - shared.gate.available_permits(),
            command_connections: shared
                .command_link
                .as_ref()
                .map_or(0, |c| c.connections_opened()),
        }
    }

    /// Stops the link and every tenant's tasks (their consumers answer
    /// `SHUTDOWN`), and releases the sink. Idempotent.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        shared.shutdown.cancel();
        self.tasks.join().await;
        shared.outbox.set_sink(None);
        *shared.sink.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// How long after a release the trimmer waits for more (releases come in
/// bursts: idleness sweeps, `maxTenants`, a shutdown).
const TRIM_DEBOUNCE: Duration = Duration::from_secs(1);

/// Gives memory freed by released tenants back to the system, once per
/// burst of releases. glibc keeps freed chunks in the arenas of the threads
/// that allocated them (the runtime's workers, interleaved with the tenants
/// that remain), so without this a pool that released most of its tenants
/// keeps most of their RSS (bench row 8f).
async fn trim_after_releases(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.released.notified() => {}
        }
        // The released stores are dropped on blocking threads: let them go first.
        tokio::time::sleep(TRIM_DEBOUNCE).await;
        let _ = tokio::task::spawn_blocking(crate::memory::give_back).await;
    }
}

/// Waits until the live generation is one this tenant's channels are
/// subscribed on; returns it. Pending for ever once the pool is gone.
async fn subscribed_generation(
    link: &mut watch::Receiver<u64>,
    subscribed: &mut watch::Receiver<u64>,
) -> u64 {
    loop {
        let live = *link.borrow_and_update();
        if live != 0 && *subscribed.borrow_and_update() == live {
            return live;
        }
        let changed = tokio::select! {
            r = link.changed() => r,
            r = subscribed.changed() => r,
        };
        if changed.is_err() {
            return std::future::pending().await;
        }
    }
}

/// A pool tenant's task: a session per link generation (or after its own
/// queue overflowed), until the tenant is released.
async fn run_tenant(
    shared: Arc<Shared>,
    route: Arc<Route>,
    mut messages: mpsc::Receiver<PushInfo>,
) {
    let mut link = shared.link.subscribe();
    let tenant = &route.tenant;
    let cancel = tenant.shutdown.clone();
    let mut subscribed = route.subscribed.subscribe();
    let mut last_generation = None;
    loop {
        let generation = tokio::select! {
            _ = cancel.cancelled() => return,
            g = subscribed_generation(&mut link, &mut subscribed) => g,
        };
        let reason = match last_generation {
            None => Reason::Initial,
            Some(g) => {
                if g != generation {
                    Metrics::inc(&tenant.metrics.reconnects);
                }
                Reason::Reconnect
            }
        };
        last_generation = Some(generation);
        tenant.metrics.redis_down.store(false, Relaxed);
        tenant.redis_failed(None);
        let mut watch = link.clone();
        let lost = async move {
            let _ = watch.wait_for(|g| *g != generation).await;
            // The pool logs the loss once, not once per tenant.
            String::new()
        };
        let Some(commands) = shared
            .conn
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            continue;
        };
        let feed = Feed {
            commands,
            messages: &mut messages,
            queue: &route.queue,
            traffic: None,
            lost: lost.boxed(),
        };
        let (end, _) = session(tenant, feed, reason).await;
        let was_connected = tenant.metrics.connected.swap(false, Relaxed);
        if let End::Shutdown = end {
            return;
        }
        if *link.borrow() != generation {
            tenant.metrics.redis_down.store(true, Relaxed);
        }
        if was_connected {
            tenant
                .outbox
                .notice(Notice::Connection { connected: false });
        }
    }
}

/// Sends `tenant`'s message to its queue, by channel.
fn route_message(routes: &HashMap<String, Arc<Route>>, prefix: &str, info: PushInfo) {
    let tenant = match &info.data[..] {
        [redis::Value::BulkString(ch), redis::Value::BulkString(_)] => std::str::from_utf8(ch)
            .ok()
            .and_then(|c| c.strip_prefix(prefix))
            .and_then(|c| c.strip_prefix(':'))
            .and_then(|c| c.rsplit_once(':'))
            .map(|(t, _topic)| t),
        _ => None,
    };
    if let Some(route) = tenant.and_then(|t| routes.get(t)) {
        let limits = route.tenant.config.limits;
        let _ = route.queue.offer(&route.tx, info, &limits);
    }
}

/// Subscribes (or unsubscribes) the channels of `routes`, a chunk of
/// tenants per command.
async fn subscribe_routes(
    conn: &mut MultiplexedConnection,
    routes: &[Arc<Route>],
    subscribe: bool,
) -> redis::RedisResult<()> {
    for chunk in routes.chunks(SUBSCRIBE_CHUNK) {
        let channels: Vec<String> = chunk.iter().flat_map(|r| r.channels()).collect();
        if subscribe {
            conn.subscribe(&channels).await?;
        } else {
            conn.unsubscribe(&channels).await?;
        }
    }
    Ok(())
}

/// Runs queued commands (and any that follow at once) on `conn`.
async fn run_commands(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    generation: u64,
    first: Command,
    rx: &mut mpsc::UnboundedReceiver<Command>,
) -> redis::RedisResult<()> {
    let mut subscribe = Vec::new();
    let mut unsubscribe = Vec::new();
    let mut next = Some(first);
    while let Some(cmd) = next.take() {
        match cmd {
            Command::Subscribe(id) => subscribe.push(id),
            Command::Unsubscribe(id) => unsubscribe.push(id),
        }
        if subscribe.len() + unsubscribe.len() < SUBSCRIBE_CHUNK {
            next = rx.try_recv().ok();
        }
    }
    // An id may have been released and loaded again: the routes now decide.
    let (subs, unsubs) = {
        let routes = shared.routes();
        let subs: Vec<Arc<Route>> = subscribe
            .iter()
            .filter_map(|id| routes.get(id).cloned())
            .collect();
        let unsubs: Vec<String> = unsubscribe
            .into_iter()
            .filter(|id| !routes.contains_key(id))
            .collect();
        (subs, unsubs)
    };
    if !unsubs.is_empty() {
        let channels: Vec<String> = unsubs
            .iter()
            .filter_map(|id| shared.config.for_tenant(id).ok())
            .flat_map(|c| c.channels())
            .collect();
        conn.unsubscribe(&channels).await?;
    }
    if !subs.is_empty() {
        subscribe_routes(conn, &subs, true).await?;
        for r in &subs {
            r.subscribed.send_replace(generation);
        }
    }
    Ok(())
}

/// The link task: connect, subscribe every loaded tenant, route messages and
/// run commands until the link is lost; back off; repeat until shutdown.
async fn run_link(shared: Arc<Shared>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let config = &shared.config.template;
    let prefix = config.channel_prefix.as_str();
    let cancel = shared.shutdown.clone();
    let mut backoff = Backoff::reconnect();
    let mut generation = 0u64;
    let mut ever_connected = false;
    loop {
        let attempt = tokio::select! {
            _ = cancel.cancelled() => return,
            r = tokio::time::timeout(CONNECT_TIMEOUT, async {
                let mut link = open_link(config).await?;
                // Commands queued so far are covered by subscribing every route.
                while commands.try_recv().is_ok() {}
                let routes: Vec<Arc<Route>> = shared.routes().values().cloned().collect();
                subscribe_routes(&mut link.conn, &routes, true).await?;
                let stream_conn = stream_commands(config, &link, None).await?;
                Ok::<_, redis::RedisError>((link, routes, stream_conn))
            }) => r,
        };
        let failure = match attempt {
            Ok(Ok((mut link, routes, stream_conn))) => {
                generation += 1;
                *shared.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(stream_conn);
                for r in &routes {
                    r.subscribed.send_replace(generation);
                }
                shared.link.send_replace(generation);
                if ever_connected {
                    shared.reconnects.fetch_add(1, Relaxed);
                }
                shared.log(
                    if ever_connected { "info" } else { "debug" },
                    format!(
                        "pool subscribed to {} ({} tenants)",
                        config.redis.describe(),
                        routes.len()
                    ),
                );
                drop(routes);
                shared.outbox.notice(Notice::Connection { connected: true });
                ever_connected = true;
                let began = Instant::now();
                let traffic = Traffic::new();
                let mut lost =
                    watch_link(link.conn.clone(), link.master.clone(), config, &traffic).boxed();
                let why = loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        cmd = commands.recv() => {
                            let Some(cmd) = cmd else { return };
                            if let Err(e) = run_commands(&shared, &mut link.conn, generation, cmd, &mut commands).await {
                                break format!("redis (un)subscribe failed: {}", config.redis.describe_error(&e));
                            }
                        }
                        msg = link.messages.recv() => {
                            let Some(first) = msg else { break "redis subscription closed".to_string() };
                            traffic.touch();
                            let routes = shared.routes();
                            let disconnected = drain(&mut link.messages, &link.queue, first, |info| {
                                route_message(&routes, prefix, info)
                            });
                            drop(routes);
                            if disconnected {
                                break "redis connection lost".to_string();
                            }
                            if link.queue.overflowed.load(Relaxed) {
                                shared.queue_overflows.fetch_add(1, Relaxed);
                                break "events arrived faster than they could be routed and the queue bound was hit: reconnecting to resync".to_string();
                            }
                        }
                        why = &mut lost => break why,
                    }
                };
                drop(lost);
                drop(link);
                shared.link.send_replace(0);
                *shared.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
                shared.log("warn", format!("{why} (pool)"));
                shared
                    .outbox
                    .notice(Notice::Connection { connected: false });
                for r in shared.routes().values() {
                    r.tenant.metrics.redis_down.store(true, Relaxed);
                }
                backoff.after_session(began.elapsed());
                None
            }
            Ok(Err(e)) => Some(describe_failure(config, Some(&e))),
            Err(_) => Some(describe_failure(config, None)),
        };
        if let Some(why) = failure {
            let e = CoreError::RedisUnavailable(why);
            shared.outbox.notice(Notice::Error {
                code: e.code().to_owned(),
                message: e.to_string(),
            });
            for r in shared.routes().values() {
                r.tenant.redis_failed(Some(e.clone()));
            }
        }
        if !sleep_or_cancel(&cancel, backoff.next_delay()).await {
            return;
        }
    }
}
