//! The test double's core (SPEC §9, `smart-crm-consumer/testing`): one
//! tenant's critical store, reference objects, balances and deductions, all
//! in memory, with no task, socket or timer.
//!
//! It keeps the consumer's rules by running the consumer's code, not a copy
//! of it: options go through [`Config::from_json`]; ids, amounts and
//! idempotency keys through `ids.rs`; an applied event is a SPEC §3 message
//! (built here like a publisher's, signed when a signing secret is set) that
//! goes through [`parse_event_since`], the replay window and
//! [`CriticalStore::apply`] (versions, tombstones, validation), and its
//! replica change leaves as a [`Delta`] batch in the wire form that
//! `lib/replica.js` reads. The seed is a snapshot that
//! [`CriticalStore::from_snapshot`] builds the store from.
//!
//! What stands in for the Wrapper is plain maps: reference objects by cache
//! key (absent = 404), held in a small TTL cache as the consumer's would be;
//! balances by user (absent = 0); deduction answers by idempotency key (a
//! replayed key gets the first answer). [`TestConsumer::fail_next`] queues,
//! per public method, a failure for its next call, made as the [`CoreError`]
//! the real call would fail with.
//!
//! Everything is synchronous and runs on the caller's thread: a batch is
//! returned to the caller (the binding hands it to the JS replica before the
//! call returns), so a read right after `apply` sees the change.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::breaker::Circuit;
use crate::config::Config;
use crate::critical::{CriticalStore, FirstReads};
use crate::delta::{Delta, Notice};
use crate::error::{CoreError, Result};
use crate::ids::{
    check_amount, check_idempotency_key, check_path_id, encode_segment, is_valid_id, parse_key,
    RefKind,
};
use crate::metrics::{now_ms, Health, Metrics, MetricsSnapshot};
use crate::model::{ConfigRow, CreditRow, RoleRow, Snapshot, UserRow};
use crate::protocol::{parse_event_since, Context, Rejection, Topic, EVENT_TYPES};
use crate::reference::Lookup;
use crate::replay::ReplayWindow;
use crate::signature;

/// The options of `createTestConsumer` that seed the double; every other
/// option is a consumer option, validated by [`Config::from_json`].
pub const SEED_OPTIONS: [&str; 6] = [
    "credits",
    "roles",
    "users",
    "configs",
    "reference",
    "balances",
];

/// Stands in for `wrapperUrl` when none is given: nothing is ever requested.
const PLACEHOLDER_WRAPPER_URL: &str = "http://wrapper.invalid";

/// Bytes a reference entry weighs beyond its key and body (as `reference.rs`
/// counts them, so `referenceCacheBytes` reads alike).
const ENTRY_OVERHEAD: u64 = 96;

/// The public methods `failNext` can make fail, by the Wrapper request (or
/// the load) each one's failure stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `initialize()`: the subscription and the critical snapshot.
    Load,
    /// A reference read of this kind.
    Reference(RefKind),
    /// `GET /api/users/{id}/credits`: `getUserCredits`, and `checkCredits`,
    /// which reads the balance the same way.
    Balance,
    /// `POST /api/users/{id}/credits/deduct`.
    Deduct,
}

impl Endpoint {
    /// Slots of the failure queues.
    const COUNT: usize = 7;

    fn index(self) -> usize {
        match self {
            Endpoint::Load => 0,
            Endpoint::Reference(k) => 1 + k as usize,
            Endpoint::Balance => 5,
            Endpoint::Deduct => 6,
        }
    }

    /// The codes the real call can fail with (SPEC §2).
    fn codes(self) -> &'static [&'static str] {
        match self {
            Endpoint::Load => &[
                "REDIS_UNAVAILABLE",
                "WRAPPER_UNAVAILABLE",
                "WRAPPER_AUTH",
                "INVALID_RESPONSE",
            ],
            Endpoint::Reference(_) | Endpoint::Balance => &[
                "NOT_FOUND",
                "WRAPPER_UNAVAILABLE",
                "WRAPPER_AUTH",
                "INVALID_RESPONSE",
            ],
            Endpoint::Deduct => &[
                "INSUFFICIENT_CREDITS",
                "NOT_FOUND",
                "WRAPPER_UNAVAILABLE",
                "WRAPPER_AUTH",
                "INVALID_RESPONSE",
            ],
        }
    }
}

/// Every method `failNext` accepts, with its endpoint.
const METHODS: [(&str, Endpoint); 8] = [
    ("initialize", Endpoint::Load),
    ("getUserProfile", Endpoint::Reference(RefKind::UserProfile)),
    ("getHierarchy", Endpoint::Reference(RefKind::Hierarchy)),
    ("getAuditLog", Endpoint::Reference(RefKind::AuditLog)),
    (
        "getHistoricalData",
        Endpoint::Reference(RefKind::Historical),
    ),
    ("getUserCredits", Endpoint::Balance),
    ("checkCredits", Endpoint::Balance),
    ("deductCredits", Endpoint::Deduct),
];

/// Why [`TestConsumer::apply`] refused an event.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// Rejected for this SPEC §3 reason (and counted); nothing changed.
    Rejected(Rejection),
    /// Not the event's fault: the double was shut down.
    Core(CoreError),
}

/// The message of a rejected event: names the SPEC §3 reason first.
pub fn rejection_message(r: Rejection) -> String {
    let why = match r {
        Rejection::Malformed => {
            "a required field is missing or has the wrong type, an id breaks the id rule, \
             a cost is negative or not finite, or the version is not a non-negative integer"
        }
        Rejection::BadSignature => "unsigned or badly signed while a signingSecret is set",
        Rejection::Expired => "its timestamp is outside the window while a signingSecret is set",
        Rejection::WrongTenant => "its tenantId is not the consumer's tenant",
        Rejection::WrongTopic => "its event type belongs to another topic",
        Rejection::Stale => "its version is not newer than the one held",
        Rejection::Replay => "its eventId was applied already",
        Rejection::TooLarge => "the message exceeds 64 KiB",
        Rejection::UnknownType => "the event type is not known",
    };
    format!("event rejected: {} ({why})", r.name())
}

/// What an accepted event did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The keys of its `'change'` event (`credit:op`, `user:id`, ...).
    pub keys: Vec<String>,
    /// The replica batch to deliver now; `None` before the first load is
    /// delivered (that load then holds the change).
    pub batch: Option<String>,
}

/// The envelope fields a test may set on an applied event; the rest is filled
/// as a publisher fills it.
#[derive(Debug, Clone, Default)]
pub struct EventFields {
    /// `version`: integers travel as JSON integers, anything else as given
    /// (so `1.5` or `-1` is `malformed`, as in a real message).
    pub version: Option<f64>,
    /// `eventId`; default a fresh `test-{uuid}`.
    pub event_id: Option<String>,
    /// `timestamp`; default now (RFC 3339, ms).
    pub timestamp: Option<String>,
}

/// One applied deduction, for `crm.deductions`.
#[derive(Debug, Clone, PartialEq)]
pub struct Deduction {
    /// The user charged.
    pub user_id: String,
    /// The amount deducted.
    pub amount: f64,
    /// The operation given, if any.
    pub operation_code: Option<String>,
    /// The key it was made with.
    pub idempotency_key: String,
    /// The balance after it.
    pub remaining: f64,
}

