//! Full loads of a stream-transport consumer (SPEC §7): from the tenant's
//! shared snapshot in Redis when one can be caught up from, else from the
//! Wrapper by the one instance that holds the tenant's lease, which then
//! stores its result as the new shared snapshot for the rest of the fleet.
//!
//! The rules, in the order a load applies them:
//!
//! 1. Read the epoch (setting it if absent) and the stream's last entry id:
//!    the load's data is "as of" that entry, so every later entry is applied
//!    on top of it (they also arrive live: the stream channel is subscribed
//!    before the load starts).
//! 2. A periodic refresh with `sharedSnapshot` is done by one instance per
//!    tenant per interval: whoever takes the refresh lease; the others skip
//!    it. When the winner's data differs from the previous snapshot it
//!    announces the new one on the stream channel, and the others load it.
//! 3. A shared snapshot is used when it passes its checks (`snapshot.rs`),
//!    belongs to the current epoch, is at least as recent as the load asks
//!    (a `resync-required` entry asks for a snapshot written after it), and
//!    the stream still holds its entry (else the entries after it cannot be
//!    caught up: a gap). The entries after it are read and returned for
//!    installation.
//! 4. Otherwise the instance takes the lease and loads from the Wrapper; an
//!    instance that finds the lease taken waits (at most `initTimeoutMs`) for
//!    it to be given back and looks again. The holder, once it has stored the
//!    snapshot (or failed) and given the lease back, says so on the stream
//!    channel (`snapshot <pos> released`), which wakes the waiters at once
//!    ([`FleetContext::wake`]); they also look every [`LEASE_POLL`], for a
//!    holder that died (its lease expires by itself) or a notice lost with a
//!    connection.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use crate::background::{LoadThread, Priority};
use crate::critical::CriticalStore;
use crate::error::{CoreError, Result};
use crate::metrics::{now_ms, Metrics};
use crate::signature::SigningKeys;
use crate::snapshot;
use crate::stream::{self, Entry, Keys, StreamId};
use crate::wrapper::WrapperClient;

/// How long the Wrapper-load lease lasts if its holder never gives it back.
const LEASE_MS: u64 = 30_000;
/// How often a waiting instance looks whether the lease was given back when
/// no notice woke it (the fallback: a holder that died, a lost notice).
pub const LEASE_POLL: Duration = Duration::from_millis(500);
/// The end of the holder's notice that the lease is free again:
/// `snapshot <pos> released` (a refresh's notice, `snapshot <pos>`, has none).
pub const RELEASED: &str = " released";
/// Entries read per `XRANGE` while catching up.
pub const CATCH_UP_BATCH: usize = 1000;

/// What a stream-transport load needs, shared by one session's loads.
#[derive(Clone)]
pub struct FleetContext {
    /// A connection for commands (the session's link).
    pub conn: MultiplexedConnection,
    /// The tenant's keys.
    pub keys: Keys,
    /// The tenant.
    pub tenant_id: String,
    /// This instance, as a lease owner.
    pub owner: String,
    /// `sharedSnapshot`.
    pub shared: bool,
    /// The signing keys, which also sign and check the snapshot.
    pub signing: Option<SigningKeys>,
    /// The largest snapshot read.
    pub max_bytes: u64,
    /// How long to wait for another instance's load (`initTimeoutMs`).
    pub wait: Duration,
    /// The refresh interval (the refresh lease lasts 90 % of it).
    pub refresh_every: Option<Duration>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Notified when the stream channel says a lease holder gave the lease
    /// back (apply.rs): wakes the instances waiting for it.
    pub wake: Arc<tokio::sync::Notify>,
}

/// Where a load's data came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The Wrapper.
    Wrapper,
    /// The shared snapshot in Redis.
    Redis,
}

/// What a load asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wants {
    /// A periodic refresh: only the refresh lease's winner loads.
    pub refresh: bool,
    /// A snapshot older than this entry will not do.
    pub at_least: Option<StreamId>,
    /// Load the shared snapshot (announced by another instance), never the Wrapper
    /// unless it is unusable.
    pub follow: bool,
    /// The scheduling of the load's own thread (a reload: low, background.rs).
    pub priority: Priority,
}

/// A completed load.
pub struct Loaded {
    /// The new store.
    pub store: CriticalStore,
    /// Where it came from.
    pub source: Source,
    /// The epoch and the entry it is as of.
    pub position: Option<(String, StreamId)>,
    /// Entries after `position` to apply before installing (shared snapshot loads).
    pub catchup: Vec<Entry>,
    /// Tables the Wrapper answered 304 for (credits, roles, users, configs):
    /// the installation keeps the current ones.
    pub unchanged: [bool; 4],
}

fn redis_err(e: redis::RedisError) -> CoreError {
    CoreError::RedisUnavailable(format!("stream: {e}"))
}

