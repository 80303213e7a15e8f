//! The napi binding: a thin translation layer over `smart-crm-core`.
//!
//! It converts JS values to core types and back, turns every failure into a
//! JS error in one place ([`Failure::into_js`]), turns the core's replica
//! batches into calls of a JS callback through one threadsafe function, and
//! catches panics so that none reaches Node as an abort. The public API is the
//! JavaScript in `lib/`, which wraps the `NativeConsumer` class defined here.
//!
//! How errors cross: a method returns an [`Outcome`]. napi converts a method's
//! value on the JS thread (for an async method, when its promise settles), and
//! an `Err` is converted there into the JS error object itself: a `TypeError` or
//! `RangeError` for argument and option errors, an `Error` otherwise, with
//! `err.code` from [`CoreError::code`], the message from the error's `Display`
//! (no prefix), and the fields some errors carry (`available` of
//! `INSUFFICIENT_CREDITS`). napi then throws or rejects with that very object,
//! so `lib/` never rebuilds an error. Values cross as values: `Option` for
//! "nothing" (no sentinel strings or flags) and `#[napi(object)]` structs for
//! metrics and health (no JSON text).

#![deny(clippy::all)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use futures_util::FutureExt;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{JsRangeError, JsTypeError};
use napi_derive::napi;
use smart_crm_core::config::PoolConfig;
use smart_crm_core::config::Secret;
use smart_crm_core::critical::FirstReads;
use smart_crm_core::ids::{self, RefKind};
use smart_crm_core::metrics::{Health, MetricsSnapshot};
use smart_crm_core::outbox::{Batch, Sink};
use smart_crm_core::pool::{Pool, PoolSink};
use smart_crm_core::protocol::Rejection;
use smart_crm_core::publisher::Publisher;
use smart_crm_core::reference::Lookup;
use smart_crm_core::testing::{self, ApplyError, EventFields, TestConsumer};
use smart_crm_core::{ArgKind, Config, Consumer, CoreError};

// ---- errors: the one mapping --------------------------------------------------

/// Everything a binding call can fail with.
#[derive(Debug)]
pub enum Failure {
    /// An error of the core: its class, code and message are the JS error's.
    Core(CoreError),
    /// A Rust panic caught by [`guard`]/[`guard_async`]: code `INTERNAL`.
    Panic(String),
    /// An error napi itself raised (e.g. while wrapping a callback): passed on
    /// as napi made it.
    Napi(napi::Error),
    /// An event the test double's `apply` rejected: a `RangeError` whose
    /// message names the SPEC §3 reason, also as `err.reason`.
    Rejected(Rejection),
}

impl From<CoreError> for Failure {
    fn from(e: CoreError) -> Self {
        Failure::Core(e)
    }
}

impl From<napi::Error> for Failure {
    fn from(e: napi::Error) -> Self {
        Failure::Napi(e)
    }
}

impl Failure {
    /// The one place where a failure becomes a JS error (see the module docs).
    /// Runs on the JS thread. Returns a napi error that holds the JS error
    /// object, so napi throws or rejects with exactly that object.
    fn into_js(self, env: sys::napi_env) -> napi::Error {
        let (class, code, message, available, reason) = match self {
            Failure::Napi(e) => return e,
            Failure::Panic(what) => (
                None,
                "INTERNAL",
                format!("internal error (Rust panic): {what}"),
                None,
                None,
            ),
            Failure::Core(e) => {
                let available = match &e {
                    CoreError::InsufficientCredits { available } => *available,
                    _ => None,
                };
                (e.arg_kind(), e.code(), e.to_string(), available, None)
            }
            Failure::Rejected(r) => (
                Some(ArgKind::Range),
                "ERR_OUT_OF_RANGE",
                testing::rejection_message(r),
                None,
                Some(r.name()),
            ),
        };
        let error = napi::Error::new(code, message.as_str());
        // SAFETY: `env` is the live env of the JS thread this runs on.
        let object = unsafe {
            match class {
                Some(ArgKind::Type) => JsTypeError::from(error).into_value(env),
                Some(ArgKind::Range) => JsRangeError::from(error).into_value(env),
                None => napi::JsError::from(error).into_value(env),
            }
        };
        if object.is_null() {
            // The env is tearing down: nothing can receive an object now.
            return napi::Error::new(Status::GenericFailure, message);
        }
        if let Some(available) = available {
            // SAFETY: as above; `object` is the error object just created.
            unsafe {
                if let Ok(v) = f64::to_napi_value(env, available) {
                    sys::napi_set_named_property(env, object, c"available".as_ptr(), v);
                }
            }
        }
        if let Some(reason) = reason {
            // SAFETY: as above.
            unsafe {
                if let Ok(v) = <&str>::to_napi_value(env, reason) {
                    sys::napi_set_named_property(env, object, c"reason".as_ptr(), v);
                }
            }
        }
        // SAFETY: `object` is a valid value of `env`.
        napi::Error::from(unsafe { Unknown::from_raw_unchecked(env, object) })
    }
}

/// What a binding method returns: `Ok` converts to JS as `T`; `Err` becomes
/// the JS error built by [`Failure::into_js`], thrown by a synchronous method
/// and the rejection of an async one.
pub struct Outcome<T>(
    /// The result; its failure is converted only on the JS thread, where the
    /// error object can be built.
    Attempt<T>,
);

impl<T: ToNapiValue> ToNapiValue for Outcome<T> {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        match val.0 {
            Ok(v) => unsafe { T::to_napi_value(env, v) },
            Err(f) => Err(f.into_js(env)),
        }
    }
}

type Attempt<T> = std::result::Result<T, Failure>;

/// Runs `f`, turning a panic into a [`Failure::Panic`] instead of an abort.
fn guard<T>(f: impl FnOnce() -> Attempt<T>) -> Outcome<T> {
    Outcome(catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panic_failure(p))))
}

/// Awaits `fut`, turning a panic into a [`Failure::Panic`].
async fn guard_async<T>(fut: impl std::future::Future<Output = Attempt<T>>) -> Outcome<T> {
    Outcome(
        AssertUnwindSafe(fut)
            .catch_unwind()
            .await
            .unwrap_or_else(|p| Err(panic_failure(p))),
    )
}

