//! The consumer: the handle the binding wraps. It owns one tenant's state
//! ([`Tenant`]: caches, clients, counters) and its background tasks.
//!
//! Lifecycle: [`Consumer::new`] validates and builds (no I/O, no tasks);
//! [`Consumer::start`] installs the replica sink and spawns the flusher and the
//! subscription task on the current tokio runtime; [`Consumer::wait_ready`]
//! resolves after the first full load or fails after `initTimeoutMs` with the
//! cause that is blocking now (the tasks keep trying); [`Consumer::shutdown`]
//! fires the one cancellation token every task selects on, waits for them, and
//! drops the sink, after which nothing of ours holds the Node event loop.
//! Dropping the last clone of a consumer without `shutdown()` (a terminated
//! worker thread) cancels and aborts its tasks the same way.
//!
//! Every argument is validated here, once (ids, amounts, keys: `ids.rs`); the
//! layers below assume valid input.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::Config;
use crate::critical::{CriticalStore, FirstReads};
use crate::error::{CoreError, Result};
use crate::ids::{check_amount, check_idempotency_key, check_path_id, RefKind};
use crate::metrics::{Health, MetricsSnapshot};
use crate::outbox::Sink;
use crate::reference::Lookup;
use crate::tasks::Tasks;
use crate::tenant::{InitState, Tenant};

/// What the clones of one consumer share; dropping it stops the tasks.
struct Handle {
    /// The tenant's state, also held by the tasks.
    tenant: Arc<Tenant>,
    /// Set by the first `start`.
    started: AtomicBool,
    /// Background tasks, joined on shutdown and aborted on drop.
    tasks: Tasks,
    /// Runs once when the consumer closes (shutdown or drop): a pool
    /// tenant's detaches it from the pool (routes, subscriptions).
    on_close: Mutex<Option<OnClose>>,
    /// Runs when the handle itself is dropped (for a JS consumer: when V8
    /// finalises it, after its `shutdown()`): a pool tenant's tells the pool
    /// that the rest of its memory is free (the pool's trimmer, memory.rs).
    on_drop: Mutex<Option<OnClose>>,
}

/// See [`Handle::on_close`].
pub(crate) type OnClose = Box<dyn FnOnce() + Send>;

/// Runs the hook in `slot` if it is still there (at most once).
fn run_once(slot: &Mutex<Option<OnClose>>) {
    let hook = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(hook) = hook {
        hook();
    }
}

impl Handle {
    fn close_hook(&self) {
        run_once(&self.on_close);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.tenant.shutdown.cancel();
        self.close_hook();
        self.tasks.abort();
        self.tenant.outbox.set_sink(None);
        run_once(&self.on_drop);
    }
}

/// One tenant's consumer. Cheap to clone; all methods are thread-safe.
#[derive(Clone)]
pub struct Consumer {
    /// Shared by the clones; the tasks hold only the tenant inside it.
    handle: Arc<Handle>,
}

impl Consumer {
    /// Builds a consumer from validated options. No I/O, no tasks.
    pub fn new(config: Config) -> Result<Consumer> {
        Ok(Consumer {
            handle: Arc::new(Handle {
                tenant: Arc::new(Tenant::new(config)?),
                started: AtomicBool::new(false),
                tasks: Tasks::default(),
                on_close: Mutex::new(None),
                on_drop: Mutex::new(None),
            }),
        })
    }

    /// A consumer whose tasks already run (a pool tenant's: see `pool.rs`).
    /// `start` is a no-op for it; `on_close` runs once when it closes,
    /// `on_drop` when its last clone is dropped.
    pub(crate) fn started(
        tenant: Arc<Tenant>,
        tasks: Vec<JoinHandle<()>>,
        on_close: OnClose,
        on_drop: OnClose,
    ) -> Consumer {
        Consumer {
            handle: Arc::new(Handle {
                tenant,
                started: AtomicBool::new(true),
                tasks: {
                    let t = Tasks::default();
                    t.extend(tasks);
                    t
                },
                on_close: Mutex::new(Some(on_close)),
                on_drop: Mutex::new(Some(on_drop)),
            }),
        }
    }

    fn tenant(&self) -> &Tenant {
        &self.handle.tenant
    }

    /// The validated options.
    pub fn config(&self) -> &Config {
        &self.tenant().config
    }

