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
//! * The byte bound (`maxReferenceBytes`) holds whenever it is observed, not
//!   only after moka's maintenance has run: an entry larger than the bound is
//!   served but never cached; every other insert runs moka's pending
//!   maintenance (evictions) on the inserting task, under one write lock, and
//!   only then counts the entry — and only if it is still held and fits. The
//!   counters ([`ReferenceCache::size`]) are atomics kept by those inserts and
//!   by moka's eviction listener (every removal, whatever its cause), so
//!   reading them is O(1) and runs no cache maintenance on the caller's thread
//!   (the JS thread, for `getMetrics()`).
//!
//! Values are kept as JSON text; the JS side parses each hit into a fresh
//! object, so no caller can mutate the cache.
//!
//! With `sharedReference` a fetch first asks the shared tier in Redis
//! (`shared_ref.rs`): an entry there is taken with the time it has left (never
//! more than this instance's own TTL for its kind), and a fetch that goes to
//! the Wrapper writes its answer there, fenced, for the rest of the fleet.
//! Invalidations and clears reach the shared tier too; dropping the cache on
//! shutdown ([`ReferenceCache::clear_local`]) does not.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::future::{BoxFuture, FutureExt, Shared};
use moka::sync::Cache;
use moka::Expiry;

use crate::config::Config;
use crate::error::{CoreError, Result};
use crate::ids::{parse_key, RefKind};
use crate::metrics::{now_ms, Metrics};
use crate::shared_ref::{Begin, SharedTier, Ticket, Written, NOT_FOUND_VALUE};
use crate::wrapper::{WrapperClient, MAX_BATCH_IDS};

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
    /// Its weight in bytes (key, body and a fixed overhead), as counted.
    weight: u64,
    /// With `refreshAheadRatio`: a hit from this instant on is answered and
    /// also refreshed in the background (`None`: never).
    refresh_after: Option<Instant>,
    /// Set by the hit that asked for this entry's refresh: once per entry.
    refreshing: AtomicBool,
    /// True while this entry is included in [`Counters`]: set by the insert
    /// once it is known to be held, taken (swapped to false) by whichever of
    /// the eviction listener or the insert's own re-check removes it from the
    /// counters, so it is subtracted exactly once.
    counted: AtomicBool,
}

/// Fixed bytes added to each entry's weight for the map's own bookkeeping.
const ENTRY_OVERHEAD: u64 = 96;

/// The weight of an entry for `key` with `body`.
fn weight_of(key: &str, body: Option<&str>) -> u64 {
    (key.len() + body.map_or(0, str::len)) as u64 + ENTRY_OVERHEAD
}

/// What the cache holds, kept without moka's maintenance (see the module docs).
#[derive(Debug, Default)]
struct Counters {
    /// Entries counted.
    entries: AtomicU64,
    /// Sum of their weights; never above `maxReferenceBytes`.
    bytes: AtomicU64,
}

impl Counters {
    /// Removes `e` from the counts if it is still counted.
    fn uncount(&self, e: &Entry) {
        if e.counted.swap(false, SeqCst) {
            self.bytes.fetch_sub(e.weight, SeqCst);
            self.entries.fetch_sub(1, SeqCst);
        }
    }
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

/// Requests (batch or single) one batch read has in flight at most.
pub const BATCH_CONCURRENCY: usize = 8;

/// One batch profiles request, shared by the flights of its ids: the profiles
/// by id, or `None` when the Wrapper does not have the endpoint.
type Chunk = Shared<BoxFuture<'static, Result<Option<Arc<HashMap<String, String>>>>>>;

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
    /// The entries, weighted by bytes. Built on the first insert: an empty
    /// moka cache costs about 35 KB, which a pool of thousands of tenants
    /// that never read reference data should not pay.
    cache: OnceLock<Cache<String, Arc<Entry>>>,
    /// Entries and bytes held, for `size()`.
    counters: Arc<Counters>,
    /// Serialises inserts with their maintenance, so that no two inserts can
    /// each find room for themselves in the same free bytes.
    write: Mutex<()>,
    /// Fetches in flight by key.
    inflight: DashMap<String, Flight>,
    /// TTLs and stale window.
    config: Config,
    /// Where misses go.
    wrapper: WrapperClient,
    /// Hit/miss/coalesced/stale counters.
    metrics: Arc<Metrics>,
    /// With `sharedReference`: the tier in Redis.
    shared: Option<SharedTier>,
    /// With `refreshAheadRatio`: keys of hot entries to refresh, from the
    /// (synchronous) hit to the refresher task.
    refresh_tx: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Its receiving end, taken by [`ReferenceCache::refresh_task`].
    refresh_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// Set once the Wrapper answered the batch profiles endpoint with 404 or
    /// 405: it does not have it, and batch reads fetch one by one from then on.
    batch_missing: AtomicBool,
}

