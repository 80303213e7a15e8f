//! The reference cache (SPEC §2 "Reference reads"): profiles, hierarchy, audit
//! logs and historical data, fetched from the Wrapper on a miss and kept with a
//! TTL per type in a byte-bounded table of its own (`ref_table.rs`: dense
//! slots, a hash index, sampled-LRU eviction, lazy and incremental expiry),
//! each value compressed with its kind's zstd dictionary (`packing.rs`).
//!
//! * A hit ([`ReferenceCache::lookup`]) is a synchronous read under the
//!   table's read lock (and a decompression): it never waits on a thread pool
//!   or the network.
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
//! * The byte bound (`maxReferenceBytes`) holds whenever it is observed: an
//!   entry's weight is its key, its stored (compressed) bytes and a fixed
//!   overhead ([`ENTRY_OVERHEAD`]); an entry larger than the bound is served
//!   but never cached; every other insert evicts, under the table's write
//!   lock, until it fits, and only then holds it. The counters
//!   ([`ReferenceCache::size`]) are atomics updated under that lock, so
//!   reading them is O(1) and takes no lock on the caller's thread (the JS
//!   thread, for `getMetrics()`).
//!
//! Values are kept as (compressed) JSON text; each hit is a new string, which
//! the JS side parses into a fresh object, so no caller can mutate the cache.
//!
//! With `sharedReference` a fetch first asks the shared tier in Redis
//! (`shared_ref.rs`): an entry there is taken with the time it has left (never
//! more than this instance's own TTL for its kind), and a fetch that goes to
//! the Wrapper writes its answer there, fenced, for the rest of the fleet.
//! Invalidations and clears reach the shared tier too; dropping the cache on
//! shutdown ([`ReferenceCache::clear_local`]) does not.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::future::{BoxFuture, FutureExt, Shared};

use crate::config::Config;
use crate::error::{CoreError, Result};
use crate::ids::{parse_key, RefKind};
use crate::metrics::{now_ms, Metrics};
use crate::packing::{Form, Packer};
use crate::ref_table::{Meta, Removed, Slot, Stored, Table};
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

/// Fixed bytes added to each entry's weight for the table's own bookkeeping
/// (its slot, its index entry, the allocator's header).
pub const ENTRY_OVERHEAD: u64 = 96;

/// The weight of an entry for `key` storing `stored` bytes.
fn weight_of(key: &str, stored: usize) -> u64 {
    (key.len() + stored) as u64 + ENTRY_OVERHEAD
}

/// What the cache holds, readable without its lock (see the module docs).
#[derive(Debug, Default)]
struct Counters {
    /// Entries held.
    entries: AtomicU64,
    /// Sum of their weights; never above `maxReferenceBytes`.
    bytes: AtomicU64,
}

/// The kind's number in a slot (see `packing.rs`).
fn kind_code(kind: RefKind) -> u8 {
    match kind {
        RefKind::UserProfile => 0,
        RefKind::Hierarchy => 1,
        RefKind::AuditLog => 2,
        RefKind::Historical => 3,
    }
}

