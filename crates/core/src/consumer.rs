//! The consumer: owns one tenant's caches, clients and background tasks, and
//! is the API the binding wraps.
//!
//! Lifecycle: [`Consumer::new`] validates and builds (no I/O, no tasks);
//! [`Consumer::start`] installs the replica sink and spawns the flusher and the
//! subscription task on the current tokio runtime; [`Consumer::wait_ready`]
//! resolves after the first full load or fails after `initTimeoutMs` with the
//! latest cause (the tasks keep trying); [`Consumer::shutdown`] fires the one
//! cancellation token every task selects on, waits for them, and drops the
//! sink, after which nothing of ours holds the Node event loop.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::critical::CriticalStore;
use crate::delta::Notice;
use crate::error::{CoreError, Result};
use crate::ids::RefKind;
use crate::metrics::{Health, Metrics, MetricsSnapshot};
use crate::outbox::{Outbox, Sink};
use crate::reference::{Lookup, ReferenceCache};
use crate::replay::ReplayWindow;
use crate::wrapper::WrapperClient;

/// Where the first full load stands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum InitState {
    /// Not loaded yet; the latest failure, if any.
    Pending(Option<CoreError>),
    /// Loaded.
    Ready,
    /// Shut down before or after loading.
    Closed,
}

/// State shared by the consumer's handle and its tasks.
pub(crate) struct Shared {
    /// Validated options.
    pub config: Config,
    /// Counters and health flags.
    pub metrics: Arc<Metrics>,
    /// HTTP client of the Wrapper.
    pub wrapper: WrapperClient,
    /// Profiles, hierarchy, audit logs, history.
    pub reference: ReferenceCache,
    /// Costs, roles, access, configs (the authoritative in-process copy).
    pub store: Mutex<CriticalStore>,
    /// Applied `eventId`s.
    pub replay: ReplayWindow,
    /// Batches for the JS replica.
    pub outbox: Outbox,
    /// The one shutdown signal.
    pub shutdown: CancellationToken,
    /// First-load status, watched by `wait_ready`.
    pub init: watch::Sender<InitState>,
    /// Set by the first `start`.
    pub started: AtomicBool,
    /// Background tasks, joined on shutdown.
    pub tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Epoch ms of the last rejection log line (rate limit: one per second).
    pub last_reject_log: AtomicI64,
}

impl Shared {
    /// Sends a log line to the JS logger. `msg` must not hold secrets.
    pub fn log(&self, level: &'static str, msg: impl Into<String>) {
        self.outbox.notice(Notice::Log {
            level,
            msg: msg.into(),
        });
    }

    /// Locks the critical store (poison-tolerant: the data stays consistent
    /// because every mutation completes before it can panic-unwind).
    pub fn store(&self) -> MutexGuard<'_, CriticalStore> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records why the first load has not happened yet.
    pub fn init_failed(&self, e: CoreError) {
        self.init.send_if_modified(|s| match s {
            InitState::Pending(last) => {
                *last = Some(e);
                true
            }
            _ => false,
        });
    }
}

/// One tenant's consumer. Cheap to clone; all methods are thread-safe.
#[derive(Clone)]
pub struct Consumer {
    shared: Arc<Shared>,
}

impl Consumer {
    /// Builds a consumer from validated options. No I/O, no tasks.
    pub fn new(config: Config) -> Result<Consumer> {
        let metrics = Arc::new(Metrics::default());
        metrics.redis_down.store(true, Relaxed);
        let wrapper = WrapperClient::new(&config, metrics.clone())?;
        let reference = ReferenceCache::new(&config, wrapper.clone(), metrics.clone());
        let (init, _) = watch::channel(InitState::Pending(None));
        Ok(Consumer {
            shared: Arc::new(Shared {
                config,
                metrics,
                wrapper,
                reference,
                store: Mutex::new(CriticalStore::default()),
                replay: ReplayWindow::default(),
                outbox: Outbox::default(),
                shutdown: CancellationToken::new(),
                init,
                started: AtomicBool::new(false),
                tasks: Mutex::new(Vec::new()),
                last_reject_log: AtomicI64::new(0),
            }),
        })
    }

    /// The validated options.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Installs the sink and spawns the background tasks (once; later calls
    /// are no-ops). Must run inside a tokio runtime.
    pub fn start(&self, sink: Arc<dyn Sink>) -> Result<()> {
        if self.shared.shutdown.is_cancelled() {
            return Err(CoreError::Shutdown);
        }
        if self.shared.started.swap(true, Relaxed) {
            return Ok(());
        }
        self.shared.outbox.set_sink(Some(sink));
        let flusher = tokio::spawn(self.shared.outbox.clone().run(self.shared.shutdown.clone()));
        let session = tokio::spawn(crate::subscriber::run(self.shared.clone()));
        let mut tasks = self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.push(flusher);
        tasks.push(session);
        Ok(())
    }