    /// Installs the sink and spawns the background tasks (once; later calls,
    /// and calls on a pool tenant, are no-ops). Must run inside a tokio runtime.
    pub fn start(&self, sink: Arc<dyn Sink>) -> Result<()> {
        let tenant = &self.handle.tenant;
        if tenant.shutdown.is_cancelled() {
            return Err(CoreError::Shutdown);
        }
        if self.handle.started.swap(true, Relaxed) {
            return Ok(());
        }
        tenant.outbox.set_sink(Some(sink));
        let flusher = tokio::spawn(tenant.outbox.clone().run(tenant.shutdown.clone()));
        let session = tokio::spawn(crate::subscriber::run(tenant.clone()));
        self.handle.tasks.extend([flusher, session]);
        if let Some(sender) = tenant.reference.shared_task(tenant.shutdown.clone()) {
            self.handle.tasks.extend([tokio::spawn(sender)]);
        }
        if let Some(refresher) = tenant.reference.refresh_task(tenant.shutdown.clone()) {
            self.handle.tasks.extend([tokio::spawn(refresher)]);
        }
        Ok(())
    }

    /// Resolves once the first full load is complete; after `initTimeoutMs`
    /// fails with the cause that blocks it now: Redis's (`REDIS_UNAVAILABLE`)
    /// while the subscription is down, else the snapshot's
    /// (`WRAPPER_UNAVAILABLE`, `WRAPPER_AUTH`, `INVALID_RESPONSE`; a snapshot
    /// still in flight is `WRAPPER_UNAVAILABLE`). The tasks keep trying. A
    /// pool tenant fails at once when the Wrapper refuses it (`WRAPPER_AUTH`).
    pub async fn wait_ready(&self) -> Result<()> {
        let tenant = self.tenant();
        let refused = |s: &InitState| {
            tenant.refusal_is_final
                && matches!(
                    s,
                    InitState::Pending {
                        load: Some(CoreError::WrapperAuth(_)),
                        ..
                    }
                )
        };
        let mut rx = tenant.init.subscribe();
        let waited = tokio::time::timeout(tenant.config.init_timeout, async {
            rx.wait_for(|s| !matches!(s, InitState::Pending { .. }) || refused(s))
                .await
                .map(|s| s.clone())
        })
        .await;
        match waited {
            Ok(Ok(InitState::Ready)) => Ok(()),
            Ok(Ok(InitState::Pending { load: Some(e), .. })) => Err(e),
            Ok(_) => Err(CoreError::Shutdown),
            Err(_) => match &*tenant.init.borrow() {
                InitState::Ready => Ok(()),
                InitState::Closed => Err(CoreError::Shutdown),
                InitState::Pending { redis, load } => {
                    if tenant.metrics.redis_down.load(Relaxed) {
                        Err(redis.clone().unwrap_or_else(|| {
                            let tls = if tenant.config.redis.uses_tls() {
                                " (TLS: the connection or its handshake did not complete; is it a TLS server?)"
                            } else {
                                ""
                            };
                            CoreError::RedisUnavailable(format!(
                                "not connected within initTimeoutMs{tls}"
                            ))
                        }))
                    } else {
                        Err(load.clone().unwrap_or_else(|| {
                            CoreError::WrapperUnavailable(
                                "the critical snapshot did not load within initTimeoutMs (still in flight)"
                                    .into(),
                            )
                        }))
                    }
                }
            },
        }
    }

    /// Synchronous reference lookup of `kind`/`id` (see
    /// [`crate::reference::ReferenceCache::lookup`]). A `RangeError`-class error for an id
    /// outside the id rule.
    pub fn reference_lookup(&self, kind: RefKind, id: &str) -> Result<Lookup> {
        check_path_id(kind.arg_name(), id)?;
        Ok(self.tenant().reference.lookup(&kind.key(id)))
    }

    /// [`Consumer::reference_lookup`] for JS's hot tier: the answer and how
    /// long it may be reused (see
    /// [`crate::reference::ReferenceCache::lookup_for`]).
    pub fn reference_lookup_for(&self, kind: RefKind, id: &str) -> Result<(Lookup, Duration)> {
        check_path_id(kind.arg_name(), id)?;
        Ok(self.tenant().reference.lookup_for(&kind.key(id)))
    }

    /// The reference cache's generation counter (see
    /// [`crate::reference::ReferenceCache::generation`]).
    pub fn reference_generation(&self) -> Arc<AtomicU32> {
        self.tenant().reference.generation()
    }

    /// Reference read with single-flight fetch on a miss.
    pub async fn reference_get(&self, kind: RefKind, id: &str) -> Result<Arc<str>> {
        self.check_open()?;
        check_path_id(kind.arg_name(), id)?;
        self.tenant().reference.get(kind, id).await
    }

