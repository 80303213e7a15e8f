//! The napi binding: a thin translation layer over `smart-crm-core`.
//!
//! It converts JS values to core types and back, maps every [`CoreError`] to a
//! JS error (all error mapping lives in [`to_js_error`]), turns the core's
//! replica batches into calls of a JS callback through one threadsafe function,
//! and catches panics so that none reaches Node as an abort. The public API is
//! the JavaScript in `lib/`, which wraps the `NativeConsumer` class defined here.

#![deny(clippy::all)]

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use futures_util::FutureExt;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use smart_crm_core::config::Secret;
use smart_crm_core::ids::RefKind;
use smart_crm_core::outbox::{Batch, Sink};
use smart_crm_core::publisher::Publisher;
use smart_crm_core::reference::Lookup;
use smart_crm_core::{ArgKind, Config, Consumer, CoreError};

/// Maps a core error to a JS error. napi errors carry a fixed set of status
/// codes, so the core's code travels as a `[CODE] ` prefix of the message,
/// which `lib/errors.js` strips into `err.code`; argument errors are prefixed
/// `[TypeError:CODE]`/`[RangeError:CODE]` and rethrown as that class.
fn to_js_error(e: CoreError) -> napi::Error {
    let code = match e.arg_kind() {
        Some(ArgKind::Type) => format!("TypeError:{}", e.code()),
        Some(ArgKind::Range) => format!("RangeError:{}", e.code()),
        None => e.code().to_owned(),
    };
    let status = match e.arg_kind() {
        Some(_) => Status::InvalidArg,
        None => Status::GenericFailure,
    };
    napi::Error::new(status, format!("[{code}] {e}"))
}

/// Runs `f`, turning a panic into a JS error instead of an abort.
fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(panic_error(p)))
}

fn panic_error(p: Box<dyn std::any::Any + Send>) -> napi::Error {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    napi::Error::new(
        Status::GenericFailure,
        format!("[INTERNAL] internal error (Rust panic): {what}"),
    )
}

/// Awaits `fut`, turning a panic into a JS error.
async fn guard_async<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .unwrap_or_else(|p| Err(panic_error(p)))
}

fn kind_of(kind: &str) -> Result<RefKind> {
    Ok(match kind {
        "user" => RefKind::UserProfile,
        "hierarchy" => RefKind::Hierarchy,
        "audit" => RefKind::AuditLog,
        "historical" => RefKind::Historical,
        _ => {
            return Err(to_js_error(CoreError::arg_range(format!(
                "unknown reference kind {kind:?}"
            ))))
        }
    })
}

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

/// A user's access as the core holds it, for the JS replica's first access.
#[napi(object)]
pub struct UserAccess {
    /// False when the user is unknown (then `status` is empty).
    pub found: bool,
    /// The user's status.
    pub status: String,
    /// The user's role ids.
    pub roles: Vec<String>,
    /// Replica batches sent when this was read: cache it only if that many were applied.
    pub seq: f64,
}

/// The native half of `SmartCRMConsumer`; see `lib/consumer.js`.
#[napi]
pub struct NativeConsumer {
    /// The core consumer.
    inner: Consumer,
}

#[napi]
impl NativeConsumer {
    /// Validates `options` (plain JSON, without `logger`) with `env` as the
    /// source of fallbacks. Throws `TypeError`/`RangeError` naming the option.
    #[napi(constructor)]
    pub fn new(options: serde_json::Value, env: HashMap<String, String>) -> Result<Self> {
        guard(|| {
            let config = Config::from_json(&options, &env).map_err(to_js_error)?;
            let inner = Consumer::new(config).map_err(to_js_error)?;
            Ok(NativeConsumer { inner })
        })
    }