/// Every entry after `id`.
pub async fn entries_after(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    mut id: StreamId,
) -> redis::RedisResult<Vec<Entry>> {
    let mut out = Vec::new();
    loop {
        let batch = stream::read_after(conn, keys, id, CATCH_UP_BATCH).await?;
        let n = batch.len();
        if let Some(last) = batch.last() {
            id = last.id;
        }
        out.extend(batch);
        if n < CATCH_UP_BATCH {
            return Ok(out);
        }
    }
}

/// The shared snapshot, if it can be used now (rule 3), with the entries after it.
/// Its size is asked first (a snapshot over the bound is not downloaded); its
/// framing, digest and signature are checked before its header is looked at,
/// and its body is decoded straight into a store (snapshot.rs) while the
/// entries after it are read. The checks and the decoding run on a load
/// thread at the load's priority (background.rs: the lowest for a reload).
async fn shared(ctx: &FleetContext, epoch: &str, wants: Wants) -> Result<Option<Loaded>> {
    let mut conn = ctx.conn.clone();
    let len: u64 = redis::cmd("STRLEN")
        .arg(&ctx.keys.snapshot)
        .query_async(&mut conn)
        .await
        .map_err(redis_err)?;
    if len == 0 {
        return Ok(None);
    }
    if len > ctx.max_bytes {
        Metrics::inc(&ctx.metrics.snapshot_rejected);
        return Ok(None);
    }
    let bytes: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&ctx.keys.snapshot)
        .query_async(&mut conn)
        .await
        .map_err(redis_err)?;
    let Some(bytes) = bytes else { return Ok(None) };
    let (tenant, max, keys) = (ctx.tenant_id.clone(), ctx.max_bytes, ctx.signing.clone());
    let worker = LoadThread::new(wants.priority);
    let (bytes, verified) = worker
        .run(move || {
            let v = snapshot::verify(&bytes, &tenant, max, keys.as_ref());
            (bytes, v)
        })
        .await
        .ok_or_else(|| CoreError::InvalidResponse("checking the snapshot failed".into()))?;
    let verified = match verified {
        Ok(v) => v,
        Err(_) => {
            Metrics::inc(&ctx.metrics.snapshot_rejected);
            return Ok(None);
        }
    };
    let Some(position) = StreamId::parse(&verified.header.position) else {
        return Ok(None);
    };
    if verified.header.epoch != epoch || wants.at_least.is_some_and(|min| position < min) {
        return Ok(None);
    }
    if !stream::holds(&mut conn, &ctx.keys, position)
        .await
        .map_err(redis_err)?
    {
        return Ok(None);
    }
    let large = bytes.len() >= LARGE_SNAPSHOT_BYTES && verified.format == snapshot::Format::V1;
    let built = worker.run(move || {
        let store = snapshot::build(&bytes, &verified);
        drop(bytes);
        if large {
            // Format 1's parsed rows (format 2 decodes into the tables).
            crate::memory::give_back();
        }
        store
    });
    let (built, catchup) = tokio::join!(built, entries_after(&mut conn, &ctx.keys, position));
    let catchup = catchup.map_err(redis_err)?;
    let store = match built {
        Some(Ok(store)) => store,
        Some(Err(_)) => {
            Metrics::inc(&ctx.metrics.snapshot_rejected);
            return Ok(None);
        }
        None => {
            return Err(CoreError::InvalidResponse(
                "decoding the snapshot failed".into(),
            ))
        }
    };
    Ok(Some(Loaded {
        store,
        source: Source::Redis,
        position: Some((epoch.to_owned(), position)),
        catchup,
        unchanged: [false; 4],
    }))
}

/// A format 1 snapshot of this size or more holds about
/// [`crate::memory::LARGE_LOAD_ROWS`] rows: its parsed rows' memory is given
/// back after the build.
const LARGE_SNAPSHOT_BYTES: usize = 4 << 20;

/// The header's SHA-256 of the snapshot stored now, if any (reads only its
/// first bytes).
async fn stored_digest(ctx: &FleetContext) -> Option<String> {
    let mut conn = ctx.conn.clone();
    let head: Vec<u8> = redis::cmd("GETRANGE")
        .arg(&ctx.keys.snapshot)
        .arg(0)
        .arg(4095)
        .query_async(&mut conn)
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&head);
    let header = text.lines().nth(1)?;
    serde_json::from_str::<snapshot::Header>(header)
        .ok()
        .map(|h| h.sha256)
}