/// A held reference answer.
#[derive(Debug)]
struct Held {
    /// The object's JSON text, or `None` for a remembered 404.
    body: Option<Arc<str>>,
    /// Until when it is a hit (epoch ms).
    fresh_until_ms: i64,
    /// Until when it is held at all (past the TTL: the stale-if-error window,
    /// which only `getCacheExpiry` and the cache size show here).
    hold_until_ms: i64,
}

/// The state behind one test double; see the module docs.
pub struct TestConsumer {
    /// The validated options.
    config: Config,
    /// The critical data, with versions and tombstones.
    store: CriticalStore,
    /// `eventId`s applied.
    replay: ReplayWindow,
    /// Counters and health flags, as a consumer keeps them.
    metrics: Metrics,
    /// `'change'` notices are recorded only while JS listens.
    listen_changes: bool,
    /// The first load was delivered (critical reads answer from then on).
    ready: bool,
    /// `shutdown()` ran.
    closed: bool,
    /// Replica batches handed out (the batch-sequence rule of `userAccess`).
    batches_sent: u64,
    /// The Wrapper's reference objects by cache key; absent = 404.
    reference: HashMap<String, Arc<str>>,
    /// The consumer's reference cache.
    cache: HashMap<String, Held>,
    /// The Wrapper's ledger; absent = 0.
    balances: HashMap<String, f64>,
    /// Deduction answers by idempotency key: `Ok(remaining)` or the 402's
    /// `available`.
    answers: HashMap<String, std::result::Result<f64, f64>>,
    /// Applied deductions, in order.
    deductions: Vec<Deduction>,
    /// Failures queued by `failNext`, per [`Endpoint`].
    failures: [VecDeque<&'static str>; Endpoint::COUNT],
}

impl std::fmt::Debug for TestConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestConsumer")
            .field("tenant_id", &self.config.tenant_id)
            .field("ready", &self.ready)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl TestConsumer {
    /// Validates `options` (plain JSON, without `logger`): the seed options
    /// ([`SEED_OPTIONS`]) here, every other one with [`Config::from_json`]
    /// (a placeholder `wrapperUrl` when none is given; the environment is not
    /// read, so a test never depends on it). Errors name the option, as the
    /// consumer's constructor does.
    pub fn from_json(options: &Value) -> Result<TestConsumer> {
        let Value::Object(obj) = options else {
            return Err(CoreError::option_type("options", "an object"));
        };
        let mut rest = obj.clone();
        let mut seed = Map::new();
        for k in SEED_OPTIONS {
            if let Some(v) = rest.remove(k) {
                seed.insert(k.to_owned(), v);
            }
        }
        if rest.get("wrapperUrl").is_none_or(Value::is_null) {
            rest.insert("wrapperUrl".into(), PLACEHOLDER_WRAPPER_URL.into());
        }
        let config = Config::from_json(&Value::Object(rest), &HashMap::new())?;
        let Seed {
            snapshot,
            reference,
            balances,
        } = Seed::parse(&seed)?;
        let store = CriticalStore::from_snapshot(snapshot)?;
        Ok(TestConsumer {
            config,
            store,
            replay: ReplayWindow::default(),
            metrics: Metrics::default(),
            listen_changes: false,
            ready: false,
            closed: false,
            batches_sent: 0,
            reference,
            cache: HashMap::new(),
            balances,
            answers: HashMap::new(),
            deductions: Vec::new(),
            failures: Default::default(),
        })
    }

    /// The validated options.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(CoreError::Shutdown)
        } else {
            Ok(())
        }
    }

    /// `start`: fails with `SHUTDOWN` after [`TestConsumer::shutdown`]; the
    /// first load waits for [`TestConsumer::wait_ready`].
    pub fn start(&self) -> Result<()> {
        self.check_open()
    }

    /// `initialize()`: the first call delivers the first load, a batch of
    /// the whole store with the notices a real first load sends
    /// (`'resync'` `initial`, ready, `'connection'`); later calls deliver
    /// nothing. A failure armed for `initialize` is taken first: the call
    /// fails and the next one loads.
    pub fn wait_ready(&mut self) -> Result<Option<String>> {
        self.check_open()?;
        self.take_failure(Endpoint::Load, "GET", "/api/credits/configs", None)?;
        if self.ready {
            return Ok(None);
        }
        self.ready = true;
        let m = &self.metrics;
        m.redis_down.store(false, Relaxed);
        m.wrapper_failing.store(false, Relaxed);
        m.ready.store(true, Relaxed);
        m.connected.store(true, Relaxed);
        m.last_sync_at.store(now_ms(), Relaxed);
        m.source.store(1, Relaxed);
        let mut delta = Delta::default();
        CriticalStore::default().diff_into(&self.store, &mut delta);
        delta.notice(loaded("initial", now_ms()));
        delta.notice(Notice::Ready);
        delta.notice(Notice::Connection { connected: true });
        Ok(Some(self.send(&delta)))
    }

    fn send(&mut self, delta: &Delta) -> String {
        self.batches_sent += 1;
        delta.to_json()
    }

    /// Applies one event of `event_type` with `data_json` (the JSON text of
    /// its `data`) as a consumer applies one from Redis: the SPEC §3 message
    /// is built (and signed with a signing secret), parsed, checked against
    /// the replay window and applied to the store. A rejection is counted
    /// under its reason and changes nothing. A `resync-required` reloads at
    /// once from the store's own live rows (tombstones go, as in a real full
    /// reload) and drops the reference cache.
    pub fn apply(
        &mut self,
        event_type: &str,
        data_json: &str,
        fields: EventFields,
    ) -> std::result::Result<Applied, ApplyError> {
        if self.closed {
            return Err(ApplyError::Core(CoreError::Shutdown));
        }
        Metrics::inc(&self.metrics.events_received);
        let now = now_ms();
        self.metrics.last_event_at.store(now, Relaxed);
        self.accept(event_type, data_json, fields, now)
            .map_err(|r| {
                self.metrics.reject(r);
                ApplyError::Rejected(r)
            })
    }

    fn accept(
        &mut self,
        event_type: &str,
        data_json: &str,
        fields: EventFields,
        now: i64,
    ) -> std::result::Result<Applied, Rejection> {
        let data: Value = serde_json::from_str(data_json).map_err(|_| Rejection::Malformed)?;
        let payload = self.message(event_type, data, fields, now);
        let topic = EVENT_TYPES
            .iter()
            .find(|(t, _)| *t == event_type)
            .map_or(Topic::Control, |(_, topic)| *topic);
        let ctx = Context {
            tenant_id: &self.config.tenant_id,
            topic,
            signing_secret: self.config.signing_secret.as_ref(),
            now_ms: now,
        };
        let parsed = parse_event_since(&payload, &ctx, None)?;
        let ev = parsed.event;
        if ev
            .event_id
            .as_deref()
            .is_some_and(|id| self.replay.seen(id))
        {
            return Err(Rejection::Replay);
        }
        let mut delta = Delta::default();
        let out = self.store.apply(&ev, &mut delta)?;
        if let Some(id) = &ev.event_id {
            self.replay.remember_event(id, parsed.timestamp_ms);
        }
        Metrics::inc(&self.metrics.events_applied);
        for key in &out.invalidate {
            self.cache.remove(key);
        }
        let keys = ev.change_keys();
        if self.listen_changes && !keys.is_empty() {
            let limit = self.config.limits.pending_changes;
            delta.push_change(ev.event_type, keys.clone(), limit);
        }
        if out.resync {
            self.reload(&mut delta, now);
        }
        let batch = if self.ready {
            Some(self.send(&delta))
        } else {
            None
        };
        Ok(Applied { keys, batch })
    }

    /// The SPEC §3 message: `eventId`, `eventType`, `tenantId`, `version`,
    /// `timestamp`, `data`, and `signature` with a signing secret.
    fn message(&self, event_type: &str, data: Value, f: EventFields, now: i64) -> Vec<u8> {
        let mut m = Map::new();
        let event_id = f
            .event_id
            .unwrap_or_else(|| format!("test-{}", uuid::Uuid::new_v4()));
        m.insert("eventId".into(), event_id.into());
        m.insert("eventType".into(), event_type.into());
        m.insert("tenantId".into(), self.config.tenant_id.clone().into());
        if let Some(v) = f.version {
            m.insert("version".into(), version_value(v));
        }
        let timestamp = f.timestamp.unwrap_or_else(|| {
            chrono::DateTime::from_timestamp_millis(now)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        });
        m.insert("timestamp".into(), timestamp.into());
        m.insert("data".into(), data);
        if let Some(keys) = &self.config.signing_secret {
            let sig = signature::sign_with(&m, keys);
            m.insert("signature".into(), sig.into());
        }
        // Serialising a map of JSON values cannot fail.
        serde_json::to_vec(&m).unwrap_or_default()
    }

    /// A full reload from a Wrapper holding exactly the store's live rows.
    fn reload(&mut self, delta: &mut Delta, now: i64) {
        if let Ok(new) = CriticalStore::from_snapshot(self.store.rows()) {
            self.store.diff_into(&new, delta);
            self.store = new;
        }
        self.cache.clear();
        Metrics::inc(&self.metrics.resyncs);
        self.metrics.last_sync_at.store(now, Relaxed);
        delta.notice(loaded("resync-required", now));
    }

    /// Takes the next failure queued for `endpoint`: the error its call fails
    /// with, counted as a failed Wrapper request (a Redis failure is not one).
    fn take_failure(
        &mut self,
        endpoint: Endpoint,
        method: &str,
        path: &str,
        available: Option<f64>,
    ) -> Result<()> {
        let Some(code) = self.failures[endpoint.index()].pop_front() else {
            return Ok(());
        };
        let m = &self.metrics;
        let why = format!("{method} {path}: simulated by failNext");
        let e = match code {
            "REDIS_UNAVAILABLE" => {
                m.redis_down.store(true, Relaxed);
                return Err(CoreError::RedisUnavailable("simulated by failNext".into()));
            }
            "NOT_FOUND" => CoreError::NotFound(path.to_owned()),
            "WRAPPER_AUTH" => CoreError::WrapperAuth(401),
            "INVALID_RESPONSE" => CoreError::InvalidResponse(why),
            "INSUFFICIENT_CREDITS" => CoreError::InsufficientCredits { available },
            _ => CoreError::WrapperUnavailable(why),
        };
        Metrics::inc(&m.wrapper_requests);
        Metrics::inc(&m.wrapper_errors);
        m.wrapper_failing
            .store(matches!(e, CoreError::WrapperUnavailable(_)), Relaxed);
        Err(e)
    }

    /// Counts a Wrapper request that was answered (`ok`: with a 2xx).
    fn answered(&self, ok: bool) {
        let m = &self.metrics;
        Metrics::inc(&m.wrapper_requests);
        if !ok {
            Metrics::inc(&m.wrapper_errors);
        }
        m.wrapper_failing.store(false, Relaxed);
    }

    /// `failNext(method, code)`: the next call of `method` fails with
    /// `code` (queued: two calls fail the next two). A `RangeError`-class
    /// error for a method or code it does not know.
    pub fn fail_next(&mut self, method: &str, code: &str) -> Result<()> {
        self.check_open()?;
        let Some(&(_, endpoint)) = METHODS.iter().find(|(m, _)| *m == method) else {
            let names: Vec<&str> = METHODS.iter().map(|(m, _)| *m).collect();
            return Err(CoreError::arg_range(format!(
                "method must be one of {}",
                names.join(", ")
            )));
        };
        let Some(&code) = endpoint.codes().iter().find(|c| **c == code) else {
            return Err(CoreError::arg_range(format!(
                "code must be one of {} for {method}",
                endpoint.codes().join(", ")
            )));
        };
        self.failures[endpoint.index()].push_back(code);
        Ok(())
    }

    /// The synchronous reference read: a failure queued for the kind's
    /// method is taken here (the first native call of every reference
    /// read), after the id is checked.
    pub fn reference_lookup(&mut self, kind: RefKind, id: &str) -> Result<Lookup> {
        self.check_open()?;
        check_path_id(kind.arg_name(), id)?;
        self.take_failure(Endpoint::Reference(kind), "GET", &kind.path(id), None)?;
        let now = now_ms();
        match self.cache.get(&kind.key(id)) {
            Some(h) if now < h.fresh_until_ms => {
                Metrics::inc(&self.metrics.reference_hits);
                Ok(match &h.body {
                    Some(body) => Lookup::Hit(body.clone()),
                    None => Lookup::NotFound,
                })
            }
            _ => Ok(Lookup::Miss),
        }
    }

    /// The reference read on a miss: asks the Wrapper's map and holds the
    /// answer for the kind's TTL (a 404 for `ttl.notFound`).
    pub fn reference_get(&mut self, kind: RefKind, id: &str) -> Result<Arc<str>> {
        self.check_open()?;
        check_path_id(kind.arg_name(), id)?;
        Metrics::inc(&self.metrics.reference_misses);
        let key = kind.key(id);
        let body = self.reference.get(&key).cloned();
        self.answered(body.is_some());
        let ttl = &self.config.ttl;
        let (fresh, stale) = match &body {
            Some(_) => {
                let fresh = match kind {
                    RefKind::UserProfile => ttl.user_profiles,
                    RefKind::Hierarchy => ttl.hierarchy,
                    RefKind::AuditLog => ttl.audit_logs,
                    RefKind::Historical => ttl.historical_data,
                };
                (fresh, self.config.stale_if_error)
            }
            None => (ttl.not_found, std::time::Duration::ZERO),
        };
        let fresh_until_ms = now_ms() + fresh.as_millis() as i64;
        let held = Held {
            body: body.clone(),
            fresh_until_ms,
            hold_until_ms: fresh_until_ms + stale.as_millis() as i64,
        };
        self.cache.insert(key, held);
        body.ok_or_else(|| CoreError::NotFound(kind.path(id)))
    }

    /// The batch profile read (SPEC §10), from the same memory: each id a
    /// hit or a [`TestConsumer::reference_get`], in order; `None` for an
    /// unknown user. Every id is checked first (a `RangeError` names `ids[i]`).
    pub fn reference_get_profiles(&mut self, ids: &[String]) -> Result<Vec<Option<Arc<str>>>> {
        self.check_open()?;
        for (i, id) in ids.iter().enumerate() {
            check_path_id(&format!("ids[{i}]"), id)?;
        }
        let kind = RefKind::UserProfile;
        let mut seen: std::collections::HashMap<&str, Option<Arc<str>>> =
            std::collections::HashMap::new();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(answer) = seen.get(id.as_str()) {
                out.push(answer.clone());
                continue;
            }
            let answer = match self.reference_lookup(kind, id)? {
                Lookup::Hit(b) => Some(b),
                Lookup::NotFound => None,
                Lookup::Miss => match self.reference_get(kind, id) {
                    Ok(b) => Some(b),
                    Err(CoreError::NotFound(_)) => None,
                    Err(e) => return Err(e),
                },
            };
            seen.insert(id, answer.clone());
            out.push(answer);
        }
        Ok(out)
    }

    /// Drops one reference key from the cache.
    pub fn invalidate(&mut self, key: &str) {
        self.cache.remove(key);
    }

    /// Expiry (epoch ms) of a held reference entry.
    pub fn cache_expiry(&self, key: &str) -> Option<i64> {
        let h = self.cache.get(key)?;
        (now_ms() <= h.hold_until_ms).then_some(h.fresh_until_ms)
    }

    /// `setReference(key, value)`: what the Wrapper answers for `key` from
    /// now on (`None` = 404). The held entry is dropped, as the Wrapper's
    /// change event would drop it, so the next read sees the new answer.
    pub fn set_reference(&mut self, key: &str, value_json: Option<&str>) -> Result<()> {
        self.check_open()?;
        if parse_key(key).is_none() {
            return Err(CoreError::arg_range(
                "key must be a reference cache key: user:{id}, hierarchy:{id}, audit:{id} or \
                 historical:{key}, with an id that follows the id rule",
            ));
        }
        match value_json {
            None => {
                self.reference.remove(key);
            }
            Some(text) => {
                let v: Value = serde_json::from_str(text)
                    .map_err(|_| CoreError::arg_type("value must be a JSON object or null"))?;
                if !v.is_object() {
                    return Err(CoreError::arg_type("value must be a JSON object or null"));
                }
                self.reference.insert(key.to_owned(), Arc::from(text));
            }
        }
        self.cache.remove(key);
        Ok(())
    }

    fn balance(&self, user_id: &str) -> f64 {
        self.balances.get(user_id).copied().unwrap_or(0.0)
    }

    /// `getUserCredits` (and the balance `checkCredits` reads).
    pub fn user_credits(&mut self, user_id: &str) -> Result<f64> {
        self.check_open()?;
        check_path_id("userId", user_id)?;
        let path = format!("/api/users/{}/credits", encode_segment(user_id));
        self.take_failure(Endpoint::Balance, "GET", &path, None)?;
        self.answered(true);
        Ok(self.balance(user_id))
    }

    /// `deductCredits`: the arguments checked as the consumer checks them,
    /// then the Wrapper's ledger: a key seen before gets its first answer; an
    /// amount over the balance is `INSUFFICIENT_CREDITS` with `available`;
    /// otherwise the balance goes down and the deduction is logged. A queued
    /// failure is taken before the ledger is asked: nothing is deducted, and
    /// a retry with the same key is charged once.
    pub fn deduct(
        &mut self,
        user_id: &str,
        amount: f64,
        operation_code: Option<&str>,
        idempotency_key: &str,
    ) -> Result<f64> {
        self.check_open()?;
        check_path_id("userId", user_id)?;
        check_amount(amount)?;
        check_idempotency_key(idempotency_key)?;
        let path = format!("/api/users/{}/credits/deduct", encode_segment(user_id));
        let balance = self.balance(user_id);
        self.take_failure(Endpoint::Deduct, "POST", &path, Some(balance))?;
        let answer = match self.answers.get(idempotency_key) {
            Some(first) => *first,
            None => {
                let answer = if amount > balance {
                    Err(balance)
                } else {
                    let remaining = balance - amount;
                    self.balances.insert(user_id.to_owned(), remaining);
                    self.deductions.push(Deduction {
                        user_id: user_id.to_owned(),
                        amount,
                        operation_code: operation_code.map(str::to_owned),
                        idempotency_key: idempotency_key.to_owned(),
                        remaining,
                    });
                    Ok(remaining)
                };
                self.answers.insert(idempotency_key.to_owned(), answer);
                answer
            }
        };
        self.answered(answer.is_ok());
        answer.map_err(|available| CoreError::InsufficientCredits {
            available: Some(available),
        })
    }

    /// Applied deductions, in order.
    pub fn deductions(&self) -> &[Deduction] {
        &self.deductions
    }

    /// Turns `'change'` notices on or off.
    pub fn set_listen_changes(&mut self, on: bool) {
        self.listen_changes = on;
    }

    /// The counters, with cache sizes.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut m = self.metrics.snapshot();
        let now = now_ms();
        for (key, h) in self.cache.iter().filter(|(_, h)| now <= h.hold_until_ms) {
            m.reference_cache_size += 1;
            let body = h.body.as_deref().map_or(0, str::len);
            m.reference_cache_bytes += (key.len() + body) as u64 + ENTRY_OVERHEAD;
        }
        m.critical_cache_size = self.store.sizes().iter().sum::<usize>() as u64;
        m
    }

    /// Health as a consumer reports it (the breaker is always closed).
    pub fn health(&self) -> Health {
        self.metrics.health(Circuit::Closed)
    }

    /// Frees the data; later calls fail with `SHUTDOWN`. The deductions log
    /// stays readable. Idempotent.
    pub fn shutdown(&mut self) {
        self.closed = true;
        self.metrics.connected.store(false, Relaxed);
        self.store = CriticalStore::default();
        self.cache = HashMap::new();
        self.reference = HashMap::new();
        self.balances = HashMap::new();
        self.answers = HashMap::new();
    }
}