    /// Starts the background tasks; `onBatch(json)` receives replica batches.
    #[napi]
    pub fn start(&self, on_batch: Function<String, ()>) -> Result<()> {
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
            napi::bindgen_prelude::within_runtime_if_available(|| self.inner.start(sink))
                .map_err(to_js_error)
        })
    }

    /// Resolves after the first full load; rejects with the cause after `initTimeoutMs`.
    #[napi]
    pub async fn wait_ready(&self) -> Result<()> {
        let c = self.inner.clone();
        guard_async(async move { c.wait_ready().await.map_err(to_js_error) }).await
    }

    /// Synchronous reference hit: the JSON text, `""` for a remembered 404, or
    /// `null` on a miss.
    #[napi]
    pub fn ref_lookup(&self, key: String) -> Result<Option<String>> {
        guard(|| {
            Ok(match self.inner.reference_lookup(&key) {
                Lookup::Hit(text) => Some(text.to_string()),
                Lookup::NotFound => Some(String::new()),
                Lookup::Miss => None,
            })
        })
    }

    /// Reference read with a shared fetch on a miss; resolves to JSON text.
    #[napi]
    pub async fn ref_get(&self, kind: String, id: String) -> Result<String> {
        let c = self.inner.clone();
        guard_async(async move {
            let kind = kind_of(&kind)?;
            c.reference_get(kind, &id)
                .await
                .map(|t| t.to_string())
                .map_err(to_js_error)
        })
        .await
    }

    /// A user's access from the core's store (see [`UserAccess`]).
    #[napi]
    pub fn user_access(&self, user_id: String) -> Result<UserAccess> {
        guard(|| {
            let (access, seq) = self.inner.user_access(&user_id);
            Ok(match access {
                Some(a) => UserAccess {
                    found: true,
                    status: a.status,
                    roles: a.roles,
                    seq: seq as f64,
                },
                None => UserAccess {
                    found: false,
                    status: String::new(),
                    roles: Vec::new(),
                    seq: seq as f64,
                },
            })
        })
    }

    /// Drops one reference key.
    #[napi]
    pub fn invalidate(&self, key: String) -> Result<()> {
        guard(|| {
            self.inner.invalidate(&key);
            Ok(())
        })
    }

    /// Expiry (epoch ms) of a held reference entry, or `null`.
    #[napi]
    pub fn cache_expiry(&self, key: String) -> Result<Option<f64>> {
        guard(|| Ok(self.inner.cache_expiry(&key).map(|t| t as f64)))
    }

    /// The user's available credits.
    #[napi]
    pub async fn user_credits(&self, user_id: String) -> Result<f64> {
        let c = self.inner.clone();
        guard_async(async move { c.user_credits(&user_id).await.map_err(to_js_error) }).await
    }

    /// Deducts `amount` with `idempotencyKey`; resolves to the remaining balance.
    #[napi]
    pub async fn deduct(
        &self,
        user_id: String,
        amount: f64,
        operation_code: Option<String>,
        idempotency_key: String,
    ) -> Result<f64> {
        let c = self.inner.clone();
        guard_async(async move {
            c.deduct(
                &user_id,
                amount,
                operation_code.as_deref(),
                &idempotency_key,
            )
            .await
            .map_err(to_js_error)
        })
        .await
    }

    /// Turns `'change'` batches on or off.
    #[napi]
    pub fn set_listen_changes(&self, on: bool) {
        self.inner.set_listen_changes(on);
    }

    /// Rust-side metrics as JSON text.
    #[napi]
    pub fn metrics_json(&self) -> Result<String> {
        guard(|| {
            serde_json::to_string(&self.inner.metrics())
                .map_err(|e| to_js_error(CoreError::InvalidResponse(e.to_string())))
        })
    }

    /// Rust-side health as JSON text.
    #[napi]
    pub fn health_json(&self) -> Result<String> {
        guard(|| {
            serde_json::to_string(&self.inner.health())
                .map_err(|e| to_js_error(CoreError::InvalidResponse(e.to_string())))
        })
    }

    /// Subscribed and resynced (Rust side).
    #[napi]
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Stops everything and releases the JS callback.
    #[napi]
    pub async fn shutdown(&self) -> Result<()> {
        let c = self.inner.clone();
        guard_async(async move {
            c.shutdown().await;
            Ok(())
        })
        .await
    }
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
#[napi]
pub fn create_publisher(options: serde_json::Value) -> Result<NativePublisher> {
    guard(|| {
        let p = Publisher::from_json(&options).map_err(to_js_error)?;
        Ok(NativePublisher {
            inner: std::sync::Mutex::new(Some(p)),
        })
    })
}

#[napi]
impl NativePublisher {
    /// Publishes one event; resolves to the number of receivers. Concurrent
    /// calls share one connection; see `Publisher::publish`.
    #[napi]
    pub async fn publish(
        &self,
        topic: String,
        event_type: String,
        data: serde_json::Value,
        version: Option<i64>,
    ) -> Result<i64> {
        let p = self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone();
        guard_async(async move {
            let p = p.ok_or_else(|| to_js_error(CoreError::Shutdown))?;
            let version = match version {
                Some(v) if v < 0 => {
                    return Err(to_js_error(CoreError::arg_range(
                        "version must be a non-negative integer",
                    )))
                }
                v => v.map(|v| v as u64),
            };
            p.publish(&topic, &event_type, data, version)
                .await
                .map_err(to_js_error)
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
#[napi(js_name = "__panicForTests")]
pub fn panic_for_tests(message: String) -> Result<()> {
    guard(|| panic!("{message}"))
}

/// Async variant of [`panic_for_tests`]: the promise rejects.
#[napi(js_name = "__panicForTestsAsync")]
pub async fn panic_for_tests_async(message: String) -> Result<()> {
    guard_async(async move { panic!("{message}") }).await
}

/// Signs a message the way publishers must (test vectors, other publishers).
#[napi]
pub fn sign_message(message_json: String, secret: String) -> Result<String> {
    guard(|| {
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&message_json)
            .map_err(|_| to_js_error(CoreError::arg_type("message must be a JSON object")))?;
        Ok(smart_crm_core::signature::sign(&v, &Secret::new(secret)))
    })
}

/// The RFC 8785 canonical form of a JSON text.
#[napi]
pub fn canonicalize(json: String) -> Result<String> {
    guard(|| {
        let v: serde_json::Value = serde_json::from_str(&json)
            .map_err(|_| to_js_error(CoreError::arg_type("not JSON")))?;
        Ok(smart_crm_core::signature::canonicalize(&v))
    })
}