/// Runs a constructor's body under [`guard`]; a failure becomes the JS error
/// the constructor throws (a constructor cannot return an [`Outcome`]).
fn construct<T>(env: Env, f: impl FnOnce() -> Attempt<T>) -> Result<T> {
    guard(f).0.map_err(|e| e.into_js(env.raw()))
}

fn panic_failure(p: Box<dyn std::any::Any + Send>) -> Failure {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Failure::Panic(what)
}

/// The reference kind of a numeric code (`refLookupCode`): 0 `user`,
/// 1 `hierarchy`, 2 `audit`, 3 `historical`, the order of `RefKind::ALL`.
fn kind_of_code(code: u32) -> Attempt<RefKind> {
    usize::try_from(code)
        .ok()
        .and_then(|i| RefKind::ALL.get(i).copied())
        .ok_or_else(|| CoreError::arg_range(format!("unknown reference kind code {code}")).into())
}

/// A reference hit's JSON text on its way to JS: made a one-byte (Latin-1)
/// V8 string when it is ASCII, which V8 creates without decoding UTF-8.
pub struct RefText(Arc<str>);

impl ToNapiValue for RefText {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let text = val.0.as_bytes();
        // ASCII is valid Latin-1: V8 copies it without decoding UTF-8.
        let create = if text.is_ascii() {
            sys::napi_create_string_latin1
        } else {
            sys::napi_create_string_utf8
        };
        let mut out = std::ptr::null_mut();
        // SAFETY: `env` is the live env of the JS thread this conversion runs
        // on; `text` outlives the call, which copies it.
        unsafe {
            napi::check_status!(
                create(env, text.as_ptr().cast(), text.len() as isize, &mut out),
                "could not create a string"
            )?;
        }
        Ok(out)
    }
}

impl TypeName for RefText {
    fn type_name() -> &'static str {
        "String"
    }

    fn value_type() -> ValueType {
        ValueType::String
    }
}

fn kind_of(kind: &str) -> Attempt<RefKind> {
    RefKind::from_prefix(kind)
        .ok_or_else(|| CoreError::arg_range(format!("unknown reference kind {kind:?}")).into())
}

// ---- the consumer ---------------------------------------------------------------

/// Delivers replica batches to the JS callback, in order.
struct TsfnSink {
    /// Strong (it keeps Node alive until shutdown drops it), non-callee-handled.
    tsfn: ThreadsafeFunction<Batch, (), String, Status, false>,
}

impl Sink for TsfnSink {
    fn deliver(&self, batch: Batch) {
        // On failure (Node is closing) the batch is dropped, releasing the slot.
        let _ = self
            .tsfn
            .call(batch, ThreadsafeFunctionCallMode::NonBlocking);
    }
}

/// A known user's access as the core holds it, for the JS replica's first access.
#[napi(object, object_from_js = false)]
pub struct UserAccess {
    /// The user's status (`checkPermission` needs exactly `active`).
    pub status: String,
    /// The user's role ids (their permissions are in the replica's roles).
    pub roles: Vec<String>,
    /// Replica batches sent when this was read: the replica may keep the
    /// answer only if it has applied that many (no older batch can overwrite it).
    pub seq: f64,
}

impl UserAccess {
    /// A core answer (access, batches sent) as JS sees it; `None` for an unknown user.
    fn of((access, seq): (Option<smart_crm_core::model::Access>, u64)) -> Option<UserAccess> {
        access.map(|a| UserAccess {
            status: a.status().to_owned(),
            roles: a.roles().iter().map(|r| r.to_string()).collect(),
            seq: seq as f64,
        })
    }
}

/// An operation's credit config as the core holds it, for the JS replica's
/// first read of it (`creditCost`).
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct CreditRead {
    /// The core knows the operation (active or not).
    pub known: bool,
    /// Its cost; `null` when inactive (or unknown).
    pub value: Option<f64>,
    /// Replica batches sent when this was read (as [`UserAccess::seq`]).
    pub seq: f64,
}

impl CreditRead {
    /// A core answer (credit, batches sent) as JS sees it.
    fn of((credit, seq): (Option<smart_crm_core::model::Credit>, u64)) -> CreditRead {
        CreditRead {
            known: credit.is_some(),
            value: credit.filter(|c| c.active).map(|c| c.cost),
            seq: seq as f64,
        }
    }
}

/// A role's permissions as the core holds them (`rolePermissions`).
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct RoleRead {
    /// The core knows the role.
    pub known: bool,
    /// Its permission patterns; `null` when unknown.
    pub value: Option<Vec<String>>,
    /// Replica batches sent when this was read (as [`UserAccess::seq`]).
    pub seq: f64,
}

impl RoleRead {
    /// A core answer (permissions, batches sent) as JS sees it.
    fn of((perms, seq): (Option<Vec<String>>, u64)) -> RoleRead {
        RoleRead {
            known: perms.is_some(),
            value: perms,
            seq: seq as f64,
        }
    }
}

/// A config's JSON text as the core holds it (`configText`).
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct ConfigRead {
    /// The core knows the config.
    pub known: bool,
    /// The JSON text of its value; `null` when unknown.
    pub value: Option<String>,
    /// Replica batches sent when this was read (as [`UserAccess::seq`]).
    pub seq: f64,
}

impl ConfigRead {
    /// A core answer (JSON text, batches sent) as JS sees it.
    fn of((text, seq): (Option<String>, u64)) -> ConfigRead {
        ConfigRead {
            known: text.is_some(),
            value: text,
            seq: seq as f64,
        }
    }
}