impl FirstReads for TestConsumer {
    /// With the batches handed out so far; nothing before the first load is
    /// delivered (as a consumer's store is empty then).
    fn read_store<T>(&self, read: impl FnOnce(&CriticalStore) -> Option<T>) -> (Option<T>, u64) {
        let value = if self.ready { read(&self.store) } else { None };
        (value, self.batches_sent)
    }
}

/// The `resync` notice of a full load made at `now` (in memory: it takes no time).
fn loaded(reason: &str, now: i64) -> Notice {
    Notice::Resync {
        reason: reason.to_owned(),
        started_at: Some(now),
        duration_ms: Some(0),
        source: Some("wrapper"),
    }
}

/// A `version` as the JSON number a publisher would send: integers as
/// integers (so a negative one stays negative and is `malformed`), others
/// as floats (`malformed` too).
fn version_value(v: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if v.fract() == 0.0 && v.abs() <= EXACT {
        Value::from(v as i64)
    } else {
        serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

/// The seed options, parsed.
struct Seed {
    /// Critical data, as a Wrapper's snapshot.
    snapshot: Snapshot,
    /// Reference objects by cache key (a `null` seed entry is absent: 404).
    reference: HashMap<String, Arc<str>>,
    /// Balances by user.
    balances: HashMap<String, f64>,
}

/// The id rule, for messages about seed options.
const ID_RULE: &str = "1-256 bytes without control characters, and not '.' or '..'";

/// `option[key]`, for messages.
fn entry(option: &str, key: &str) -> String {
    format!("{option}[{key:?}]")
}

fn seed_object<'a>(
    seed: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>> {
    match seed.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(CoreError::option_type(name, "an object")),
    }
}

fn seed_id(option: &str, id: &str) -> Result<()> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(CoreError::option_range(
            option,
            format!("an object whose keys are ids ({ID_RULE}); {id:?} is not"),
        ))
    }
}

