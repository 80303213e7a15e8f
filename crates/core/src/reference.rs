//! The reference cache (SPEC §2 "Reference reads"): profiles, hierarchy, audit
//! logs and historical data, fetched from the Wrapper on a miss and kept with a
//! TTL per type in a byte-bounded moka cache.
//!
//! * A hit ([`ReferenceCache::lookup`]) is a synchronous moka read: it never
//!   waits on a thread pool or the network.
//! * Concurrent misses for one key share one fetch (single-flight).
//! * An invalidation that arrives while a fetch is in flight wins: the fetched
//!   value answers the callers already waiting but is not kept. The proof is in
//!   the ordering: an invalidation sets the flight's flag *then* drops the
//!   entry; a fetch stores the entry *then* reads the flag (and drops what it
//!   stored if the flag is set). Whichever interleaving occurs, no entry
//!   fetched before an invalidation survives it.
//! * Entries are held `ttl + staleIfErrorMs`: past the TTL they are misses, but
//!   a fetch that fails with `WRAPPER_UNAVAILABLE` serves them (stale-if-error).
//! * A 404 is remembered for `ttl.notFound` (and never served stale).
//!
//! Values are kept as JSON text; the JS side parses each hit into a fresh
//! object, so no caller can mutate the cache.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::future::{BoxFuture, FutureExt, Shared};
use moka::sync::Cache;
use moka::Expiry;

use crate::config::Config;
use crate::error::{CoreError, Result};
use crate::ids::{check_path_id, RefKind};
use crate::metrics::{now_ms, Metrics};
use crate::wrapper::WrapperClient;

/// The TTL of entries of `kind`.
fn ttl_of(kind: RefKind, c: &Config) -> Duration {
    match kind {
        RefKind::UserProfile => c.ttl.user_profiles,
        RefKind::Hierarchy => c.ttl.hierarchy,
        RefKind::AuditLog => c.ttl.audit_logs,
        RefKind::Historical => c.ttl.historical_data,
    }
}

/// One cached answer.
#[derive(Debug)]
struct Entry {
    /// JSON text of the object, or `None` for a remembered 404.
    body: Option<Arc<str>>,
    /// Until when this is a hit.
    fresh_until: Instant,
    /// The same instant as epoch ms, for `getCacheExpiry`.
    fresh_until_ms: i64,
    /// How long moka holds it (TTL + stale window).
    hold: Duration,
}

struct HoldExpiry;

impl Expiry<String, Arc<Entry>> for HoldExpiry {
    fn expire_after_create(&self, _k: &String, v: &Arc<Entry>, _now: Instant) -> Option<Duration> {
        Some(v.hold)
    }

    fn expire_after_update(
        &self,
        _k: &String,
        v: &Arc<Entry>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.hold)
    }
}

type FetchResult = Result<Arc<str>>;

/// A fetch in progress, shared by every caller that missed meanwhile.
#[derive(Clone)]
struct Flight {
    /// Set by an invalidation that arrives during the fetch.
    invalidated: Arc<AtomicBool>,
    /// The fetch itself; whoever polls it drives it.
    fut: Shared<BoxFuture<'static, FetchResult>>,
}

/// What a synchronous lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// A fresh entry: its JSON text.
    Hit(Arc<str>),
    /// A fresh remembered 404.
    NotFound,
    /// Nothing fresh: fetch.
    Miss,
}

struct Inner {
    /// The entries, weighted by bytes.
    cache: Cache<String, Arc<Entry>>,
    /// Fetches in flight by key.
    inflight: DashMap<String, Flight>,
    /// TTLs and stale window.
    config: Config,
    /// Where misses go.
    wrapper: WrapperClient,
    /// Hit/miss/coalesced/stale counters.
    metrics: Arc<Metrics>,
}

/// See the module docs. Cheap to clone; every method is safe to call from any
/// thread concurrently.
#[derive(Clone)]
pub struct ReferenceCache {
    inner: Arc<Inner>,
}