/// The Rust-side figures of `getMetrics()`; `lib/consumer.js` adds the critical
/// read counters (those reads never enter Rust) and the rates.
#[napi(object, object_from_js = false)]
pub struct NativeMetrics {
    /// Reference reads answered from the cache (fresh or remembered 404).
    pub reference_hits: f64,
    /// Reference reads that asked the Wrapper (or joined a fetch).
    pub reference_misses: f64,
    /// HTTP requests sent to the Wrapper, retries included.
    pub wrapper_requests: f64,
    /// Wrapper requests that failed (any code).
    pub wrapper_errors: f64,
    /// Reference misses that joined a fetch already in flight.
    pub coalesced_requests: f64,
    /// Expired entries served because the Wrapper was unavailable.
    pub stale_served: f64,
    /// With `sharedReference`: local misses answered by the shared tier in Redis.
    pub shared_hits: f64,
    /// With `sharedReference`: local misses the shared tier did not hold (this
    /// instance asked the Wrapper).
    pub shared_misses: f64,
    /// Messages received on the subscription.
    pub events_received: f64,
    /// Events applied.
    pub events_applied: f64,
    /// Rejected events by reason (`malformed`, `badSignature`, ...): every
    /// reason of SPEC §3 is present, 0 when none was rejected; in name order,
    /// so the Prometheus text lists them the same way every time.
    pub events_rejected: BTreeMap<String, f64>,
    /// Subscription connections re-established after a loss.
    pub reconnects: f64,
    /// Full reloads after the first one.
    pub resyncs: f64,
    /// Times a bounded internal queue overflowed (and its defined behaviour ran).
    pub queue_overflows: f64,
    /// Entries in the reference cache.
    pub reference_cache_size: f64,
    /// Bytes held by the reference cache (weighted size).
    pub reference_cache_bytes: f64,
    /// Live critical entries: credits, roles, users, configs.
    pub critical_cache_size: f64,
    /// Reconnects caught up from the stream without a full reload.
    pub resumes: f64,
    /// Full loads whose data came from the Wrapper.
    pub snapshot_loads_wrapper: f64,
    /// Full loads whose data came from the shared snapshot in Redis.
    pub snapshot_loads_redis: f64,
    /// Shared snapshots that failed a check.
    pub snapshot_rejected: f64,
}

/// `health()` as the core sees it; `lib/consumer.js` adds `ready` and
/// `connected` as the JS replica sees them.
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct NativeHealth {
    /// Redis down, the latest full reload failed, or the Wrapper failing
    /// with `WRAPPER_UNAVAILABLE`.
    pub degraded: bool,
    /// Epoch ms of the last event received, `null` before the first.
    pub last_event_at: Option<f64>,
    /// Epoch ms of the last completed full load, `null` before the first.
    pub last_sync_at: Option<f64>,
    /// `redis-disconnected`, `resync-failed`, `wrapper-unavailable`, or
    /// `null` when not degraded.
    pub reason: Option<String>,
    /// The Wrapper circuit breaker: `closed`, `open` or `half-open`.
    pub circuit: String,
    /// Where the last full load came from: `wrapper`, `snapshot`, or `null`.
    pub source: Option<String>,
}

/// The core's figures as `getMetrics()`'s native half.
fn native_metrics(m: MetricsSnapshot) -> NativeMetrics {
    let n = |v: u64| v as f64;
    NativeMetrics {
        reference_hits: n(m.reference_hits),
        reference_misses: n(m.reference_misses),
        wrapper_requests: n(m.wrapper_requests),
        wrapper_errors: n(m.wrapper_errors),
        coalesced_requests: n(m.coalesced_requests),
        stale_served: n(m.stale_served),
        shared_hits: n(m.shared_hits),
        shared_misses: n(m.shared_misses),
        events_received: n(m.events_received),
        events_applied: n(m.events_applied),
        events_rejected: Rejection::ALL
            .iter()
            .map(|r| {
                let count = m.events_rejected.get(r.name()).copied().unwrap_or(0);
                (r.name().to_owned(), n(count))
            })
            .collect(),
        reconnects: n(m.reconnects),
        resyncs: n(m.resyncs),
        queue_overflows: n(m.queue_overflows),
        reference_cache_size: n(m.reference_cache_size),
        reference_cache_bytes: n(m.reference_cache_bytes),
        critical_cache_size: n(m.critical_cache_size),
        resumes: n(m.resumes),
        snapshot_loads_wrapper: n(m.snapshot_loads_wrapper),
        snapshot_loads_redis: n(m.snapshot_loads_redis),
        snapshot_rejected: n(m.snapshot_rejected),
    }
}

/// The core's health as `health()`'s native half.
fn native_health(h: Health) -> NativeHealth {
    NativeHealth {
        degraded: h.degraded,
        last_event_at: h.last_event_at.map(|t| t as f64),
        last_sync_at: h.last_sync_at.map(|t| t as f64),
        reason: h.reason.map(str::to_owned),
        circuit: h.circuit.to_owned(),
        source: h.source.map(str::to_owned),
    }
}

/// The native half of `SmartCRMConsumer`; see `lib/consumer.js`.
#[napi]
pub struct NativeConsumer {
    /// The core consumer.
    inner: Consumer,
}

impl NativeConsumer {
    /// A synchronous reference read, as `refLookup` answers it.
    fn lookup_of(&self, kind: RefKind, id: &str) -> Attempt<Option<RefText>> {
        match self.inner.reference_lookup(kind, id)? {
            Lookup::Hit(text) => Ok(Some(RefText(text))),
            Lookup::NotFound => Err(CoreError::NotFound(kind.path(id)).into()),
            Lookup::Miss => Ok(None),
        }
    }
}

#[napi]
impl NativeConsumer {
    /// Validates `options` (plain JSON, without `logger`) with `envVars` (the
    /// environment variables `lib/consumer.js` reads) as the source of
    /// fallbacks. Throws `TypeError`/`RangeError` naming the option.
    #[napi(constructor)]
    pub fn new(
        env: Env,
        options: serde_json::Value,
        env_vars: HashMap<String, String>,
    ) -> Result<Self> {
        construct(env, || {
            let config = Config::from_json(&options, &env_vars)?;
            Ok(NativeConsumer {
                inner: Consumer::new(config)?,
            })
        })
    }

