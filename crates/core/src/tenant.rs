//! One tenant's state, shared by the consumer's handle (`consumer.rs`) and its
//! background tasks (`subscriber.rs`, `reload.rs`, `apply.rs`).
//!
//! Everything here is either immutable (the config), internally synchronised
//! (metrics, caches, the outbox, the replay window) or behind the one lock of
//! the critical store. Lock order, where two are held: the store first, then
//! the outbox's pending delta (so a batch can never be sent between a store
//! write and the delta that mirrors it; see ARCHITECTURE.md).

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::commands::CommandLink;
use crate::config::{Config, Transport};
use crate::critical::CriticalStore;
use crate::delta::Notice;
use crate::error::CoreError;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::reference::ReferenceCache;
use crate::replay::ReplayWindow;
use crate::shared_ref::SharedTier;
use crate::stream::{Keys, StreamId};
use crate::wrapper::WrapperClient;
use std::sync::Arc;

/// Where the first full load stands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum InitState {
    /// Not loaded yet, with the latest failure of each side: `initialize()`
    /// reports the one that is blocking now.
    Pending {
        /// The latest Redis failure (cleared when a connection succeeds).
        redis: Option<CoreError>,
        /// The latest snapshot failure.
        load: Option<CoreError>,
    },
    /// Loaded.
    Ready,
    /// Shut down before or after loading.
    Closed,
}

/// See the module docs.
pub(crate) struct Tenant {
    /// Validated options.
    pub config: Config,
    /// Counters and health flags.
    pub metrics: Arc<Metrics>,
    /// HTTP client of the Wrapper.
    pub wrapper: WrapperClient,
    /// Profiles, hierarchy, audit logs, history.
    pub reference: ReferenceCache,
    /// Costs, roles, access, configs (the authoritative in-process copy).
    /// Written only by the subscription task, in short critical sections: a
    /// reload builds its store off the lock and swaps it in.
    pub store: RwLock<CriticalStore>,
    /// Applied `eventId`s.
    pub replay: ReplayWindow,
    /// Batches for the JS replica.
    pub outbox: Outbox,
    /// The one shutdown signal every task selects on.
    pub shutdown: CancellationToken,
    /// First-load status, watched by `wait_ready`.
    pub init: watch::Sender<InitState>,
    /// Epoch ms of the last rejection log line (rate limit: one per second).
    pub last_reject_log: AtomicI64,
    /// In a tenant pool: the permits that bound how many full loads of the
    /// pool's tenants download at once (a reconnect resyncs them all).
    pub load_gate: Option<Arc<Semaphore>>,
    /// `wait_ready` fails as soon as the Wrapper refuses the tenant
    /// (`WRAPPER_AUTH`) instead of at `initTimeoutMs`: a pool's answer to
    /// "load this tenant" must not make a request wait for a refusal.
    pub refusal_is_final: bool,
    /// With the stream transport: the tenant's keys and where this consumer
    /// stands in its stream.
    pub stream: Option<StreamState>,
}

/// Where a stream-transport consumer stands in its tenant's stream.
pub(crate) struct StreamState {
    /// The tenant's keys and stream channel.
    pub keys: Keys,
    /// This consumer's id, as the owner of leases.
    pub owner: String,
    /// The epoch and the id of the last entry applied (or loaded as of);
    /// `None` before the first load.
    pub position: Mutex<Option<(String, StreamId)>>,
    /// Woken by a lease holder's `snapshot <pos> released` notice (fleet.rs).
    pub wake: Arc<tokio::sync::Notify>,
}

impl StreamState {
    /// The current position.
    pub fn get(&self) -> Option<(String, StreamId)> {
        self.position
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The id of the last entry applied, `None` before the first load.
    pub fn id(&self) -> Option<StreamId> {
        self.get().map(|(_, id)| id)
    }

    /// Moves to `id` if it is after the current position (a load's position
    /// replaces the epoch too).
    pub fn advance(&self, id: StreamId) {
        if let Some((_, at)) = self
            .position
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            if id > *at {
                *at = id;
            }
        }
    }

    /// Sets the position after a full load.
    pub fn set(&self, epoch: String, id: StreamId) {
        let mut p = self.position.lock().unwrap_or_else(|p| p.into_inner());
        let id = match &*p {
            Some((e, at)) if *e == epoch && *at > id => *at,
            _ => id,
        };
        *p = Some((epoch, id));
    }
}