fn strings(name: &str, v: &Value, what: &str) -> Result<Vec<String>> {
    let bad = || CoreError::option_type(name, what);
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(bad))
            .collect(),
        _ => Err(bad()),
    }
}

impl Seed {
    fn parse(seed: &Map<String, Value>) -> Result<Seed> {
        let mut snapshot = Snapshot::default();
        for (op, v) in seed_object(seed, "credits")?.into_iter().flatten() {
            seed_id("credits", op)?;
            let name = entry("credits", op);
            let (cost, active) = match v {
                Value::Null => (0.0, false),
                Value::Number(n) => {
                    let cost = n.as_f64().unwrap_or(f64::NAN);
                    if !(cost.is_finite() && cost >= 0.0) {
                        return Err(CoreError::option_range(
                            &name,
                            "a finite, non-negative number (the cost), or null (inactive)",
                        ));
                    }
                    (cost, true)
                }
                _ => {
                    return Err(CoreError::option_type(
                        &name,
                        "a number (the cost), or null (inactive)",
                    ))
                }
            };
            snapshot.credits.push(CreditRow {
                operation_code: op.clone(),
                credit_cost: cost,
                is_active: Some(active),
                version: None,
            });
        }
        for (id, v) in seed_object(seed, "roles")?.into_iter().flatten() {
            seed_id("roles", id)?;
            let permissions = strings(&entry("roles", id), v, "an array of permission strings")?;
            snapshot.roles.push(RoleRow {
                role_id: id.clone(),
                permissions,
                version: None,
            });
        }
        for (id, v) in seed_object(seed, "users")?.into_iter().flatten() {
            seed_id("users", id)?;
            let name = entry("users", id);
            let Value::Object(u) = v else {
                return Err(CoreError::option_type(&name, "an object { status, roles }"));
            };
            if let Some(k) = u.keys().find(|k| *k != "status" && *k != "roles") {
                return Err(CoreError::option_type(
                    &format!("{name}.{k}"),
                    "absent (a user has `status` and `roles`)",
                ));
            }
            let status = match u.get("status") {
                Some(Value::String(s)) => s.clone(),
                _ => {
                    return Err(CoreError::option_type(
                        &format!("{name}.status"),
                        "a string (e.g. 'active')",
                    ))
                }
            };
            let roles_name = format!("{name}.roles");
            let roles = match u.get("roles") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => strings(&roles_name, v, "an array of role ids")?,
            };
            if roles.iter().any(|r| !is_valid_id(r)) {
                return Err(CoreError::option_range(
                    &roles_name,
                    format!("an array of role ids ({ID_RULE})"),
                ));
            }
            snapshot.users.push(UserRow {
                user_id: id.clone(),
                status,
                roles,
                version: None,
            });
        }
        for (id, v) in seed_object(seed, "configs")?.into_iter().flatten() {
            seed_id("configs", id)?;
            snapshot.configs.push(ConfigRow {
                config_id: id.clone(),
                config: v.clone(),
                version: None,
            });
        }
        let mut reference = HashMap::new();
        for (key, v) in seed_object(seed, "reference")?.into_iter().flatten() {
            if parse_key(key).is_none() {
                return Err(CoreError::option_range(
                    "reference",
                    format!(
                        "an object whose keys are reference cache keys (user:{{id}}, \
                         hierarchy:{{id}}, audit:{{id}}, historical:{{key}}; ids {ID_RULE}); \
                         {key:?} is not"
                    ),
                ));
            }
            match v {
                Value::Null => {}
                Value::Object(_) => {
                    reference.insert(key.clone(), Arc::from(v.to_string()));
                }
                _ => {
                    return Err(CoreError::option_type(
                        &entry("reference", key),
                        "an object, or null (the Wrapper answers 404)",
                    ))
                }
            }
        }
        let mut balances = HashMap::new();
        for (id, v) in seed_object(seed, "balances")?.into_iter().flatten() {
            seed_id("balances", id)?;
            let name = entry("balances", id);
            let Value::Number(n) = v else {
                return Err(CoreError::option_type(&name, "a number"));
            };
            let b = n.as_f64().unwrap_or(f64::NAN);
            if !b.is_finite() {
                return Err(CoreError::option_range(&name, "a finite number"));
            }
            balances.insert(id.clone(), b);
        }
        Ok(Seed {
            snapshot,
            reference,
            balances,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Credit;
    use crate::ArgKind;
    use serde_json::json;

    fn seeded(extra: Value) -> TestConsumer {
        let mut o = json!({
            "tenantId": "acme",
            "credits": { "crm.leads.create": 2.5, "crm.old": null },
            "roles": { "sales": ["crm.leads.*"] },
            "users": { "u1": { "status": "active", "roles": ["sales"] } },
            "configs": { "limits": { "maxLeadsPerDay": 500 } },
            "reference": { "user:u1": { "name": "Ann" }, "user:gone": null },
            "balances": { "u1": 100 },
        });
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        TestConsumer::from_json(&o).unwrap()
    }

    fn ready(extra: Value) -> TestConsumer {
        let mut t = seeded(extra);
        t.wait_ready().unwrap().unwrap();
        t
    }

    fn wire(batch: &str) -> Value {
        serde_json::from_str(batch).unwrap()
    }

    fn apply(
        t: &mut TestConsumer,
        ty: &str,
        data: Value,
        version: Option<f64>,
    ) -> std::result::Result<Applied, ApplyError> {
        let fields = EventFields {
            version,
            ..Default::default()
        };
        t.apply(ty, &data.to_string(), fields)
    }

    fn option_error(o: Value) -> CoreError {
        TestConsumer::from_json(&o).unwrap_err()
    }

    #[test]
    fn the_first_load_is_the_seed() {
        let mut t = seeded(json!({}));
        assert_eq!(t.user_access("u1").0, None, "nothing before initialize");
        let b = wire(&t.wait_ready().unwrap().unwrap());
        assert_eq!(
            b["credits"],
            json!([["crm.leads.create", 2.5], ["crm.old", null]])
        );
        assert_eq!(b["roles"], json!([["sales", ["crm.leads.*"]]]));
        assert_eq!(b["usersReset"], true);
        assert_eq!(
            b["configs"],
            json!([["limits", "{\"maxLeadsPerDay\":500}"]])
        );
        let mut notices = b["notices"].clone();
        let started = notices[0]["startedAt"].take().as_i64().unwrap();
        assert!((started - now_ms()).abs() < 5_000);
        assert_eq!(
            notices,
            json!([{"kind":"resync","reason":"initial","startedAt":null,"durationMs":0,"source":"wrapper"},
                   {"kind":"ready"},{"kind":"connection","connected":true}])
        );
        let (a, seq) = t.user_access("u1");
        assert_eq!(&*a.unwrap().roles()[0], "sales");
        assert_eq!(seq, 1);
        assert_eq!(t.wait_ready().unwrap(), None, "once");
        let h = t.health();
        assert!(h.ready && h.connected && !h.degraded);
        assert_eq!(h.source, Some("wrapper"));
        assert_eq!(t.metrics().critical_cache_size, 5);
    }

    #[test]
    fn the_first_reads_tell_inactive_from_unknown_with_the_batches_sent() {
        let mut t = seeded(json!({}));
        assert_eq!(
            t.credit("crm.leads.create"),
            (None, 0),
            "nothing before initialize"
        );
        t.wait_ready().unwrap();
        let active = Credit {
            cost: 2.5,
            active: true,
        };
        assert_eq!(t.credit("crm.leads.create"), (Some(active), 1));
        let (old, _) = t.credit("crm.old");
        assert!(!old.unwrap().active, "inactive, yet known");
        assert_eq!(t.credit("crm.nope"), (None, 1));
        assert_eq!(
            t.role_permissions("sales"),
            (Some(vec!["crm.leads.*".to_string()]), 1)
        );
        assert_eq!(t.role_permissions("nope"), (None, 1));
        assert_eq!(
            t.config_json("limits"),
            (Some(r#"{"maxLeadsPerDay":500}"#.to_string()), 1)
        );
        assert_eq!(t.config_json("nope"), (None, 1));
        t.apply(
            "credit-config-changed",
            r#"{"operationCode":"crm.nope","newValue":1}"#,
            EventFields::default(),
        )
        .unwrap();
        let (created, seq) = t.credit("crm.nope");
        assert_eq!((created.unwrap().cost, seq), (1.0, 2), "one more batch");
    }

    #[test]
    fn options_are_the_consumers_and_the_seed_is_checked() {
        let e = option_error(json!({}));
        assert!(e.to_string().contains("`tenantId`"), "{e}");
        let e = option_error(json!({"tenantId": "a:b"}));
        assert_eq!(e.arg_kind(), Some(ArgKind::Range));
        let e = option_error(json!({"tenantId": "t", "bogus": 1}));
        assert!(e.to_string().contains("`bogus`"), "{e}");
        let e = option_error(json!({"tenantId": "t", "wrapperUrl": "ftp://x"}));
        assert!(e.to_string().contains("`wrapperUrl`"), "{e}");
        let e = option_error(json!({"tenantId": "t", "heartbeatMs": -1}));
        assert!(e.to_string().contains("`heartbeatMs`"), "{e}");
        let t = TestConsumer::from_json(&json!({"tenantId": "t"})).unwrap();
        assert_eq!(t.config().wrapper_url, PLACEHOLDER_WRAPPER_URL);
        let cases = [
            (json!({"credits": []}), "`credits`", ArgKind::Type),
            (
                json!({"credits": {"a": -1}}),
                "`credits[\"a\"]`",
                ArgKind::Range,
            ),
            (
                json!({"credits": {"a": "3"}}),
                "`credits[\"a\"]`",
                ArgKind::Type,
            ),
            (json!({"credits": {"..": 1}}), "`credits`", ArgKind::Range),
            (
                json!({"roles": {"r": "x"}}),
                "`roles[\"r\"]`",
                ArgKind::Type,
            ),
            (
                json!({"roles": {"r": [1]}}),
                "`roles[\"r\"]`",
                ArgKind::Type,
            ),
            (
                json!({"users": {"u": {"roles": []}}}),
                "`users[\"u\"].status`",
                ArgKind::Type,
            ),
            (
                json!({"users": {"u": {"status": "active", "role": []}}}),
                "`users[\"u\"].role`",
                ArgKind::Type,
            ),
            (
                json!({"users": {"u": {"status": "active", "roles": [""]}}}),
                "`users[\"u\"].roles`",
                ArgKind::Range,
            ),
            (
                json!({"users": {"u": "active"}}),
                "`users[\"u\"]`",
                ArgKind::Type,
            ),
            (json!({"configs": {"": 1}}), "`configs`", ArgKind::Range),
            (
                json!({"reference": {"credit:x": {}}}),
                "`reference`",
                ArgKind::Range,
            ),
            (
                json!({"reference": {"user:x": "Ann"}}),
                "`reference[\"user:x\"]`",
                ArgKind::Type,
            ),
            (
                json!({"balances": {"u": "1"}}),
                "`balances[\"u\"]`",
                ArgKind::Type,
            ),
        ];
        for (extra, names, kind) in cases {
            let mut o = json!({"tenantId": "t"});
            for (k, v) in extra.as_object().unwrap() {
                o[k] = v.clone();
            }
            let e = option_error(o);
            assert_eq!(e.code(), "ERR_INVALID_OPTION", "{extra}");
            assert_eq!(e.arg_kind(), Some(kind), "{extra}: {e}");
            assert!(e.to_string().contains(names), "{extra}: {e}");
        }
    }

    #[test]
    fn events_go_through_the_event_rules() {
        let mut t = ready(json!({}));
        let a = apply(
            &mut t,
            "credit-config-changed",
            json!({"operationCode": "crm.leads.create", "newValue": 3}),
            Some(5.0),
        )
        .unwrap();
        assert_eq!(a.keys, vec!["credit:crm.leads.create".to_string()]);
        let b = wire(a.batch.as_deref().unwrap());
        assert_eq!(b["credits"], json!([["crm.leads.create", 3.0]]));
        assert_eq!(
            b["notices"],
            json!([]),
            "no 'change' notice without a listener"
        );
        // versions
        for v in [5.0, 4.0] {
            let e = apply(
                &mut t,
                "credit-config-changed",
                json!({"operationCode": "crm.leads.create", "newValue": 9}),
                Some(v),
            );
            assert_eq!(e, Err(ApplyError::Rejected(Rejection::Stale)));
        }
        assert_eq!(t.store.credit_cost("crm.leads.create"), Some(3.0));
        // tombstones
        apply(
            &mut t,
            "credit-config-deleted",
            json!({"operationCode": "crm.leads.create"}),
            Some(7.0),
        )
        .unwrap();
        let e = apply(
            &mut t,
            "credit-config-changed",
            json!({"operationCode": "crm.leads.create", "newValue": 1}),
            Some(6.0),
        );
        assert_eq!(e, Err(ApplyError::Rejected(Rejection::Stale)));
        assert_eq!(t.store.credit_cost("crm.leads.create"), None);
        // validation
        let cases = [
            (
                "credit-config-changed",
                json!({"operationCode": "a", "newValue": -1}),
                None,
                Rejection::Malformed,
            ),
            (
                "credit-config-changed",
                json!({"operationCode": "a"}),
                None,
                Rejection::Malformed,
            ),
            (
                "credit-config-changed",
                json!({"operationCode": "a", "newValue": 1}),
                Some(1.5),
                Rejection::Malformed,
            ),
            (
                "credit-config-changed",
                json!({"operationCode": "a", "newValue": 1}),
                Some(-1.0),
                Rejection::Malformed,
            ),
            (
                "role-changed",
                json!({"roleId": "..", "permissions": []}),
                None,
                Rejection::Malformed,
            ),
            (
                "credit-config-exploded",
                json!({}),
                None,
                Rejection::UnknownType,
            ),
            ("user-changed", json!([]), None, Rejection::Malformed),
            (
                "user-changed",
                json!({"userId": "u", "pad": "x".repeat(70_000)}),
                None,
                Rejection::TooLarge,
            ),
        ];
        for (ty, data, version, reason) in cases {
            assert_eq!(
                apply(&mut t, ty, data.clone(), version),
                Err(ApplyError::Rejected(reason)),
                "{ty} {data}"
            );
        }
        let m = t.metrics();
        assert_eq!(m.events_received, 13);
        assert_eq!(m.events_applied, 2);
        assert_eq!(m.events_rejected["stale"], 3);
        assert_eq!(m.events_rejected["malformed"], 6);
        assert_eq!(m.events_rejected["unknownType"], 1);
        assert_eq!(m.events_rejected["tooLarge"], 1);
        assert!(rejection_message(Rejection::Stale).starts_with("event rejected: stale ("));
    }

    #[test]
    fn change_notices_while_listening_and_replays() {
        let mut t = ready(json!({}));
        t.set_listen_changes(true);
        let fields = EventFields {
            event_id: Some("e1".into()),
            ..Default::default()
        };
        let a = t
            .apply(
                "user-status-changed",
                r#"{"userId":"u1","status":"suspended"}"#,
                fields.clone(),
            )
            .unwrap();
        let b = wire(a.batch.as_deref().unwrap());
        assert_eq!(
            b["users"],
            json!([["u1", "suspended", ["sales"]]]),
            "roles kept"
        );
        assert_eq!(
            b["notices"],
            json!([{"kind":"change","eventType":"user-status-changed","keys":["access:u1"]}])
        );
        assert_eq!(
            t.apply(
                "user-status-changed",
                r#"{"userId":"u1","status":"active"}"#,
                fields
            ),
            Err(ApplyError::Rejected(Rejection::Replay))
        );
        assert_eq!(t.user_access("u1").0.unwrap().status(), "suspended");
        assert_eq!(t.user_access("u1").1, 2);
    }

    #[test]
    fn signed_when_a_secret_is_set() {
        let mut t = ready(json!({"signingSecret": ["new", "old"]}));
        apply(&mut t, "user-deleted", json!({"userId": "u1"}), None).unwrap();
        assert!(t.user_access("u1").0.is_none());
        let old = EventFields {
            timestamp: Some("2020-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(
            t.apply("user-deleted", r#"{"userId":"u2"}"#, old),
            Err(ApplyError::Rejected(Rejection::Expired))
        );
        let bad = EventFields {
            timestamp: Some("yesterday".into()),
            ..Default::default()
        };
        assert_eq!(
            t.apply("user-deleted", r#"{"userId":"u2"}"#, bad),
            Err(ApplyError::Rejected(Rejection::Malformed))
        );
    }

    #[test]
    fn before_the_first_load_events_change_what_it_loads() {
        let mut t = seeded(json!({}));
        let a = apply(
            &mut t,
            "config-changed",
            json!({"configId": "flag", "config": true}),
            Some(2.0),
        )
        .unwrap();
        assert_eq!(a.batch, None);
        let b = wire(&t.wait_ready().unwrap().unwrap());
        assert!(b["configs"]
            .as_array()
            .unwrap()
            .contains(&json!(["flag", "true"])));
        let e = apply(
            &mut t,
            "config-changed",
            json!({"configId": "flag", "config": false}),
            Some(2.0),
        );
        assert_eq!(e, Err(ApplyError::Rejected(Rejection::Stale)));
    }

    #[test]
    fn resync_required_reloads_and_forgets_tombstones() {
        let mut t = ready(json!({}));
        apply(
            &mut t,
            "role-deleted",
            json!({"roleId": "sales"}),
            Some(4.0),
        )
        .unwrap();
        assert_eq!(
            t.reference_get(RefKind::UserProfile, "u1")
                .unwrap()
                .as_ref(),
            r#"{"name":"Ann"}"#
        );
        let a = apply(&mut t, "resync-required", json!({}), None).unwrap();
        assert!(a.keys.is_empty());
        let b = wire(a.batch.as_deref().unwrap());
        assert_eq!(b["usersReset"], true);
        assert_eq!(b["notices"][0]["reason"], "resync-required");
        assert_eq!(b["notices"][0]["durationMs"], 0);
        assert_eq!(b["notices"].as_array().unwrap().len(), 1);
        assert_eq!(t.cache_expiry("user:u1"), None, "reference data dropped");
        assert_eq!(t.metrics().resyncs, 1);
        // The reload replaced the tombstone: an older upsert is new again.
        apply(
            &mut t,
            "role-changed",
            json!({"roleId": "sales", "permissions": ["*"]}),
            Some(1.0),
        )
        .unwrap();
        assert_eq!(t.store.role_permissions("sales"), Some(&["*".into()][..]));
    }

    #[test]
    fn reference_reads_cache_and_invalidate() {
        let mut t = ready(json!({"ttl": {"notFound": 60000}}));
        assert_eq!(
            t.reference_lookup(RefKind::UserProfile, "u1").unwrap(),
            Lookup::Miss
        );
        let body = t.reference_get(RefKind::UserProfile, "u1").unwrap();
        assert_eq!(
            t.reference_lookup(RefKind::UserProfile, "u1").unwrap(),
            Lookup::Hit(body)
        );
        let exp = t.cache_expiry("user:u1").unwrap();
        assert!((exp - now_ms() - 300_000).abs() < 5_000, "the default TTL");
        let e = t.reference_get(RefKind::UserProfile, "gone").unwrap_err();
        assert_eq!(e, CoreError::NotFound("/api/users/gone/profile".into()));
        assert_eq!(
            t.reference_lookup(RefKind::UserProfile, "gone").unwrap(),
            Lookup::NotFound
        );
        let e = t.reference_get(RefKind::Hierarchy, "..").unwrap_err();
        assert_eq!(e.arg_kind(), Some(ArgKind::Range));
        // an event invalidates; setReference changes the answer and drops the entry
        apply(&mut t, "user-changed", json!({"userId": "u1"}), None).unwrap();
        assert_eq!(t.cache_expiry("user:u1"), None);
        t.reference_get(RefKind::UserProfile, "u1").unwrap();
        t.set_reference("user:u1", Some(r#"{"name":"Bob"}"#))
            .unwrap();
        assert_eq!(
            t.reference_lookup(RefKind::UserProfile, "u1").unwrap(),
            Lookup::Miss
        );
        assert_eq!(
            t.reference_get(RefKind::UserProfile, "u1")
                .unwrap()
                .as_ref(),
            r#"{"name":"Bob"}"#
        );
        t.set_reference("user:u1", None).unwrap();
        assert_eq!(
            t.reference_get(RefKind::UserProfile, "u1")
                .unwrap_err()
                .code(),
            "NOT_FOUND"
        );
        assert_eq!(
            t.set_reference("user:", None).unwrap_err().arg_kind(),
            Some(ArgKind::Range)
        );
        assert_eq!(
            t.set_reference("user:x", Some("[1]"))
                .unwrap_err()
                .arg_kind(),
            Some(ArgKind::Type)
        );
        t.reference_get(RefKind::AuditLog, "a1").unwrap_err();
        t.invalidate("audit:a1");
        assert_eq!(t.cache_expiry("audit:a1"), None);
        let m = t.metrics();
        assert_eq!((m.reference_hits, m.reference_misses), (2, 6));
        assert_eq!(m.reference_cache_size, 2, "two remembered 404s");
        assert_eq!(m.wrapper_requests, 6);
        assert_eq!(m.wrapper_errors, 3, "404s are answers that count as errors");
    }

    #[test]
    fn fail_next_queues_failures_per_method() {
        let mut t = ready(json!({}));
        let e = t.fail_next("getUserProfiles", "NOT_FOUND").unwrap_err();
        assert_eq!(e.arg_kind(), Some(ArgKind::Range));
        assert!(e.to_string().contains("getUserProfile,"), "{e}");
        let e = t
            .fail_next("getUserProfile", "INSUFFICIENT_CREDITS")
            .unwrap_err();
        assert_eq!(e.arg_kind(), Some(ArgKind::Range));
        t.fail_next("getUserProfile", "WRAPPER_UNAVAILABLE")
            .unwrap();
        t.fail_next("getUserProfile", "WRAPPER_AUTH").unwrap();
        // An invalid id fails as always and leaves the failure queued.
        assert_eq!(
            t.reference_lookup(RefKind::UserProfile, "")
                .unwrap_err()
                .arg_kind(),
            Some(ArgKind::Range)
        );
        // Another method is not affected.
        assert_eq!(
            t.reference_lookup(RefKind::Hierarchy, "h").unwrap(),
            Lookup::Miss
        );
        let e = t.reference_lookup(RefKind::UserProfile, "u1").unwrap_err();
        assert_eq!(e.code(), "WRAPPER_UNAVAILABLE");
        assert!(e.to_string().contains("simulated by failNext"), "{e}");
        assert!(t.health().degraded);
        assert_eq!(t.health().reason, Some("wrapper-unavailable"));
        assert_eq!(
            t.reference_lookup(RefKind::UserProfile, "u1")
                .unwrap_err()
                .code(),
            "WRAPPER_AUTH"
        );
        assert_eq!(
            t.reference_lookup(RefKind::UserProfile, "u1").unwrap(),
            Lookup::Miss
        );
        t.reference_get(RefKind::UserProfile, "u1").unwrap();
        assert!(!t.health().degraded, "the next answer clears it");
        // checkCredits reads the balance as getUserCredits does
        t.fail_next("checkCredits", "INVALID_RESPONSE").unwrap();
        assert_eq!(t.user_credits("u1").unwrap_err().code(), "INVALID_RESPONSE");
        assert_eq!(t.user_credits("u1").unwrap(), 100.0);
        // initialize
        let mut t = seeded(json!({}));
        t.fail_next("initialize", "REDIS_UNAVAILABLE").unwrap();
        assert_eq!(t.wait_ready().unwrap_err().code(), "REDIS_UNAVAILABLE");
        assert_eq!(t.health().reason, Some("redis-disconnected"));
        assert!(t.wait_ready().unwrap().is_some(), "the next call loads");
        assert!(!t.health().degraded);
    }

    #[test]
    fn deductions_follow_the_ledger() {
        let mut t = ready(json!({}));
        assert_eq!(
            t.deduct("u1", 30.0, Some("crm.leads.create"), "k1")
                .unwrap(),
            70.0
        );
        assert_eq!(
            t.deduct("u1", 30.0, Some("crm.leads.create"), "k1")
                .unwrap(),
            70.0,
            "replayed"
        );
        assert_eq!(t.user_credits("u1").unwrap(), 70.0);
        let e = t.deduct("u1", 80.0, None, "k2").unwrap_err();
        assert_eq!(
            e,
            CoreError::InsufficientCredits {
                available: Some(70.0)
            }
        );
        assert_eq!(
            t.deduct("u1", 1.0, None, "k2").unwrap_err(),
            e,
            "the first answer"
        );
        assert_eq!(
            t.deduct("nobody", 1.0, None, "k3").unwrap_err(),
            CoreError::InsufficientCredits {
                available: Some(0.0)
            }
        );
        assert_eq!(t.deduct("nobody", 0.0, None, "k4").unwrap(), 0.0);
        // failures come before the ledger: nothing deducted, the key still fresh
        t.fail_next("deductCredits", "WRAPPER_UNAVAILABLE").unwrap();
        assert_eq!(
            t.deduct("u1", 10.0, None, "k5").unwrap_err().code(),
            "WRAPPER_UNAVAILABLE"
        );
        assert_eq!(t.deduct("u1", 10.0, None, "k5").unwrap(), 60.0);
        t.fail_next("deductCredits", "INSUFFICIENT_CREDITS")
            .unwrap();
        assert_eq!(
            t.deduct("u1", 1.0, None, "k6").unwrap_err(),
            CoreError::InsufficientCredits {
                available: Some(60.0)
            }
        );
        // argument rules of the consumer
        for (user, amount, key, kind) in [
            ("..", 1.0, "k", ArgKind::Range),
            ("u1", -1.0, "k", ArgKind::Range),
            ("u1", f64::NAN, "k", ArgKind::Range),
            ("u1", 1.0, "a b", ArgKind::Range),
        ] {
            assert_eq!(
                t.deduct(user, amount, None, key).unwrap_err().arg_kind(),
                Some(kind)
            );
        }
        let log: Vec<(&str, f64, Option<&str>, &str, f64)> = t
            .deductions()
            .iter()
            .map(|d| {
                (
                    d.user_id.as_str(),
                    d.amount,
                    d.operation_code.as_deref(),
                    d.idempotency_key.as_str(),
                    d.remaining,
                )
            })
            .collect();
        assert_eq!(
            log,
            vec![
                ("u1", 30.0, Some("crm.leads.create"), "k1", 70.0),
                ("nobody", 0.0, None, "k4", 0.0),
                ("u1", 10.0, None, "k5", 60.0),
            ]
        );
    }

    #[test]
    fn shutdown_frees_and_refuses() {
        let mut t = ready(json!({}));
        t.deduct("u1", 1.0, None, "k").unwrap();
        t.shutdown();
        assert_eq!(
            apply(&mut t, "user-changed", json!({"userId": "u"}), None),
            Err(ApplyError::Core(CoreError::Shutdown))
        );
        assert_eq!(t.user_credits("u1").unwrap_err(), CoreError::Shutdown);
        assert_eq!(
            t.fail_next("initialize", "WRAPPER_AUTH").unwrap_err(),
            CoreError::Shutdown
        );
        assert_eq!(t.metrics().critical_cache_size, 0);
        assert!(!t.health().connected);
        assert_eq!(t.deductions().len(), 1, "the log stays readable");
    }
}