    /// Starts the background tasks; `onBatch(json)` receives replica batches.
    #[napi(ts_return_type = "void")]
    pub fn start(&self, on_batch: Function<String, ()>) -> Outcome<()> {
        guard(|| {
            let tsfn = on_batch
                .build_threadsafe_function::<Batch>()
                .callee_handled::<false>()
                .build_callback(
                    |ctx: napi::threadsafe_function::ThreadsafeCallContext<Batch>| {
                        // Taking the JSON drops the batch: the next one may go.
                        Ok(ctx.value.json.clone())
                    },
                )?;
            let sink = Arc::new(TsfnSink { tsfn });
            // Tasks are spawned on napi's tokio runtime.
            napi::bindgen_prelude::within_runtime_if_available(|| self.inner.start(sink))?;
            Ok(())
        })
    }

    /// Resolves after the first full load; rejects with the cause after `initTimeoutMs`.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn wait_ready(&self) -> Outcome<()> {
        let c = self.inner.clone();
        guard_async(async move { Ok(c.wait_ready().await?) }).await
    }

    /// Synchronous reference read of `kind` (`user`, `hierarchy`, `audit`,
    /// `historical`) and `id`: the JSON text of a fresh entry, or `null` on a
    /// miss (then call `refGet`). Throws a `RangeError` for an id outside the
    /// id rule and `NOT_FOUND` for a remembered 404.
    #[napi(ts_return_type = "string | null")]
    pub fn ref_lookup(&self, kind: String, id: String) -> Outcome<Option<RefText>> {
        guard(|| self.lookup_of(kind_of(&kind)?, &id))
    }

    /// As `refLookup`, with the kind as a number (0 `user`, 1 `hierarchy`,
    /// 2 `audit`, 3 `historical`): no kind string per call. The JS shim's hit
    /// path.
    #[napi(ts_return_type = "string | null")]
    pub fn ref_lookup_code(&self, kind: u32, id: String) -> Outcome<Option<RefText>> {
        guard(|| self.lookup_of(kind_of_code(kind)?, &id))
    }

    /// `referenceHotEntries` (0 = no hot tier in JS).
    #[napi]
    pub fn ref_hot_entries(&self) -> u32 {
        self.inner.config().reference_hot_entries
    }

    /// The reference cache's generation counter as 4 bytes of memory shared
    /// with JS (read with a plain load of an `Int32Array` over it: see
    /// "The hot tier never outlives what it copied" in ARCHITECTURE.md for
    /// why that is enough), for the
    /// hot tier in lib/consumer.js; `null` when `referenceHotEntries` is 0 or
    /// the runtime would copy the memory instead of sharing it (then JS keeps
    /// no hot tier). Call it once per consumer.
    #[napi(ts_return_type = "ArrayBuffer | null")]
    pub fn ref_generation_buffer<'env>(&self, env: &'env Env) -> Result<Option<ArrayBuffer<'env>>> {
        if self.inner.config().reference_hot_entries == 0 {
            return Ok(None);
        }
        let generation = self.inner.reference_generation();
        let ptr = Arc::as_ptr(&generation) as *mut u8;
        // SAFETY: `ptr` is the 4 bytes of an `AtomicU32` (the layout of a
        // `u32`) that `generation`, moved into the finalizer, keeps alive for
        // as long as the ArrayBuffer lives. JS only reads it.
        let buf = unsafe { ArrayBuffer::from_external(env, ptr, 4, generation, |_, g| drop(g)) }?;
        if !std::ptr::eq(buf.as_ptr(), ptr) {
            return Ok(None);
        }
        Ok(Some(buf))
    }

    /// As `refLookupCode`, for the hot tier: `[text, ms]`, the hit's text and
    /// for how many milliseconds it may be reused without asking again (until
    /// its freshness ends or its refresh-ahead point, and only while the
    /// generation read before this call is unchanged), or `null` on a miss.
    #[napi(ts_return_type = "[string, number] | null")]
    pub fn ref_lookup_hot(&self, kind: u32, id: String) -> Outcome<Option<(RefText, f64)>> {
        guard(|| {
            let kind = kind_of_code(kind)?;
            match self.inner.reference_lookup_for(kind, &id)? {
                (Lookup::Hit(text), reuse) => {
                    Ok(Some((RefText(text), reuse.as_secs_f64() * 1000.0)))
                }
                (Lookup::NotFound, _) => Err(CoreError::NotFound(kind.path(&id)).into()),
                (Lookup::Miss, _) => Ok(None),
            }
        })
    }

    /// Reference read with a shared fetch on a miss; resolves to JSON text.
    #[napi(ts_return_type = "Promise<string>")]
    pub async fn ref_get(&self, kind: String, id: String) -> Outcome<String> {
        let c = self.inner.clone();
        guard_async(async move {
            let kind = kind_of(&kind)?;
            Ok(c.reference_get(kind, &id).await?.to_string())
        })
        .await
    }

    /// Batch profile read (SPEC §10); resolves to the JSON text of each
    /// profile, in order, or `null` for an unknown user.
    #[napi(ts_return_type = "Promise<Array<string | null>>")]
    pub async fn ref_get_profiles(&self, ids: Vec<String>) -> Outcome<Vec<Option<String>>> {
        let c = self.inner.clone();
        guard_async(async move {
            Ok(c.reference_get_profiles(&ids)
                .await?
                .into_iter()
                .map(|b| b.map(|t| t.to_string()))
                .collect())
        })
        .await
    }

    /// A user's access from the core's store, or `null` for an unknown user.
    #[napi(ts_return_type = "UserAccess | null")]
    pub fn user_access(&self, user_id: String) -> Outcome<Option<UserAccess>> {
        guard(|| Ok(UserAccess::of(self.inner.user_access(&user_id))))
    }

    /// An operation's credit config from the core's store, for the replica's
    /// first read of it (`known: false` for an unknown operation).
    #[napi(ts_return_type = "CreditRead")]
    pub fn credit_cost(&self, operation_code: String) -> Outcome<CreditRead> {
        guard(|| Ok(CreditRead::of(self.inner.credit(&operation_code))))
    }

    /// A role's permissions from the core's store (`known: false` for an unknown role).
    #[napi(ts_return_type = "RoleRead")]
    pub fn role_permissions(&self, role_id: String) -> Outcome<RoleRead> {
        guard(|| Ok(RoleRead::of(self.inner.role_permissions(&role_id))))
    }

    /// A config's JSON text from the core's store (`known: false` for an unknown config).
    #[napi(ts_return_type = "ConfigRead")]
    pub fn config_text(&self, config_id: String) -> Outcome<ConfigRead> {
        guard(|| Ok(ConfigRead::of(self.inner.config_json(&config_id))))
    }

    /// Drops one reference key (a key the cache cannot hold is a no-op).
    #[napi(ts_return_type = "void")]
    pub fn invalidate(&self, key: String) -> Outcome<()> {
        guard(|| {
            self.inner.invalidate(&key);
            Ok(())
        })
    }

    /// Expiry (epoch ms) of a held reference entry, or `null`.
    #[napi(ts_return_type = "number | null")]
    pub fn cache_expiry(&self, key: String) -> Outcome<Option<f64>> {
        guard(|| Ok(self.inner.cache_expiry(&key).map(|t| t as f64)))
    }

    /// The user's available credits.
    #[napi(ts_return_type = "Promise<number>")]
    pub async fn user_credits(&self, user_id: String) -> Outcome<f64> {
        let c = self.inner.clone();
        guard_async(async move { Ok(c.user_credits(&user_id).await?) }).await
    }

    /// Deducts `amount` with `idempotencyKey`; resolves to the remaining
    /// balance. The arguments are checked in order (`userId`, `amount`,
    /// `idempotencyKey`) before anything is sent.
    #[napi(ts_return_type = "Promise<number>")]
    pub async fn deduct(
        &self,
        user_id: String,
        amount: f64,
        operation_code: Option<String>,
        idempotency_key: String,
    ) -> Outcome<f64> {
        let c = self.inner.clone();
        guard_async(async move {
            let remaining = c
                .deduct(
                    &user_id,
                    amount,
                    operation_code.as_deref(),
                    &idempotency_key,
                )
                .await?;
            Ok(remaining)
        })
        .await
    }

    /// Turns `'change'` batches on or off.
    #[napi]
    pub fn set_listen_changes(&self, on: bool) {
        self.inner.set_listen_changes(on);
    }

    /// The Rust-side metrics.
    #[napi(ts_return_type = "NativeMetrics")]
    pub fn metrics(&self) -> Outcome<NativeMetrics> {
        guard(|| Ok(native_metrics(self.inner.metrics())))
    }

    /// The Rust-side health.
    #[napi(ts_return_type = "NativeHealth")]
    pub fn health(&self) -> Outcome<NativeHealth> {
        guard(|| Ok(native_health(self.inner.health())))
    }

    /// Stops everything and releases the JS callback.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn shutdown(&self) -> Outcome<()> {
        let c = self.inner.clone();
        guard_async(async move {
            c.shutdown().await;
            Ok(())
        })
        .await
    }
}