    /// Batch profile read (SPEC §10): in order, each profile's JSON text or
    /// `None` for an unknown user (see
    /// [`crate::reference::ReferenceCache::get_profiles`]). A `RangeError`-class
    /// error naming `ids[i]` for an id outside the id rule; nothing is read then.
    pub async fn reference_get_profiles(&self, ids: &[String]) -> Result<Vec<Option<Arc<str>>>> {
        self.check_open()?;
        for (i, id) in ids.iter().enumerate() {
            check_path_id(&format!("ids[{i}]"), id)?;
        }
        self.tenant().reference.get_profiles(ids).await
    }

    /// Drops one reference key.
    pub fn invalidate(&self, key: &str) {
        self.tenant().reference.invalidate(key);
    }

    /// Expiry (epoch ms) of a held reference entry.
    pub fn cache_expiry(&self, key: &str) -> Option<i64> {
        self.tenant().reference.expiry(key)
    }

    /// `GET /api/users/{id}/credits` (never cached).
    pub async fn user_credits(&self, user_id: &str) -> Result<f64> {
        self.check_open()?;
        check_path_id("userId", user_id)?;
        self.tenant().wrapper.user_credits(user_id).await
    }

    /// Deducts with `idempotency_key`; see [`WrapperClient::deduct`].
    pub async fn deduct(
        &self,
        user_id: &str,
        amount: f64,
        operation_code: Option<&str>,
        idempotency_key: &str,
    ) -> Result<f64> {
        self.check_open()?;
        check_path_id("userId", user_id)?;
        check_amount(amount)?;
        check_idempotency_key(idempotency_key)?;
        self.tenant()
            .wrapper
            .deduct(user_id, amount, operation_code, idempotency_key)
            .await
    }

    /// Turns `'change'` notices on or off.
    pub fn set_listen_changes(&self, on: bool) {
        self.tenant().outbox.set_listen_changes(on);
    }

    /// Rust-side metrics, with cache sizes. O(1): counters and sizes kept
    /// as they change; the store lock is held for a few loads.
    pub fn metrics(&self) -> MetricsSnapshot {
        let tenant = self.tenant();
        let mut m = tenant.metrics.snapshot();
        let (entries, bytes) = tenant.reference.size();
        m.reference_cache_size = entries;
        m.reference_cache_bytes = bytes;
        m.critical_cache_size = tenant.store().sizes().iter().sum::<usize>() as u64;
        m
    }

    /// Health as the core sees it.
    pub fn health(&self) -> Health {
        self.tenant()
            .metrics
            .health(self.tenant().wrapper.circuit())
    }

    /// Subscribed and resynced.
    pub fn is_connected(&self) -> bool {
        self.tenant().metrics.connected.load(Relaxed)
    }

    /// Reads the Rust-side critical store (for tests and tools).
    pub fn with_store<R>(&self, f: impl FnOnce(&CriticalStore) -> R) -> R {
        f(&self.tenant().store())
    }

    /// True after [`Consumer::shutdown`].
    pub fn is_shut_down(&self) -> bool {
        self.tenant().shutdown.is_cancelled()
    }

    fn check_open(&self) -> Result<()> {
        if self.is_shut_down() {
            Err(CoreError::Shutdown)
        } else {
            Ok(())
        }
    }

    /// Stops every task, closes every connection, releases the sink and
    /// frees the cached data (reads answer nothing afterwards). Idempotent.
    pub async fn shutdown(&self) {
        let tenant = self.tenant();
        tenant.shutdown.cancel();
        self.handle.close_hook();
        tenant.settle_init(InitState::Closed);
        tenant.metrics.connected.store(false, Relaxed);
        self.handle.tasks.join().await;
        tenant.outbox.set_sink(None);
        // The memory goes now, not when the last handle is garbage-collected
        // (a pool that releases thousands of tenants must give it back).
        let old = std::mem::take(&mut *tenant.store_mut());
        tokio::task::spawn_blocking(move || drop(old));
        // This instance's copy only: the fleet keeps the shared tier.
        tenant.reference.clear_local();
    }
}

impl FirstReads for Consumer {
    /// Under the store's read lock, held for the lookup only (no reload holds
    /// it for long), with the batches the outbox has sent
    /// ([`crate::outbox::Outbox::batches_sent`]).
    fn read_store<T>(&self, read: impl FnOnce(&CriticalStore) -> Option<T>) -> (Option<T>, u64) {
        let tenant = self.tenant();
        let store = tenant.store();
        let value = read(&store);
        (value, tenant.outbox.batches_sent())
    }
}