/// See the module docs. Cheap to clone; every method is safe to call from any
/// thread concurrently.
#[derive(Clone)]
pub struct ReferenceCache {
    inner: Arc<Inner>,
}

impl ReferenceCache {
    /// A cache bounded to `config.max_reference_bytes` (nothing is allocated
    /// for the entries until the first one is stored), over `shared` when
    /// given.
    pub fn new(
        config: &Config,
        wrapper: WrapperClient,
        metrics: Arc<Metrics>,
        shared: Option<SharedTier>,
    ) -> Self {
        let (refresh_tx, refresh_rx) = if config.refresh_ahead_ratio > 0.0 {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        ReferenceCache {
            inner: Arc::new(Inner {
                refresh_tx,
                refresh_rx: Mutex::new(refresh_rx),
                cache: OnceLock::new(),
                counters: Arc::new(Counters::default()),
                write: Mutex::new(()),
                inflight: DashMap::new(),
                config: config.clone(),
                wrapper,
                metrics,
                shared,
                batch_missing: AtomicBool::new(false),
            }),
        }
    }

    /// The shared tier, when `sharedReference` is on.
    pub fn shared(&self) -> Option<&SharedTier> {
        self.inner.shared.as_ref()
    }

    /// The task that sends this cache's invalidations to the shared tier
    /// (`None` without one); it ends when `cancel` fires.
    pub fn shared_task(
        &self,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.inner.shared.clone().map(|t| t.run(cancel))
    }

    /// The task that refreshes hot entries ahead of their expiry (`None`
    /// without `refreshAheadRatio`, or when taken already); it ends when
    /// `cancel` fires. A refresh is an ordinary single-flight fetch of the
    /// key: an invalidation while it runs wins as for any fetch.
    pub fn refresh_task(
        &self,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let mut rx = self
            .inner
            .refresh_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let me = self.clone();
        Some(async move {
            loop {
                let key = tokio::select! {
                    _ = cancel.cancelled() => return,
                    k = rx.recv() => match k { Some(k) => k, None => return },
                };
                let Some((kind, id)) = parse_key(&key) else {
                    continue;
                };
                let me = me.clone();
                let id = id.to_owned();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = me.flight(kind, &id) => {}
                    }
                });
            }
        })
    }

    /// The held entry of `key`, if any.
    fn held(&self, key: &str) -> Option<Arc<Entry>> {
        self.inner.cache.get().and_then(|c| c.get(key))
    }

    /// The moka cache, built on first use.
    fn entries(&self) -> &Cache<String, Arc<Entry>> {
        let inner = &self.inner;
        inner.cache.get_or_init(|| {
            let counters = inner.counters.clone();
            Cache::builder()
                .max_capacity(inner.config.max_reference_bytes)
                .weigher(|_k: &String, v: &Arc<Entry>| u32::try_from(v.weight).unwrap_or(u32::MAX))
                .expire_after(HoldExpiry)
                .eviction_listener(move |_k, v: Arc<Entry>, _cause| counters.uncount(&v))
                .build()
        })
    }

    /// Synchronous read of `key`; counts a hit when fresh. Never blocks on I/O.
    pub fn lookup(&self, key: &str) -> Lookup {
        match self.held(key) {
            Some(e) if Instant::now() < e.fresh_until => {
                Metrics::inc(&self.inner.metrics.reference_hits);
                if e.refresh_after.is_some_and(|t| Instant::now() >= t)
                    && !e.refreshing.swap(true, SeqCst)
                {
                    if let Some(tx) = &self.inner.refresh_tx {
                        let _ = tx.send(key.to_owned());
                    }
                }
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
    /// `id` must follow the id rule (the consumer checks it). Errors: the
    /// Wrapper's codes; `WRAPPER_UNAVAILABLE` is replaced by a held stale
    /// value when there is one.
    pub async fn get(&self, kind: RefKind, id: &str) -> FetchResult {
        let key = kind.key(id);
        match self.lookup(&key) {
            Lookup::Hit(b) => return Ok(b),
            Lookup::NotFound => return Err(CoreError::NotFound(kind.path(id))),
            Lookup::Miss => {}
        }
        Metrics::inc(&self.inner.metrics.reference_misses);
        self.flight(kind, id).await
    }

    /// Reads the profiles of `ids` (SPEC §10 batch reads): in order, each
    /// the profile's JSON text or `None` for a user the Wrapper does not know.
    ///
    /// Hits come from the cache. Each distinct id that misses joins the fetch
    /// in flight for its key, or becomes a flight of its own whose answer
    /// comes from one batch request for the new misses (at most
    /// [`MAX_BATCH_IDS`] ids per request, at most [`BATCH_CONCURRENCY`]
    /// requests at a time), so single-flight and invalidation-wins hold per
    /// id exactly as for [`ReferenceCache::get`]. When the Wrapper answers the
    /// batch endpoint with 404 or 405 this is remembered, and the misses are
    /// ordinary single fetches, [`BATCH_CONCURRENCY`] at a time.
    ///
    /// Hits and misses are counted per distinct id. The ids must follow the
    /// id rule (the consumer checks them). Errors: the first failure of any
    /// id other than "unknown" (a held stale value answers
    /// `WRAPPER_UNAVAILABLE` for its id, as for a single read).
    ///
    /// Batch answers are kept locally only: the shared tier (if any) is asked
    /// and written by single reads.
    pub async fn get_profiles(&self, ids: &[String]) -> Result<Vec<Option<Arc<str>>>> {
        let kind = RefKind::UserProfile;
        // Distinct ids in order of first appearance, and each position's one.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut distinct: Vec<&str> = Vec::new();
        let positions: Vec<usize> = ids
            .iter()
            .map(|id| {
                *index.entry(id.as_str()).or_insert_with(|| {
                    distinct.push(id.as_str());
                    distinct.len() - 1
                })
            })
            .collect();
        let mut answers: Vec<Option<Option<Arc<str>>>> = vec![None; distinct.len()];
        let mut waits: Vec<(usize, Shared<BoxFuture<'static, FetchResult>>)> = Vec::new();
        // The new flights wait for the plan: the batch requests, built once
        // every new flight is claimed.
        let (plan_tx, plan_rx) = futures::channel::oneshot::channel::<Arc<Vec<Chunk>>>();
        let plan = plan_rx.shared();
        let gate = Arc::new(tokio::sync::Semaphore::new(BATCH_CONCURRENCY));
        let mut batch: Vec<String> = Vec::new();
        for (d, id) in distinct.iter().enumerate() {
            let key = kind.key(id);
            match self.lookup(&key) {
                Lookup::Hit(b) => {
                    answers[d] = Some(Some(b));
                    continue;
                }
                Lookup::NotFound => {
                    answers[d] = Some(None);
                    continue;
                }
                Lookup::Miss => {}
            }
            Metrics::inc(&self.inner.metrics.reference_misses);
            let fut = match self.inner.inflight.entry(key.clone()) {
                dashmap::Entry::Occupied(e) => {
                    Metrics::inc(&self.inner.metrics.coalesced_requests);
                    e.get().fut.clone()
                }
                dashmap::Entry::Vacant(v) => {
                    let invalidated = Arc::new(AtomicBool::new(false));
                    let chunk = batch.len() / MAX_BATCH_IDS;
                    batch.push((*id).to_owned());
                    let fut = self
                        .clone()
                        .batched(
                            (*id).to_owned(),
                            key,
                            invalidated.clone(),
                            plan.clone(),
                            chunk,
                            gate.clone(),
                        )
                        .boxed()
                        .shared();
                    v.insert(Flight {
                        invalidated,
                        fut: fut.clone(),
                    });
                    fut
                }
            };
            waits.push((d, fut));
        }
        let chunks: Vec<Chunk> = batch
            .chunks(MAX_BATCH_IDS)
            .map(|ids| {
                self.clone()
                    .chunk(ids.to_vec(), gate.clone())
                    .boxed()
                    .shared()
            })
            .collect();
        let _ = plan_tx.send(Arc::new(chunks));
        let results =
            futures::future::join_all(waits.into_iter().map(|(d, f)| f.map(move |r| (d, r)))).await;
        let mut failure = None;
        for (d, r) in results {
            match r {
                Ok(b) => answers[d] = Some(Some(b)),
                Err(CoreError::NotFound(_)) => answers[d] = Some(None),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(positions
            .into_iter()
            .map(|d| answers[d].clone().flatten())
            .collect())
    }

    /// One batch profiles request for `ids` (none once the endpoint is known
    /// to be missing), within the batch's `gate`.
    async fn chunk(
        self,
        ids: Vec<String>,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> Result<Option<Arc<HashMap<String, String>>>> {
        let _permit = gate.acquire_owned().await;
        if self.inner.batch_missing.load(SeqCst) {
            return Ok(None);
        }
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let answer = self.inner.wrapper.profiles(&refs).await?;
        if answer.is_none() {
            self.inner.batch_missing.store(true, SeqCst);
        }
        Ok(answer.map(Arc::new))
    }

    /// The flight of one id of a batch read: its answer from its chunk of
    /// the batch, kept as a single fetch's would be (an invalidation that
    /// arrived meanwhile wins); a single fetch when the Wrapper has no batch
    /// endpoint.
    async fn batched(
        self,
        id: String,
        key: String,
        flag: Arc<AtomicBool>,
        plan: Shared<futures::channel::oneshot::Receiver<Arc<Vec<Chunk>>>>,
        chunk: usize,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> FetchResult {
        let inner = &self.inner;
        let kind = RefKind::UserProfile;
        let answer = match plan.await {
            Ok(chunks) => chunks[chunk].clone().await,
            Err(_) => Err(CoreError::WrapperUnavailable(
                "GET /api/users/profiles: batch read abandoned".into(),
            )),
        };
        let out = match answer {
            Ok(None) => {
                let _permit = gate.acquire_owned().await;
                // The single fetch ends the flight itself.
                return self.fetch(kind, id, key, flag).await;
            }
            Ok(Some(profiles)) => match profiles.get(&id) {
                Some(text) => {
                    let body: Arc<str> = Arc::from(text.as_str());
                    let ttl = ttl_of(kind, &inner.config);
                    self.store(&key, Some(body.clone()), ttl, &flag);
                    Ok(body)
                }
                None => {
                    let ttl = inner.config.ttl.not_found;
                    self.store(&key, None, ttl, &flag);
                    Err(CoreError::NotFound(kind.path(&id)))
                }
            },
            Err(e) => self.failed(&key, e),
        };
        self.land(&key, &flag);
        out
    }

    /// Joins the fetch in flight for `kind`/`id`, or starts it.
    async fn flight(&self, kind: RefKind, id: &str) -> FetchResult {
        let key = kind.key(id);
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
        let ticket = match &inner.shared {
            None => None,
            Some(tier) => match tier.begin(&key).await {
                Begin::Hit { body, remaining } => {
                    Metrics::inc(&inner.metrics.shared_hits);
                    let out = self.keep_shared(kind, &path, &key, body, remaining, &flag);
                    self.land(&key, &flag);
                    return out;
                }
                Begin::Fetch(ticket) => {
                    Metrics::inc(&inner.metrics.shared_misses);
                    Some(ticket)
                }
                Begin::Skip => None,
            },
        };
        let result = inner.wrapper.object(&path).await;
        let out = match result {
            Ok(text) => {
                let body: Arc<str> = Arc::from(text);
                let ttl = ttl_of(kind, &inner.config);
                if self.share(ticket, Some(&body), ttl, &flag).await {
                    self.store(&key, Some(body.clone()), ttl, &flag);
                }
                Ok(body)
            }
            Err(CoreError::NotFound(p)) => {
                let ttl = inner.config.ttl.not_found;
                if self.share(ticket, Some(NOT_FOUND_VALUE), ttl, &flag).await {
                    self.store(&key, None, ttl, &flag);
                }
                Err(CoreError::NotFound(p))
            }
            Err(e) => {
                self.share(ticket, None, Duration::ZERO, &flag).await;
                self.failed(&key, e)
            }
        };
        self.land(&key, &flag);
        out
    }

    /// The answer to a failed fetch: a held stale value for
    /// `WRAPPER_UNAVAILABLE` (stale-if-error), else the error.
    fn failed(&self, key: &str, e: CoreError) -> FetchResult {
        let inner = &self.inner;
        match e {
            CoreError::WrapperUnavailable(msg) => match self.held(key) {
                Some(e) if e.body.is_some() => {
                    Metrics::inc(&inner.metrics.stale_served);
                    Ok(e.body.clone().unwrap_or_else(|| Arc::from("{}")))
                }
                _ => Err(CoreError::WrapperUnavailable(msg)),
            },
            e => Err(e),
        }
    }

    /// Ends the flight of `key` whose flag is `flag` (not a later one).
    fn land(&self, key: &str, flag: &Arc<AtomicBool>) {
        self.inner
            .inflight
            .remove_if(key, |_, f| Arc::ptr_eq(&f.invalidated, flag));
    }

    /// Keeps an entry of the shared tier locally for the time it has left
    /// there, at most this instance's TTL for its kind.
    fn keep_shared(
        &self,
        kind: RefKind,
        path: &str,
        key: &str,
        body: Option<Arc<str>>,
        remaining: Option<Duration>,
        flag: &AtomicBool,
    ) -> FetchResult {
        let c = &self.inner.config;
        match body {
            Some(body) => {
                let own = ttl_of(kind, c);
                let ttl = remaining.map_or(own, |r| r.min(own));
                self.store(key, Some(body.clone()), ttl, flag);
                Ok(body)
            }
            None => {
                let own = c.ttl.not_found;
                let ttl = remaining.map_or(own, |r| r.min(own));
                self.store(key, None, ttl, flag);
                Err(CoreError::NotFound(path.to_owned()))
            }
        }
    }

    /// Writes a fetched answer to the shared tier (fenced) and releases the
    /// lease; with `value` `None`, or when an invalidation arrived during the
    /// fetch, only releases the lease. False when the fence refused the
    /// answer: it is outdated, so it is not kept here either (and an older
    /// entry held for stale-if-error goes too).
    async fn share(
        &self,
        ticket: Option<Ticket>,
        value: Option<&str>,
        ttl: Duration,
        flag: &AtomicBool,
    ) -> bool {
        let (Some(tier), Some(ticket)) = (&self.inner.shared, ticket) else {
            return true;
        };
        let key = ticket.key().to_owned();
        let value = value.filter(|_| !flag.load(SeqCst));
        if tier.finish(ticket, value, ttl).await == Written::Fenced {
            if let Some(c) = self.inner.cache.get() {
                c.invalidate(&key);
            }
            return false;
        }
        true
    }

    /// Caches a fetched answer for `ttl`, within the byte bound (see the
    /// module docs); an object is held `staleIfErrorMs` longer (stale-if-error),
    /// a remembered 404 is not. Runs moka's maintenance on the calling
    /// (fetching) task.
    fn store(&self, key: &str, body: Option<Arc<str>>, ttl: Duration, flag: &AtomicBool) {
        let inner = &self.inner;
        let hold = match body {
            Some(_) => ttl + inner.config.stale_if_error,
            None => ttl,
        };
        let cache = self.entries();
        let max = inner.config.max_reference_bytes;
        let weight = weight_of(key, body.as_deref());
        if ttl.is_zero() || weight > max {
            // Served to the callers, not kept; an older answer must not stay either.
            cache.invalidate(key);
            return;
        }
        let ratio = inner.config.refresh_ahead_ratio;
        let entry = Arc::new(Entry {
            refresh_after: (ratio > 0.0 && body.is_some())
                .then(|| Instant::now() + ttl.mul_f64(ratio)),
            refreshing: AtomicBool::new(false),
            body,
            fresh_until: Instant::now() + ttl,
            fresh_until_ms: now_ms() + ttl.as_millis() as i64,
            hold,
            weight,
            counted: AtomicBool::new(false),
        });
        {
            let _write = inner.write.lock().unwrap_or_else(|p| p.into_inner());
            cache.insert(key.to_owned(), entry.clone());
            // Evictions now, here, rather than on some later reader's thread.
            cache.run_pending_tasks();
            let held =
                |c: &Cache<String, Arc<Entry>>| c.get(key).is_some_and(|e| Arc::ptr_eq(&e, &entry));
            let fits = inner.counters.bytes.load(SeqCst) + weight <= max;
            if fits && held(cache) {
                entry.counted.store(true, SeqCst);
                inner.counters.bytes.fetch_add(weight, SeqCst);
                inner.counters.entries.fetch_add(1, SeqCst);
                // Removed meanwhile (an invalidation on another thread) and
                // missed by the listener: take it out again.
                if !held(cache) {
                    inner.counters.uncount(&entry);
                }
            } else if held(cache) {
                // moka kept it but it does not fit in what is counted: drop it.
                cache.invalidate(key);
            }
        }
        if flag.load(SeqCst) {
            cache.invalidate(key);
        }
    }

    /// Drops `key`, and marks a fetch in flight for it as invalidated.
    ///
    /// The flight is also forgotten, so a read that starts after this call
    /// makes a new request instead of joining the outdated one.
    ///
    /// With the shared tier, the key's shared entry goes too (queued, sent in
    /// order; see `shared_ref.rs`), for a reference cache key.
    pub fn invalidate(&self, key: &str) {
        // Queued first: a read that misses after the local entry is gone
        // waits for this to reach Redis, so it cannot read back the old one.
        if let Some(tier) = &self.inner.shared {
            if parse_key(key).is_some() {
                tier.invalidate(key);
            }
        }
        if let Some((_, f)) = self.inner.inflight.remove(key) {
            f.invalidated.store(true, SeqCst);
        }
        if let Some(c) = self.inner.cache.get() {
            c.invalidate(key);
        }
    }

    /// Drops everything, including the results of fetches in flight, and,
    /// with the shared tier, every shared entry of the tenant (a reload that
    /// drops reference data).
    pub fn clear(&self) {
        if let Some(tier) = &self.inner.shared {
            tier.clear();
        }
        self.clear_local();
    }

    /// Drops everything held here, including the results of fetches in
    /// flight; the shared tier keeps its entries (a shutdown or a released
    /// pool tenant must not empty it for the fleet).
    ///
    /// Entry by entry (O(entries), on the caller's task), so that the
    /// counters drop with the entries instead of at a later maintenance.
    pub fn clear_local(&self) {
        self.inner.inflight.retain(|_, f| {
            f.invalidated.store(true, SeqCst);
            false
        });
        if let Some(c) = self.inner.cache.get() {
            for (key, _) in c.iter() {
                c.invalidate(key.as_str());
            }
        }
    }

    /// Epoch ms at which the held entry stops being fresh (in the past for an
    /// entry held only for stale-if-error), or `None` when nothing is held.
    pub fn expiry(&self, key: &str) -> Option<i64> {
        self.held(key).map(|e| e.fresh_until_ms)
    }

    /// (entries, bytes) held: two atomic loads, no cache maintenance. The
    /// bytes never exceed `maxReferenceBytes`. Entries past their hold time
    /// count until moka's next maintenance removes them (they are still in
    /// memory until then).
    pub fn size(&self) -> (u64, u64) {
        (
            self.inner.counters.entries.load(SeqCst),
            self.inner.counters.bytes.load(SeqCst),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A cache bounded to `max` bytes whose Wrapper is never called.
    fn cache(max: u64) -> ReferenceCache {
        let options = serde_json::json!({
            "tenantId": "t1",
            "wrapperUrl": "http://127.0.0.1:9",
            "maxReferenceBytes": max,
        });
        let config = Config::from_json(&options, &HashMap::new()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let wrapper = WrapperClient::new(&config, metrics.clone()).unwrap();
        ReferenceCache::new(&config, wrapper, metrics, None)
    }

    #[test]
    fn nothing_is_allocated_for_entries_until_one_is_stored() {
        let c = cache(1 << 20);
        assert!(matches!(c.lookup("user:u1"), Lookup::Miss));
        c.invalidate("user:u1");
        c.clear();
        assert_eq!(c.expiry("user:u1"), None);
        assert_eq!(c.size(), (0, 0));
        assert!(
            c.inner.cache.get().is_none(),
            "reads and invalidations build nothing"
        );
        put(&c, "user:u1", 10);
        assert!(c.inner.cache.get().is_some());
        assert!(matches!(c.lookup("user:u1"), Lookup::Hit(_)));
    }

    fn put(c: &ReferenceCache, key: &str, body_len: usize) {
        let body: Arc<str> = Arc::from(format!("{{\"b\":\"{}\"}}", "x".repeat(body_len)));
        let ttl = Duration::from_secs(60);
        c.store(key, Some(body), ttl, &AtomicBool::new(false));
    }

    /// (entries, bytes) as moka holds them, after its maintenance.
    fn held(c: &ReferenceCache) -> (u64, u64) {
        c.entries().run_pending_tasks();
        let mut n = 0;
        let mut bytes = 0;
        for (_, e) in c.entries().iter() {
            n += 1;
            bytes += e.weight;
        }
        (n, bytes)
    }

    #[test]
    fn the_bound_holds_under_concurrent_inserts_whenever_observed() {
        let max = 4_000;
        let c = cache(max);
        let done = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..400 {
                        put(&c, &format!("user:{t}-{}", i % 50), 50 + (i * 37) % 400);
                        if i % 7 == 0 {
                            c.invalidate(&format!("user:{t}-{}", (i + 3) % 50));
                        }
                    }
                })
            })
            .collect();
        let reader = {
            let (c, done) = (c.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !done.load(SeqCst) {
                    let (_, bytes) = c.size();
                    assert!(bytes <= max, "{bytes} bytes counted, bound {max}");
                    seen = seen.max(bytes);
                }
                seen
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, SeqCst);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(c.size(), held(&c), "the counters match what moka holds");
        c.clear();
        assert_eq!(c.size(), (0, 0));
        assert_eq!(held(&c), (0, 0));
    }

    #[test]
    fn an_entry_over_the_bound_is_not_kept_and_drops_the_older_one() {
        let c = cache(1_000);
        put(&c, "user:a", 100);
        assert!(c.expiry("user:a").is_some());
        let (_, bytes) = c.size();
        assert_eq!(
            bytes,
            weight_of(
                "user:a",
                Some(&format!("{{\"b\":\"{}\"}}", "x".repeat(100)))
            )
        );
        put(&c, "user:a", 2_000);
        assert_eq!(
            c.expiry("user:a"),
            None,
            "not kept, and the older answer is gone"
        );
        assert_eq!(c.lookup("user:a"), Lookup::Miss);
        assert_eq!(c.size(), (0, 0));
    }

    #[test]
    fn replacing_and_invalidating_keep_the_counters_exact() {
        let c = cache(1 << 20);
        put(&c, "user:a", 100);
        put(&c, "user:a", 300);
        put(&c, "user:b", 10);
        assert_eq!(c.size().0, 2);
        assert_eq!(c.size(), held(&c));
        c.invalidate("user:a");
        assert_eq!(c.size(), held(&c));
        assert_eq!(c.size().0, 1);
    }
}