// ---- the tenant pool -------------------------------------------------------------

/// The pool's threadsafe function: `(slot, batch)` in, `onBatch(slot, json)` called.
type PoolTsfn = ThreadsafeFunction<(u64, Batch), (), FnArgs<(f64, String)>, Status, false>;

/// Delivers every pool tenant's batches to one JS callback, tagged with the
/// tenant's slot: one threadsafe function for the whole pool, whatever the
/// number of tenants (each one is a libuv handle that every wake-up visits).
struct PoolTsfnSink {
    /// Strong until the pool shuts down, like [`TsfnSink`].
    tsfn: PoolTsfn,
}

impl PoolSink for PoolTsfnSink {
    fn deliver(&self, slot: u64, batch: Batch) {
        let _ = self
            .tsfn
            .call((slot, batch), ThreadsafeFunctionCallMode::NonBlocking);
    }
}

/// Link-level figures of a pool; see `lib/pool.js`.
#[napi(object, object_from_js = false)]
pub struct NativePoolStatus {
    /// The shared link is up and subscribed.
    pub connected: bool,
    /// Tenants loaded in the core.
    pub tenants: f64,
    /// Reconnections of the link after a loss.
    pub reconnects: f64,
    /// Times the link's queue overflowed.
    pub queue_overflows: f64,
    /// Full loads downloading now (at most `maxConcurrentLoads`).
    pub loads_in_flight: f64,
    /// With `sharedReference`: command connections opened so far (one for
    /// every tenant, plus reconnects).
    pub command_connections: f64,
}

/// The validated pool options `lib/pool.js` acts on.
#[napi(object, object_from_js = false)]
pub struct NativePoolOptions {
    /// `maxTenants`.
    pub max_tenants: f64,
    /// `idleTenantMs` (0 = never).
    pub idle_tenant_ms: f64,
    /// The channel prefix every tenant uses.
    pub channel_prefix: String,
}

/// The native half of the tenant pool; see `lib/pool.js`.
#[napi]
pub struct NativePool {
    /// The core pool.
    inner: Arc<Pool>,
}

#[napi]
impl NativePool {
    /// Validates `options` (plain JSON, without `logger`; no `tenantId`)
    /// with `envVars` as fallbacks. Throws `TypeError`/`RangeError` naming
    /// the option.
    #[napi(constructor)]
    pub fn new(
        env: Env,
        options: serde_json::Value,
        env_vars: HashMap<String, String>,
    ) -> Result<Self> {
        construct(env, || {
            let config = PoolConfig::from_json(&options, &env_vars)?;
            Ok(NativePool {
                inner: Arc::new(Pool::new(config)?),
            })
        })
    }

    /// The options the JS side acts on.
    #[napi(ts_return_type = "NativePoolOptions")]
    pub fn options(&self) -> NativePoolOptions {
        let c = self.inner.config();
        NativePoolOptions {
            max_tenants: c.max_tenants as f64,
            idle_tenant_ms: c.idle_tenant_ms as f64,
            channel_prefix: c.template.channel_prefix.clone(),
        }
    }