/// The command connection `config` asks for: one with `sharedReference`,
/// none without. Its commands are bounded by `requestTimeoutMs` (at least
/// 250 ms, at most 2 s): a slow Redis costs a read at most that before the
/// shared tier is skipped.
pub(crate) fn command_link(config: &Config) -> Option<Arc<CommandLink>> {
    config.shared_reference.then(|| {
        let timeout = config
            .request_timeout
            .clamp(Duration::from_millis(250), Duration::from_secs(2));
        Arc::new(CommandLink::new(config.redis.clone(), timeout))
    })
}

impl Tenant {
    /// A tenant's state before any task runs, with its own HTTP client (and,
    /// with `sharedReference`, its own command connection, opened on first
    /// use).
    pub fn new(config: Config) -> crate::error::Result<Tenant> {
        let http = WrapperClient::http_client(&config)?;
        let commands = command_link(&config);
        Tenant::shared(config, http, None, CancellationToken::new(), commands)
    }

    /// A tenant's state over shared parts (a pool's): the HTTP client, the
    /// load permits, a shutdown token (a child of the pool's), and the
    /// command connection of the shared reference tier (used only with
    /// `sharedReference`).
    pub fn shared(
        config: Config,
        http: reqwest::Client,
        load_gate: Option<Arc<Semaphore>>,
        shutdown: CancellationToken,
        commands: Option<Arc<CommandLink>>,
    ) -> crate::error::Result<Tenant> {
        let metrics = Arc::new(Metrics::default());
        metrics.redis_down.store(true, Relaxed);
        let wrapper = WrapperClient::with_http(&config, metrics.clone(), http)?;
        let stream = (config.transport == Transport::Stream).then(|| StreamState {
            keys: Keys::new(&config.channel_prefix, &config.tenant_id),
            owner: uuid::Uuid::new_v4().simple().to_string(),
            position: Mutex::new(None),
            wake: Arc::default(),
        });
        let tier = commands
            .filter(|_| config.shared_reference)
            .map(|link| SharedTier::new(&config, link));
        let reference = ReferenceCache::new(&config, wrapper.clone(), metrics.clone(), tier);
        let (init, _) = watch::channel(InitState::Pending {
            redis: None,
            load: None,
        });
        Ok(Tenant {
            config,
            metrics,
            wrapper,
            reference,
            store: RwLock::new(CriticalStore::default()),
            replay: ReplayWindow::default(),
            outbox: Outbox::default(),
            shutdown,
            init,
            last_reject_log: AtomicI64::new(0),
            load_gate,
            refusal_is_final: false,
            stream,
        })
    }

    /// Sends a log line to the JS logger. `msg` must not hold secrets.
    pub fn log(&self, level: &'static str, msg: impl Into<String>) {
        self.outbox.notice(Notice::Log {
            level,
            msg: msg.into(),
        });
    }

    /// Reads the critical store (poison-tolerant: every mutation completes
    /// before it could panic-unwind, so the data stays consistent).
    pub fn store(&self) -> RwLockReadGuard<'_, CriticalStore> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the critical store (the subscription task only).
    pub fn store_mut(&self) -> RwLockWriteGuard<'_, CriticalStore> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Records (or, with `None`, clears) why Redis is not usable yet.
    pub fn redis_failed(&self, e: Option<CoreError>) {
        self.init.send_if_modified(|s| match s {
            InitState::Pending { redis, .. } => {
                *redis = e;
                true
            }
            _ => false,
        });
    }

    /// Records why the first snapshot has not loaded yet.
    pub fn load_failed(&self, e: CoreError) {
        self.init.send_if_modified(|s| match s {
            InitState::Pending { load, .. } => {
                *load = Some(e);
                true
            }
            _ => false,
        });
    }

    /// Marks the first load done (or the consumer closed); false when it
    /// already was.
    pub fn settle_init(&self, to: InitState) -> bool {
        self.init.send_if_modified(|s| {
            let pending = matches!(s, InitState::Pending { .. });
            if pending {
                *s = to;
            }
            pending
        })
    }

    /// Sends a background error to `'error'` listeners (or `logger.error`).
    pub fn report(&self, e: &CoreError, context: &str) {
        self.outbox.notice(Notice::Error {
            code: e.code().to_owned(),
            message: format!("{context}{e}"),
        });
    }
}