/// One full load (see the module docs). `Ok(None)`: a refresh another
/// instance does this interval.
pub async fn load(
    ctx: &FleetContext,
    wrapper: &WrapperClient,
    wants: Wants,
) -> Result<Option<Loaded>> {
    let mut conn = ctx.conn.clone();
    let candidate = uuid::Uuid::new_v4().simple().to_string();
    let epoch = stream::epoch(&mut conn, &ctx.keys, &candidate)
        .await
        .map_err(redis_err)?;
    let tail = stream::tail(&mut conn, &ctx.keys)
        .await
        .map_err(redis_err)?;
    let mut holding = false;
    if ctx.shared {
        if wants.refresh && !wants.follow {
            let every = ctx.refresh_every.unwrap_or(Duration::from_secs(60));
            let ms = (every.as_millis() as u64).saturating_mul(9) / 10;
            if !stream::take_lease(&mut conn, &ctx.keys.refresh, &ctx.owner, ms)
                .await
                .map_err(redis_err)?
            {
                return Ok(None);
            }
        } else {
            let deadline = Instant::now() + ctx.wait;
            loop {
                if let Some(l) = shared(ctx, &epoch, wants).await? {
                    Metrics::inc(&ctx.metrics.snapshot_loads_redis);
                    return Ok(Some(l));
                }
                if stream::take_lease(&mut conn, &ctx.keys.lease, &ctx.owner, LEASE_MS)
                    .await
                    .map_err(redis_err)?
                {
                    holding = true;
                    break;
                }
                if Instant::now() >= deadline {
                    break;
                }
                // Another instance is loading: wait for it to give the lease
                // back, woken by its notice (registered before looking, so a
                // notice between the look and the wait is not missed), or
                // after LEASE_POLL without one.
                loop {
                    let woken = ctx.wake.notified();
                    tokio::pin!(woken);
                    woken.as_mut().enable();
                    let now = Instant::now();
                    if now >= deadline
                        || !stream::leased(&mut conn, &ctx.keys.lease)
                            .await
                            .map_err(redis_err)?
                    {
                        break;
                    }
                    let nap = LEASE_POLL.min(deadline.saturating_duration_since(now));
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep(nap) => {}
                    }
                }
            }
        }
    }
    // A refresh asks conditionally first: when nothing changed there is
    // nothing to install, store or announce (SPEC §4 ETags).
    let mut probed = None;
    if wants.refresh && !wants.follow {
        let probe = wrapper.snapshot_if(true, wants.priority).await?;
        if probe.unchanged.iter().all(|u| *u) {
            return Ok(None);
        }
        // A complete answer is the load; one with some 304s lacks rows the
        // shared snapshot needs, so those are asked again unconditionally.
        if !probe.unchanged.iter().any(|u| *u) {
            probed = Some(probe);
        }
    }
    let loaded = match probed {
        Some(p) => Ok(p),
        None => wrapper.snapshot_if(false, wants.priority).await,
    };
    let built = match loaded {
        Ok(s) => s,
        Err(e) => {
            if holding {
                let _ = stream::release_lease(&mut conn, &ctx.keys.lease, &ctx.owner).await;
                released(&mut conn, ctx, tail).await;
            }
            return Err(e);
        }
    };
    Metrics::inc(&ctx.metrics.snapshot_loads_wrapper);
    if ctx.shared {
        let previous = if wants.refresh {
            stored_digest(ctx).await
        } else {
            None
        };
        let (tenant, ep, keys) = (ctx.tenant_id.clone(), epoch.clone(), ctx.signing.clone());
        // Off the async workers, at the load's priority (background.rs).
        let (store, bytes) = LoadThread::new(wants.priority)
            .run(move || {
                let b = snapshot::encode_store(
                    &tenant,
                    tail,
                    &ep,
                    now_ms(),
                    &built.store,
                    keys.as_ref(),
                );
                (built.store, b)
            })
            .await
            .ok_or_else(|| CoreError::InvalidResponse("encoding the snapshot failed".into()))?;
        let digest = snapshot_digest(&bytes);
        let _: redis::RedisResult<()> = redis::cmd("SET")
            .arg(&ctx.keys.snapshot)
            .arg(bytes)
            .query_async(&mut conn)
            .await;
        if holding {
            let _ = stream::release_lease(&mut conn, &ctx.keys.lease, &ctx.owner).await;
            released(&mut conn, ctx, tail).await;
        }
        if wants.refresh && previous.is_some() && previous != digest {
            // The others follow: a notice on the stream channel, not an entry.
            let _: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&ctx.keys.live)
                .arg(format!("snapshot {tail}"))
                .query_async(&mut conn)
                .await;
        }
        return Ok(Some(Loaded {
            store,
            source: Source::Wrapper,
            position: Some((epoch, tail)),
            catchup: Vec::new(),
            unchanged: [false; 4],
        }));
    }
    Ok(Some(Loaded {
        store: built.store,
        source: Source::Wrapper,
        position: Some((epoch, tail)),
        catchup: Vec::new(),
        unchanged: [false; 4],
    }))
}

/// Tells the instances waiting for the lease that it is free again (rule 4):
/// `snapshot <pos> released` on the stream channel. Instances not waiting
/// ignore it (a reader before format 2 too: it is no `snapshot <pos>`).
async fn released(conn: &mut MultiplexedConnection, ctx: &FleetContext, pos: StreamId) {
    let _: redis::RedisResult<i64> = redis::cmd("PUBLISH")
        .arg(&ctx.keys.live)
        .arg(format!("snapshot {pos}{RELEASED}"))
        .query_async(conn)
        .await;
}

/// The SHA-256 a freshly encoded snapshot declares.
fn snapshot_digest(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]);
    let header = text.lines().nth(1)?;
    serde_json::from_str::<snapshot::Header>(header)
        .ok()
        .map(|h| h.sha256)
}