    /// Starts the shared link; `onBatch(slot, json)` receives every tenant's
    /// batches (slot 0: the pool's own notices).
    #[napi(ts_return_type = "void")]
    pub fn start(&self, on_batch: Function<FnArgs<(f64, String)>, ()>) -> Outcome<()> {
        guard(|| {
            let tsfn = on_batch
                .build_threadsafe_function::<(u64, Batch)>()
                .callee_handled::<false>()
                .build_callback(
                    |ctx: napi::threadsafe_function::ThreadsafeCallContext<(u64, Batch)>| {
                        let (slot, batch) = ctx.value;
                        Ok(FnArgs::from((slot as f64, batch.json.clone())))
                    },
                )?;
            let sink = Arc::new(PoolTsfnSink { tsfn });
            napi::bindgen_prelude::within_runtime_if_available(|| self.inner.start(sink))?;
            Ok(())
        })
    }

    /// Loads tenant `id`: its consumer (tasks running; await `waitReady()`)
    /// and the slot its batches carry. Throws a `RangeError` for an invalid
    /// id, `SHUTDOWN` after shutdown.
    #[napi(ts_return_type = "NativePoolTenant")]
    pub fn tenant(&self, id: String) -> Outcome<NativePoolTenant> {
        guard(|| {
            let (inner, slot) =
                napi::bindgen_prelude::within_runtime_if_available(|| self.inner.tenant(&id))?;
            Ok(NativePoolTenant {
                consumer: Some(NativeConsumer { inner }),
                slot: slot as f64,
            })
        })
    }

    /// Link-level figures.
    #[napi(ts_return_type = "NativePoolStatus")]
    pub fn status(&self) -> NativePoolStatus {
        let s = self.inner.status();
        NativePoolStatus {
            connected: s.connected,
            tenants: s.tenants as f64,
            reconnects: s.reconnects as f64,
            queue_overflows: s.queue_overflows as f64,
            loads_in_flight: s.loads_in_flight as f64,
            command_connections: s.command_connections as f64,
        }
    }

    /// Stops the link and every tenant's tasks; releases the JS callback.
    #[napi(ts_return_type = "Promise<void>")]
    pub async fn shutdown(&self) -> Outcome<()> {
        let p = self.inner.clone();
        guard_async(async move {
            p.shutdown().await;
            Ok(())
        })
        .await
    }
}

/// A loaded pool tenant: its consumer and its slot.
#[napi]
pub struct NativePoolTenant {
    /// Taken once by `take()`.
    consumer: Option<NativeConsumer>,
    /// The slot its batches carry.
    slot: f64,
}

#[napi]
impl NativePoolTenant {
    /// The slot its batches carry.
    #[napi(getter)]
    pub fn slot(&self) -> f64 {
        self.slot
    }

    /// The tenant's consumer (once).
    #[napi(ts_return_type = "NativeConsumer")]
    pub fn take(&mut self) -> Outcome<NativeConsumer> {
        guard(|| {
            self.consumer
                .take()
                .ok_or_else(|| CoreError::arg_type("the consumer was taken already").into())
        })
    }
}

// ---- the test double (smart-crm-consumer/testing) --------------------------------

/// A promise settled before the method that returns it has returned: how the
/// test double answers the methods that return promises, on the JS thread,
/// with no task or thread hop. A failure becomes the rejection through
/// [`Failure::into_js`], like an [`Outcome`]'s.
pub struct Settled<T>(Attempt<T>);

impl<T: ToNapiValue> ToNapiValue for Settled<T> {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        let mut deferred = std::ptr::null_mut();
        let mut promise = std::ptr::null_mut();
        // SAFETY: `env` is the live env of the JS thread this conversion runs on.
        unsafe {
            napi::check_status!(
                sys::napi_create_promise(env, &mut deferred, &mut promise),
                "could not create a promise"
            )?;
            let value = match val.0 {
                Ok(v) => T::to_napi_value(env, v).map_err(Failure::Napi),
                Err(f) => Err(f),
            };
            let status = match value {
                Ok(v) => sys::napi_resolve_deferred(env, deferred, v),
                Err(f) => {
                    let error = napi::JsError::from(f.into_js(env)).into_value(env);
                    sys::napi_reject_deferred(env, deferred, error)
                }
            };
            napi::check_status!(status, "could not settle a promise")?;
        }
        Ok(promise)
    }
}

/// Runs `f` like [`guard`], for a method that returns a [`Settled`] promise.
fn settle<T>(f: impl FnOnce() -> Attempt<T>) -> Settled<T> {
    Settled(guard(f).0)
}

/// One applied deduction of the test double (`crm.deductions`).
#[napi(object, object_from_js = false, use_nullable = true)]
pub struct NativeDeduction {
    /// The user charged.
    pub user_id: String,
    /// The amount deducted.
    pub amount: f64,
    /// The operation given, or `null`.
    pub operation_code: Option<String>,
    /// The idempotency key it was made with.
    pub idempotency_key: String,
    /// The balance after it.
    pub remaining: f64,
}

/// The property of the JS object that holds the `onBatch` callback: a plain
/// property, so the callback (which holds the consumer) is garbage like any
/// JS value once the consumer is, and holds no handle.
const ON_BATCH: &str = "onBatch";

/// The native half of `createTestConsumer` (`lib/testing.js`): the methods
/// `lib/consumer.js` calls on a `NativeConsumer`, with the same names and
/// results, over the core's `testing::TestConsumer` (memory: no task, socket, timer
/// or threadsafe function), plus `apply`, `setReference`, `failNext` and
/// `deductions`. Everything runs on the JS thread: a replica batch is handed
/// to `onBatch` before the call that made it returns, and the methods that
/// return promises return them settled.
#[napi]
pub struct NativeTestConsumer {
    /// The state; borrowed for one core call at a time, never while JS runs
    /// (so a listener may call back into it).
    inner: RefCell<TestConsumer>,
}

/// Hands a replica batch to the `onBatch` callback held by `this` (if
/// `start` gave one); a listener's exception is passed on.
fn deliver(this: &This, batch: String) -> Attempt<()> {
    let on_batch: Option<Function<String, ()>> = this.get_named_property(ON_BATCH)?;
    if let Some(f) = on_batch {
        f.call(batch)?;
    }
    Ok(())
}