impl ReferenceCache {
    /// A cache bounded to `config.max_reference_bytes`.
    pub fn new(config: &Config, wrapper: WrapperClient, metrics: Arc<Metrics>) -> Self {
        let cache = Cache::builder()
            .max_capacity(config.max_reference_bytes)
            .weigher(|k: &String, v: &Arc<Entry>| {
                let bytes = k.len() + v.body.as_ref().map_or(0, |b| b.len()) + 96;
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .expire_after(HoldExpiry)
            .build();
        ReferenceCache {
            inner: Arc::new(Inner {
                cache,
                inflight: DashMap::new(),
                config: config.clone(),
                wrapper,
                metrics,
            }),
        }
    }

    /// Synchronous read of `key`; counts a hit when fresh. Never blocks on I/O.
    pub fn lookup(&self, key: &str) -> Lookup {
        match self.inner.cache.get(key) {
            Some(e) if Instant::now() < e.fresh_until => {
                Metrics::inc(&self.inner.metrics.reference_hits);
                match &e.body {
                    Some(b) => Lookup::Hit(b.clone()),
                    None => Lookup::NotFound,
                }
            }
            _ => Lookup::Miss,
        }
    }

    /// Reads `kind`/`id`: a fresh hit, else one shared Wrapper fetch.
    ///
    /// Errors: `RangeError` for an id that cannot be a path segment (nothing
    /// is requested), then the Wrapper's codes; `WRAPPER_UNAVAILABLE` is
    /// replaced by a held stale value when there is one.
    pub async fn get(&self, kind: RefKind, id: &str) -> FetchResult {
        check_path_id("id", id)?;
        let key = kind.key(id);
        match self.lookup(&key) {
            Lookup::Hit(b) => return Ok(b),
            Lookup::NotFound => return Err(CoreError::NotFound(kind.path(id))),
            Lookup::Miss => {}
        }
        Metrics::inc(&self.inner.metrics.reference_misses);
        let flight = match self.inner.inflight.entry(key.clone()) {
            dashmap::Entry::Occupied(e) => {
                Metrics::inc(&self.inner.metrics.coalesced_requests);
                e.get().clone()
            }
            dashmap::Entry::Vacant(v) => {
                let invalidated = Arc::new(AtomicBool::new(false));
                let fut = self
                    .clone()
                    .fetch(kind, id.to_owned(), key, invalidated.clone())
                    .boxed()
                    .shared();
                v.insert(Flight {
                    invalidated,
                    fut: fut.clone(),
                })
                .clone()
            }
        };
        flight.fut.await
    }

    /// The one fetch behind a [`Flight`].
    async fn fetch(
        self,
        kind: RefKind,
        id: String,
        key: String,
        flag: Arc<AtomicBool>,
    ) -> FetchResult {
        let inner = &self.inner;
        let path = kind.path(&id);
        let result = inner.wrapper.object(&path).await;
        let out = match result {
            Ok(text) => {
                let body: Arc<str> = Arc::from(text);
                let ttl = ttl_of(kind, &inner.config);
                self.store(
                    &key,
                    Some(body.clone()),
                    ttl,
                    ttl + inner.config.stale_if_error,
                    &flag,
                );
                Ok(body)
            }
            Err(CoreError::NotFound(p)) => {
                let ttl = inner.config.ttl.not_found;
                self.store(&key, None, ttl, ttl, &flag);
                Err(CoreError::NotFound(p))
            }
            Err(CoreError::WrapperUnavailable(msg)) => match inner.cache.get(&key) {
                Some(e) if e.body.is_some() => {
                    Metrics::inc(&inner.metrics.stale_served);
                    Ok(e.body.clone().unwrap_or_else(|| Arc::from("{}")))
                }
                _ => Err(CoreError::WrapperUnavailable(msg)),
            },
            Err(e) => Err(e),
        };
        inner
            .inflight
            .remove_if(&key, |_, f| Arc::ptr_eq(&f.invalidated, &flag));
        out
    }

    fn store(
        &self,
        key: &str,
        body: Option<Arc<str>>,
        ttl: Duration,
        hold: Duration,
        flag: &AtomicBool,
    ) {
        if ttl.is_zero() || self.inner.config.max_reference_bytes == 0 {
            return;
        }
        let entry = Entry {
            body,
            fresh_until: Instant::now() + ttl,
            fresh_until_ms: now_ms() + ttl.as_millis() as i64,
            hold,
        };
        self.inner.cache.insert(key.to_owned(), Arc::new(entry));
        if flag.load(SeqCst) {
            self.inner.cache.invalidate(key);
        }
    }

    /// Drops `key`, and marks a fetch in flight for it as invalidated.
    ///
    /// The flight is also forgotten, so a read that starts after this call
    /// makes a new request instead of joining the outdated one.
    pub fn invalidate(&self, key: &str) {
        if let Some((_, f)) = self.inner.inflight.remove(key) {
            f.invalidated.store(true, SeqCst);
        }
        self.inner.cache.invalidate(key);
    }

    /// Drops everything, including the results of fetches in flight.
    pub fn clear(&self) {
        self.inner.inflight.retain(|_, f| {
            f.invalidated.store(true, SeqCst);
            false
        });
        self.inner.cache.invalidate_all();
    }

    /// Epoch ms at which the held entry stops being fresh (in the past for an
    /// entry held only for stale-if-error), or `None` when nothing is held.
    pub fn expiry(&self, key: &str) -> Option<i64> {
        self.inner.cache.get(key).map(|e| e.fresh_until_ms)
    }

    /// (entries, weighted bytes), after running moka's pending maintenance.
    pub fn size(&self) -> (u64, u64) {
        self.inner.cache.run_pending_tasks();
        (
            self.inner.cache.entry_count(),
            self.inner.cache.weighted_size(),
        )
    }
}