/// The kind of a slot's number.
fn kind_of_code(code: u8) -> RefKind {
    RefKind::ALL[usize::from(code) & 3]
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
    /// The entries, weighted by bytes. An empty table allocates nothing, which
    /// a pool of thousands of tenants that never read reference data needs.
    table: RwLock<Table>,
    /// The zstd dictionaries, one per kind.
    packer: Packer,
    /// The origin of the table's times (nanoseconds since it).
    epoch: Instant,
    /// `epoch` as epoch ms (truncated), for `getCacheExpiry`.
    epoch_ms: i64,
    /// Entries and bytes held, for `size()`.
    counters: Counters,
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
    /// Bumped after every change that can make a value read earlier wrong:
    /// an invalidation (whether or not the key was held), a replaced
    /// value, a clear. JS's hot tier (`referenceHotEntries`) reads it from
    /// shared memory on each of its hits; an `Arc` so that memory outlives
    /// the cache for as long as JS holds it.
    generation: Arc<AtomicU32>,
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
                table: RwLock::new(Table::default()),
                packer: Packer::default(),
                epoch: Instant::now(),
                epoch_ms: now_ms(),
                counters: Counters::default(),
                inflight: DashMap::new(),
                config: config.clone(),
                wrapper,
                metrics,
                shared,
                batch_missing: AtomicBool::new(false),
                generation: Arc::default(),
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

    /// Now, in nanoseconds on the table's clock.
    fn now(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// `d` from now on the table's clock.
    fn after(&self, d: Duration) -> u64 {
        self.now()
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.inner.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.inner.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The JSON text a slot stores (`None` for a 404, or unreadable).
    fn text_of(&self, t: &Table, slot: &Slot) -> Option<Arc<str>> {
        match slot.stored {
            Stored::NotFound => None,
            Stored::Value(form) => self
                .inner
                .packer
                .unpack(kind_of_code(slot.kind), form, t.bytes_of(slot))
                .map(Arc::from),
        }
    }

    /// The held value of `key` (fresh or only held for stale-if-error).
    fn held_value(&self, key: &str) -> Option<Arc<str>> {
        let now = self.now();
        let t = self.read();
        t.get(key)
            .filter(|s| s.hold_until > now)
            .and_then(|s| self.text_of(&t, s))
    }

    /// Synchronous read of `key`; counts a hit when fresh. Never blocks on I/O.
    pub fn lookup(&self, key: &str) -> Lookup {
        self.lookup_for(key).0
    }

    /// [`ReferenceCache::lookup`], with how long the answer may be reused
    /// without asking again: until the entry's freshness ends or its
    /// refresh-ahead point, whichever comes first (zero for a miss). Valid
    /// only while [`ReferenceCache::generation`] keeps the value it had
    /// before this call (JS's hot tier).
    pub fn lookup_for(&self, key: &str) -> (Lookup, Duration) {
        let now = self.now();
        let t = self.read();
        let Some(e) = t.get(key).filter(|e| now < e.fresh_until) else {
            return (Lookup::Miss, Duration::ZERO);
        };
        let reuse = Duration::from_nanos(e.fresh_until.min(e.refresh_after).saturating_sub(now));
        let out = match e.stored {
            Stored::NotFound => Lookup::NotFound,
            Stored::Value(_) => match self.text_of(&t, e) {
                Some(b) => Lookup::Hit(b),
                None => return (Lookup::Miss, Duration::ZERO),
            },
        };
        e.used.store(now, Relaxed);
        Metrics::inc(&self.inner.metrics.reference_hits);
        if now >= e.refresh_after && !e.refreshing.swap(true, SeqCst) {
            if let Some(tx) = &self.inner.refresh_tx {
                let _ = tx.send(key.to_owned());
            }
        }
        (out, reuse)
    }

    /// The generation counter (see `Inner::generation`): it changes after
    /// any invalidation, replaced value or clear, never before the table
    /// changed, so a reader that saw the same value before and after reading
    /// an entry knows the entry was current then. Shared, lock-free.
    pub fn generation(&self) -> Arc<AtomicU32> {
        self.inner.generation.clone()
    }

    /// Advances the generation. Called before and after a removal, so that
    /// both what JS read before it and what it read while the table changed
    /// are unusable once the removal returns.
    fn bump(&self) {
        self.inner.generation.fetch_add(1, SeqCst);
    }

    /// Drops `key` from the table and the counters.
    fn remove(&self, key: &str) {
        self.bump();
        {
            let mut t = self.write();
            if t.remove(key).is_some() {
                self.sync_counters(&t);
            }
        }
        // Held or not: JS's hot tier may still hold what the table evicted.
        self.bump();
    }

    /// Sets the counters to what `t` holds (under its write lock).
    fn sync_counters(&self, t: &Table) {
        self.inner.counters.entries.store(t.len() as u64, SeqCst);
        self.inner.counters.bytes.store(t.bytes(), SeqCst);
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
            CoreError::WrapperUnavailable(msg) => match self.held_value(key) {
                Some(body) => {
                    Metrics::inc(&inner.metrics.stale_served);
                    Ok(body)
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
            self.remove(&key);
            return false;
        }
        true
    }

    /// Caches a fetched answer for `ttl`, within the byte bound (see the
    /// module docs); an object is held `staleIfErrorMs` longer (stale-if-error),
    /// a remembered 404 is not. Compresses, evicts and expires on the calling
    /// (fetching) task.
    fn store(&self, key: &str, body: Option<Arc<str>>, ttl: Duration, flag: &AtomicBool) {
        let inner = &self.inner;
        let max = inner.config.max_reference_bytes;
        let kind = parse_key(key).map_or(RefKind::Historical, |(k, _)| k);
        let (stored, bytes): (Stored, Box<[u8]>) = match &body {
            Some(b) if !ttl.is_zero() => {
                let (form, bytes) = inner.packer.pack(kind, b);
                (Stored::Value(form), bytes)
            }
            Some(_) => (Stored::Value(Form::Raw), Box::default()),
            None => (Stored::NotFound, Box::default()),
        };
        let weight = weight_of(key, bytes.len());
        let weight = match u32::try_from(weight) {
            Ok(w) if !ttl.is_zero() && u64::from(w) <= max => w,
            _ => {
                // Served to the callers, not kept; an older answer must not stay either.
                self.remove(key);
                return;
            }
        };
        let hold = match body {
            Some(_) => ttl + inner.config.stale_if_error,
            None => ttl,
        };
        let now = self.now();
        let ratio = inner.config.refresh_ahead_ratio;
        let meta = Meta {
            stored,
            kind: kind_code(kind),
            weight,
            fresh_until: self.after(ttl),
            hold_until: self.after(hold),
            refresh_after: if ratio > 0.0 && body.is_some() {
                self.after(ttl.mul_f64(ratio))
            } else {
                u64::MAX
            },
            used: now,
        };
        // What is dropped is freed after the lock is released.
        let mut dropped: Vec<Removed> = Vec::new();
        let (kept, replacing) = {
            let mut t = self.write();
            let replaced = t.remove(key);
            let replacing = replaced.is_some();
            dropped.extend(replaced);
            dropped.extend(t.expire_some(now));
            while t.bytes() + u64::from(weight) > max {
                match t.evict_one(now) {
                    Some(e) => dropped.push(e),
                    None => break,
                }
            }
            let kept = t.insert(key, &bytes, meta).is_ok();
            self.sync_counters(&t);
            (kept, replacing)
        };
        if replacing {
            self.bump();
        }
        drop(dropped);
        drop(bytes);
        if !kept {
            return;
        }
        if flag.load(SeqCst) {
            self.remove(key);
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
        self.remove(key);
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
    /// The table's memory is freed on the caller's task (O(entries)); the
    /// dictionaries stay.
    pub fn clear_local(&self) {
        self.bump();
        self.inner.inflight.retain(|_, f| {
            f.invalidated.store(true, SeqCst);
            false
        });
        let old = {
            let mut t = self.write();
            let old = std::mem::take(&mut *t);
            self.sync_counters(&t);
            old
        };
        self.bump();
        drop(old);
    }

    /// Epoch ms at which the held entry stops being fresh (in the past for an
    /// entry held only for stale-if-error), or `None` when nothing is held.
    /// The same answer for the same entry, rounded up: once the wall clock
    /// (`Date.now()`) is past it, a read no longer finds the entry fresh.
    pub fn expiry(&self, key: &str) -> Option<i64> {
        let now = self.now();
        let t = self.read();
        t.get(key).filter(|e| e.hold_until > now).map(|e| {
            // Both parts rounded up: the entry's time to the next ms, and
            // + 1 for `epoch_ms`, which was truncated.
            let ms = e.fresh_until.div_ceil(1_000_000);
            self.inner
                .epoch_ms
                .saturating_add(i64::try_from(ms).unwrap_or(i64::MAX))
                .saturating_add(1)
        })
    }

    /// (entries, bytes) held: two atomic loads, no cache maintenance. The
    /// bytes never exceed `maxReferenceBytes`. Entries past their hold time
    /// count until an insert's incremental expiry, or an eviction, removes
    /// them (they are still in memory until then).
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
            c.read().capacity_bytes() == 0,
            "reads and invalidations allocate nothing"
        );
        put(&c, "user:u1", 10);
        assert!(c.read().capacity_bytes() > 0);
        assert!(matches!(c.lookup("user:u1"), Lookup::Hit(_)));
    }

    fn put(c: &ReferenceCache, key: &str, body_len: usize) {
        let body: Arc<str> = Arc::from(format!("{{\"b\":\"{}\"}}", "x".repeat(body_len)));
        let ttl = Duration::from_secs(60);
        c.store(key, Some(body), ttl, &AtomicBool::new(false));
    }

    #[test]
    fn once_the_wall_clock_is_past_the_expiry_a_lookup_finds_nothing_fresh() {
        // staleIfErrorMs keeps the entry held past its TTL, as in the JS test
        // of stale-if-error; the expiry is what `getCacheExpiry` answers.
        let c = cache(1 << 20);
        for round in 0..20 {
            let key = format!("user:r{round}");
            let body: Arc<str> = Arc::from("{}");
            c.store(
                &key,
                Some(body),
                Duration::from_millis(3),
                &AtomicBool::new(false),
            );
            assert_eq!(
                c.expiry(&key),
                c.expiry(&key),
                "the same entry, the same answer"
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            loop {
                match c.expiry(&key) {
                    Some(at) if at < now_ms() => break,
                    Some(_) => {}
                    None => break,
                }
                assert!(std::time::Instant::now() < deadline, "never expired");
                std::hint::spin_loop();
            }
            assert!(
                !matches!(c.lookup(&key), Lookup::Hit(_)),
                "round {round}: fresh after the reported expiry"
            );
        }
    }

    #[test]
    fn the_generation_moves_after_invalidations_replacements_and_clears_only() {
        let c = cache(1 << 20);
        let g = c.generation();
        let at = || g.load(SeqCst);
        let g0 = at();
        put(&c, "user:u1", 10);
        assert_eq!(at(), g0, "a new key changes nothing JS could hold");
        let (hit, reuse) = c.lookup_for("user:u1");
        assert!(matches!(hit, Lookup::Hit(_)));
        assert!(reuse > Duration::from_secs(59) && reuse <= Duration::from_secs(60));
        assert_eq!(at(), g0, "a hit changes nothing");
        put(&c, "user:u1", 20);
        let g1 = at();
        assert_ne!(g1, g0, "a replaced value");
        c.invalidate("user:u2");
        let g2 = at();
        assert_ne!(g2, g1, "an invalidation of a key not held (JS may hold it)");
        c.invalidate("user:u1");
        let g3 = at();
        assert_ne!(g3, g2, "an invalidation");
        c.clear();
        assert_ne!(at(), g3, "a clear");
        assert_eq!(
            c.lookup_for("user:u1").1,
            Duration::ZERO,
            "a miss may not be reused"
        );
    }

    /// (entries, bytes) as the table holds them, slot by slot.
    fn held(c: &ReferenceCache) -> (u64, u64) {
        let t = c.read();
        let mut n = 0;
        let mut bytes = 0;
        for e in t.iter() {
            n += 1;
            bytes += u64::from(e.weight);
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
        assert_eq!(
            c.size(),
            held(&c),
            "the counters match what the table holds"
        );
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
            weight_of("user:a", format!("{{\"b\":\"{}\"}}", "x".repeat(100)).len()),
            "stored raw before its kind's dictionary is trained"
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

    fn profile(i: usize) -> Arc<str> {
        Arc::from(format!(
            r#"{{"userId":"u{i:07}","name":"User {i}","email":"user{i}@example.com","dept":"d{}","bio":"{}"}}"#,
            i % 13,
            "lorem ipsum dolor sit amet ".repeat(30)
        ))
    }

    #[test]
    fn eviction_keeps_the_bound_and_spares_what_is_read() {
        let max = 40_000;
        let c = cache(max);
        let ttl = Duration::from_secs(60);
        c.store("user:hot", Some(profile(0)), ttl, &AtomicBool::new(false));
        for i in 1..2_000 {
            c.store(
                &format!("user:{i}"),
                Some(profile(i)),
                ttl,
                &AtomicBool::new(false),
            );
            assert!(c.size().1 <= max, "{} bytes, bound {max}", c.size().1);
            assert_eq!(
                c.lookup("user:hot"),
                Lookup::Hit(profile(0)),
                "after insert {i}"
            );
        }
        let (n, bytes) = c.size();
        assert!(n > 10 && n < 2_000, "{n} entries held");
        assert_eq!((n, bytes), held(&c));
        // What is held reads back exactly (packed with the trained dictionary).
        assert!(c.inner.packer.dict_len(RefKind::UserProfile).is_some());
        assert_eq!(c.lookup("user:1999"), Lookup::Hit(profile(1999)));
        assert_eq!(c.lookup("user:1"), Lookup::Miss, "the oldest went");
    }

    #[test]
    fn packed_entries_round_trip_and_count_their_stored_bytes() {
        let c = cache(1 << 30);
        let ttl = Duration::from_secs(60);
        let mut raw = 0;
        for i in 0..1_000 {
            raw += profile(i).len() as u64;
            c.store(
                &format!("user:{i}"),
                Some(profile(i)),
                ttl,
                &AtomicBool::new(false),
            );
        }
        for i in 0..1_000 {
            assert_eq!(c.lookup(&format!("user:{i}")), Lookup::Hit(profile(i)));
        }
        let (n, bytes) = c.size();
        assert_eq!(n, 1_000);
        // The first 255 are raw (stored before training), the rest packed.
        assert!(bytes < raw / 2, "{bytes} counted for {raw} raw");
    }

    #[test]
    fn expired_entries_are_misses_and_later_inserts_remove_them() {
        let c = cache(1 << 20);
        let flag = AtomicBool::new(false);
        // A 404 is held exactly its TTL (no stale window).
        c.store("user:gone", None, Duration::from_micros(1), &flag);
        let until = c.read().get("user:gone").unwrap().hold_until;
        while c.now() <= until {
            std::hint::spin_loop();
        }
        assert_eq!(c.lookup("user:gone"), Lookup::Miss);
        assert_eq!(c.expiry("user:gone"), None);
        assert_eq!(c.size().0, 1, "still in memory until expiry reaches it");
        for i in 0..10 {
            put(&c, &format!("user:{i}"), 10);
        }
        assert!(
            c.read().get("user:gone").is_none(),
            "incremental expiry removed it"
        );
        assert_eq!(c.size(), held(&c));
        assert_eq!(c.size().0, 10);
    }
}