#[napi]
impl NativeTestConsumer {
    /// Validates `options` (plain JSON, without `logger`): the seed options
    /// and every consumer option, as `NativeConsumer` does. Throws
    /// `TypeError`/`RangeError` naming the option.
    #[napi(constructor)]
    pub fn new(env: Env, options: serde_json::Value) -> Result<Self> {
        construct(env, || {
            Ok(NativeTestConsumer {
                inner: RefCell::new(TestConsumer::from_json(&options)?),
            })
        })
    }

    /// The validated tenant id.
    #[napi(getter)]
    pub fn tenant_id(&self) -> String {
        self.inner.borrow().config().tenant_id.clone()
    }

    /// Keeps `onBatch(json)`, which receives replica batches.
    #[napi(ts_return_type = "void")]
    pub fn start(&self, mut this: This, on_batch: Function<String, ()>) -> Outcome<()> {
        guard(|| {
            self.inner.borrow().start()?;
            this.set_named_property(ON_BATCH, on_batch)?;
            Ok(())
        })
    }

    /// Delivers the first load (once) and resolves; rejects with a failure
    /// armed for `initialize`, or `SHUTDOWN`.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn wait_ready(&self, this: This) -> Settled<()> {
        settle(|| {
            let batch = self.inner.borrow_mut().wait_ready()?;
            if let Some(batch) = batch {
                deliver(&this, batch)?;
            }
            Ok(())
        })
    }

    /// As `NativeConsumer.refLookup`; a failure armed for the kind's
    /// method is thrown here.
    #[napi(ts_return_type = "string | null")]
    pub fn ref_lookup(&self, kind: String, id: String) -> Outcome<Option<String>> {
        guard(|| {
            let kind = kind_of(&kind)?;
            match self.inner.borrow_mut().reference_lookup(kind, &id)? {
                Lookup::Hit(text) => Ok(Some(text.to_string())),
                Lookup::NotFound => Err(CoreError::NotFound(kind.path(&id)).into()),
                Lookup::Miss => Ok(None),
            }
        })
    }

    /// As `NativeConsumer.refGet`, from the double's reference objects.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn ref_get(&self, kind: String, id: String) -> Settled<String> {
        settle(|| {
            let kind = kind_of(&kind)?;
            Ok(self
                .inner
                .borrow_mut()
                .reference_get(kind, &id)?
                .to_string())
        })
    }

    /// As `NativeConsumer.refGetProfiles`, from the double's reference objects.
    #[napi(ts_return_type = "Promise<Array<string | null>>")]
    pub fn ref_get_profiles(&self, ids: Vec<String>) -> Settled<Vec<Option<String>>> {
        settle(|| {
            Ok(self
                .inner
                .borrow_mut()
                .reference_get_profiles(&ids)?
                .into_iter()
                .map(|b| b.map(|t| t.to_string()))
                .collect())
        })
    }

    /// As `NativeConsumer.userAccess`.
    #[napi(ts_return_type = "UserAccess | null")]
    pub fn user_access(&self, user_id: String) -> Outcome<Option<UserAccess>> {
        guard(|| Ok(UserAccess::of(self.inner.borrow().user_access(&user_id))))
    }

    /// As `NativeConsumer.creditCost`.
    #[napi(ts_return_type = "CreditRead")]
    pub fn credit_cost(&self, operation_code: String) -> Outcome<CreditRead> {
        guard(|| Ok(CreditRead::of(self.inner.borrow().credit(&operation_code))))
    }

    /// As `NativeConsumer.rolePermissions`.
    #[napi(ts_return_type = "RoleRead")]
    pub fn role_permissions(&self, role_id: String) -> Outcome<RoleRead> {
        guard(|| Ok(RoleRead::of(self.inner.borrow().role_permissions(&role_id))))
    }

    /// As `NativeConsumer.configText`.
    #[napi(ts_return_type = "ConfigRead")]
    pub fn config_text(&self, config_id: String) -> Outcome<ConfigRead> {
        guard(|| Ok(ConfigRead::of(self.inner.borrow().config_json(&config_id))))
    }

    /// Drops one reference key.
    #[napi(ts_return_type = "void")]
    pub fn invalidate(&self, key: String) -> Outcome<()> {
        guard(|| {
            self.inner.borrow_mut().invalidate(&key);
            Ok(())
        })
    }

    /// Expiry (epoch ms) of a held reference entry, or `null`.
    #[napi(ts_return_type = "number | null")]
    pub fn cache_expiry(&self, key: String) -> Outcome<Option<f64>> {
        guard(|| Ok(self.inner.borrow().cache_expiry(&key).map(|t| t as f64)))
    }

    /// The user's balance (0 when the seed has none).
    #[napi(ts_return_type = "Promise<number>")]
    pub fn user_credits(&self, user_id: String) -> Settled<f64> {
        settle(|| Ok(self.inner.borrow_mut().user_credits(&user_id)?))
    }

    /// As `NativeConsumer.deduct`, against the double's ledger.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn deduct(
        &self,
        user_id: String,
        amount: f64,
        operation_code: Option<String>,
        idempotency_key: String,
    ) -> Settled<f64> {
        settle(|| {
            Ok(self.inner.borrow_mut().deduct(
                &user_id,
                amount,
                operation_code.as_deref(),
                &idempotency_key,
            )?)
        })
    }

    /// Turns `'change'` notices on or off.
    #[napi]
    pub fn set_listen_changes(&self, on: bool) {
        self.inner.borrow_mut().set_listen_changes(on);
    }

    /// The figures of `getMetrics()` the core keeps.
    #[napi(ts_return_type = "NativeMetrics")]
    pub fn metrics(&self) -> Outcome<NativeMetrics> {
        guard(|| Ok(native_metrics(self.inner.borrow().metrics())))
    }

    /// The core's half of `health()`.
    #[napi(ts_return_type = "NativeHealth")]
    pub fn health(&self) -> Outcome<NativeHealth> {
        guard(|| Ok(native_health(self.inner.borrow().health())))
    }

    /// Frees the data and lets go of the callback.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn shutdown(&self, mut this: This) -> Settled<()> {
        settle(|| {
            self.inner.borrow_mut().shutdown();
            this.set_named_property(ON_BATCH, Null)?;
            Ok(())
        })
    }

    /// Applies one event (`dataJson`: the JSON text of its `data`) through
    /// the core's event rules and hands its replica batch to `onBatch`;
    /// returns the keys of its `'change'` event. A rejected event throws a
    /// `RangeError` naming the reason (`err.reason`).
    #[napi(ts_return_type = "string[]")]
    pub fn apply(
        &self,
        this: This,
        event_type: String,
        data_json: String,
        version: Option<f64>,
        event_id: Option<String>,
        timestamp: Option<String>,
    ) -> Outcome<Vec<String>> {
        guard(|| {
            let fields = EventFields {
                version,
                event_id,
                timestamp,
            };
            let applied = self
                .inner
                .borrow_mut()
                .apply(&event_type, &data_json, fields)
                .map_err(|e| match e {
                    ApplyError::Rejected(r) => Failure::Rejected(r),
                    ApplyError::Core(e) => Failure::Core(e),
                })?;
            if let Some(batch) = applied.batch {
                deliver(&this, batch)?;
            }
            Ok(applied.keys)
        })
    }

    /// What the Wrapper answers for reference `key` from now on: the JSON
    /// text of an object, or `null` for 404.
    #[napi(ts_return_type = "void")]
    pub fn set_reference(&self, key: String, value_json: Option<String>) -> Outcome<()> {
        guard(|| {
            Ok(self
                .inner
                .borrow_mut()
                .set_reference(&key, value_json.as_deref())?)
        })
    }

    /// The next call of public method `method` fails with `code`.
    #[napi(ts_return_type = "void")]
    pub fn fail_next(&self, method: String, code: String) -> Outcome<()> {
        guard(|| Ok(self.inner.borrow_mut().fail_next(&method, &code)?))
    }

    /// The applied deductions, in order.
    #[napi(ts_return_type = "NativeDeduction[]")]
    pub fn deductions(&self) -> Outcome<Vec<NativeDeduction>> {
        guard(|| {
            Ok(self
                .inner
                .borrow()
                .deductions()
                .iter()
                .map(|d| NativeDeduction {
                    user_id: d.user_id.clone(),
                    amount: d.amount,
                    operation_code: d.operation_code.clone(),
                    idempotency_key: d.idempotency_key.clone(),
                    remaining: d.remaining,
                })
                .collect())
        })
    }
}