    /// Resolves once the first full load is complete; after `initTimeoutMs`
    /// fails with the latest cause (`REDIS_UNAVAILABLE`, `WRAPPER_UNAVAILABLE`,
    /// `WRAPPER_AUTH`, `INVALID_RESPONSE`) while the tasks keep trying.
    pub async fn wait_ready(&self) -> Result<()> {
        let mut rx = self.shared.init.subscribe();
        let waited = tokio::time::timeout(self.shared.config.init_timeout, async {
            rx.wait_for(|s| !matches!(s, InitState::Pending(_)))
                .await
                .map(|s| *s == InitState::Ready)
        })
        .await;
        match waited {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(CoreError::Shutdown),
            Err(_) => match &*self.shared.init.borrow() {
                InitState::Ready => Ok(()),
                InitState::Closed => Err(CoreError::Shutdown),
                InitState::Pending(Some(e)) => Err(e.clone()),
                InitState::Pending(None) => Err(CoreError::RedisUnavailable(
                    "not connected within initTimeoutMs".into(),
                )),
            },
        }
    }

    /// Synchronous reference lookup (see [`ReferenceCache::lookup`]).
    pub fn reference_lookup(&self, key: &str) -> Lookup {
        self.shared.reference.lookup(key)
    }

    /// Reference read with single-flight fetch on a miss.
    pub async fn reference_get(&self, kind: RefKind, id: &str) -> Result<Arc<str>> {
        self.check_open()?;
        self.shared.reference.get(kind, id).await
    }

    /// Drops one reference key.
    pub fn invalidate(&self, key: &str) {
        self.shared.reference.invalidate(key);
    }

    /// Expiry (epoch ms) of a held reference entry.
    pub fn cache_expiry(&self, key: &str) -> Option<i64> {
        self.shared.reference.expiry(key)
    }

    /// `GET /api/users/{id}/credits` (never cached).
    pub async fn user_credits(&self, user_id: &str) -> Result<f64> {
        self.check_open()?;
        self.shared.wrapper.user_credits(user_id).await
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
        self.shared
            .wrapper
            .deduct(user_id, amount, operation_code, idempotency_key)
            .await
    }

    /// Turns `'change'` notices on or off.
    pub fn set_listen_changes(&self, on: bool) {
        self.shared.outbox.set_listen_changes(on);
    }

    /// Rust-side metrics, with cache sizes.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut m = self.shared.metrics.snapshot();
        let (entries, bytes) = self.shared.reference.size();
        m.reference_cache_size = entries;
        m.reference_cache_bytes = bytes;
        m.critical_cache_size = self.shared.store().sizes().iter().sum::<usize>() as u64;
        m
    }

    /// Health as the core sees it.
    pub fn health(&self) -> Health {
        self.shared.metrics.health(self.shared.wrapper.circuit())
    }

    /// Subscribed and resynced.
    pub fn is_connected(&self) -> bool {
        self.shared.metrics.connected.load(Relaxed)
    }

    /// A user's access as the store holds it now, with the number of replica
    /// batches sent when it was read (see [`crate::outbox::Outbox::batches_sent`]):
    /// the JS replica may keep the answer only if it has applied that many.
    pub fn user_access(&self, user_id: &str) -> (Option<crate::model::Access>, u64) {
        let store = self.shared.store();
        let access = store.user_access(user_id).cloned();
        (access, self.shared.outbox.batches_sent())
    }

    /// Reads the Rust-side critical store (for tests and tools).
    pub fn with_store<R>(&self, f: impl FnOnce(&CriticalStore) -> R) -> R {
        f(&self.shared.store())
    }

    /// True after [`Consumer::shutdown`].
    pub fn is_shut_down(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    fn check_open(&self) -> Result<()> {
        if self.is_shut_down() {
            Err(CoreError::Shutdown)
        } else {
            Ok(())
        }
    }

    /// Stops every task, closes every connection and releases the sink.
    /// Idempotent.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.init.send_if_modified(|s| {
            let pending = matches!(s, InitState::Pending(_));
            if pending {
                *s = InitState::Closed;
            }
            pending
        });
        self.shared.metrics.connected.store(false, Relaxed);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.shared.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(2), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.shared.outbox.set_sink(None);
    }
}