/// Checks an id argument against the one id rule (`RangeError` naming `name`);
/// for methods that check an id before deciding whether to send it.
#[napi(ts_return_type = "void")]
pub fn check_id(name: String, id: String) -> Outcome<()> {
    guard(|| Ok(ids::check_path_id(&name, &id)?))
}

/// The native publisher; see `lib/publisher.js`.
#[napi]
pub struct NativePublisher {
    /// The publisher; `None` after `close()`. Publishes run on clones of it.
    inner: std::sync::Mutex<Option<Publisher>>,
}

/// Creates a publisher: validates `options` (`{ redisUrl, tenantId,
/// channelPrefix, signingSecret, connectTimeoutMs }`, throwing a
/// TypeError/RangeError naming the option) and returns at once; it connects on
/// the first publish.
#[napi(ts_return_type = "NativePublisher")]
pub fn create_publisher(
    options: serde_json::Value,
    env_vars: HashMap<String, String>,
) -> Outcome<NativePublisher> {
    guard(|| {
        let p = Publisher::from_json(&options, &env_vars)?;
        Ok(NativePublisher {
            inner: std::sync::Mutex::new(Some(p)),
        })
    })
}

#[napi]
impl NativePublisher {
    /// Publishes one event; resolves to the number of receivers. Concurrent
    /// calls share one connection; see `Publisher::publish`.
    #[napi(ts_return_type = "Promise<number>")]
    pub async fn publish(
        &self,
        topic: String,
        event_type: String,
        data: serde_json::Value,
        version: Option<i64>,
    ) -> Outcome<i64> {
        let p = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        guard_async(async move {
            let p = p.ok_or(CoreError::Shutdown)?;
            let version = match version {
                Some(v) if v < 0 => {
                    return Err(
                        CoreError::arg_range("version must be a non-negative integer").into(),
                    )
                }
                v => v.map(|v| v as u64),
            };
            Ok(p.publish(&topic, &event_type, data, version).await?)
        })
        .await
    }

    /// Closes the publisher: waiting and later publishes reject with SHUTDOWN.
    #[napi]
    pub fn close(&self) {
        if let Some(p) = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take() {
            p.close();
        }
    }
}

/// Test hook: panics inside a guarded entry point, so tests can show that a
/// Rust panic reaches JS as an `Error` (code `INTERNAL`), never as an abort.
#[napi(js_name = "__panicForTests", ts_return_type = "void")]
pub fn panic_for_tests(message: String) -> Outcome<()> {
    guard(|| panic!("{message}"))
}

/// Async variant of [`panic_for_tests`]: the promise rejects.
#[napi(js_name = "__panicForTestsAsync", ts_return_type = "Promise<void>")]
pub async fn panic_for_tests_async(message: String) -> Outcome<()> {
    guard_async(async move { panic!("{message}") }).await
}

/// Signs a message the way publishers must (test vectors, other publishers).
#[napi(ts_return_type = "string")]
pub fn sign_message(message_json: String, secret: String) -> Outcome<String> {
    guard(|| {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&message_json)
            .map_err(|_| CoreError::arg_type("message must be a JSON object"))?;
        Ok(smart_crm_core::signature::sign(&v, &Secret::new(secret)))
    })
}

/// The RFC 8785 canonical form of a JSON text.
#[napi(ts_return_type = "string")]
pub fn canonicalize(json: String) -> Outcome<String> {
    guard(|| {
        let v: serde_json::Value =
            serde_json::from_str(&json).map_err(|_| CoreError::arg_type("not JSON"))?;
        Ok(smart_crm_core::signature::canonicalize(&v))
    })
}
