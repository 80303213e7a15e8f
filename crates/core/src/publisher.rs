//! The publishing side of SPEC §3, for a Wrapper written in Node (and for the
//! demo and tests): builds the message envelope (`eventId`, `timestamp`,
//! `tenantId`, optional `version`), signs it with the first signing key when
//! one is set, and PUBLISHes it on `{prefix}:{tenant}:{topic}`.
//!
//! **Connection.** [`Publisher::new`] validates and returns at once; it opens
//! no connection. The first publish connects, and every later one reuses that
//! multiplexed connection. When a command fails because the connection is gone
//! (a lost link, a Redis restart), the connection is dropped and the same
//! message is sent again on a new one. While Redis cannot be reached, a publish
//! waits for it, retrying with a short backoff shared by all publishes (50 ms
//! doubling to 500 ms, so a thousand waiting publishes make about two
//! connection attempts a second, not a thousand), for at most
//! `connectTimeoutMs` in all, and then fails with `REDIS_UNAVAILABLE`.
//!
//! This is a small loop of its own rather than redis-rs's `ConnectionManager`:
//! the manager needs a crate feature the workspace does not enable, it fails
//! at least one command on every lost connection (so a retry loop is needed on
//! top of it anyway), and it knows no overall deadline per command, which is
//! exactly what `connectTimeoutMs` promises.
//!
//! **Delivery.** A publish resolves only with Redis's answer to its PUBLISH:
//! it never resolves for a message that was not sent. A message is only ever
//! re-sent unchanged (same `eventId`, same signature), and only when the
//! connection failed under it, so if Redis did take the first copy, consumers
//! drop the second as a replay. A rejected publish is not retried later: no
//! message outlives its call. One caveat: when Redis is unresponsive rather
//! than down (frozen, half-open link), a PUBLISH already written may still be
//! delivered after the deadline rejected it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, ProtocolVersion, RedisError, RetryMethod};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{is_valid_channel_prefix, is_valid_tenant_id};
use crate::error::{CoreError, Result};
use crate::protocol::{Topic, EVENT_TYPES};
use crate::redis_target::RedisTarget;
use crate::signature::{self, SigningKeys};

/// Default of `connectTimeoutMs` (SPEC §3).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(5000);
/// Largest `connectTimeoutMs`: ten minutes.
pub const MAX_CONNECT_TIMEOUT_MS: u64 = 600_000;
/// First pause after a failed connection attempt.
const RETRY_MIN: Duration = Duration::from_millis(50);
/// Longest pause between connection attempts: a publish notices a Redis that
/// came back within this.
const RETRY_MAX: Duration = Duration::from_millis(500);

/// Option names [`Publisher::from_json`] accepts.
const OPTIONS: [&str; 10] = [
    "transport",
    "streamMaxLen",
    "redisUrl",
    "redisSentinel",
    "redisCluster",
    "redisTls",
    "tenantId",
    "channelPrefix",
    "signingSecret",
    "connectTimeoutMs",
];

/// Options of [`Publisher::new`].
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Where Redis is (SPEC §6).
    pub redis: RedisTarget,
    /// The tenant every message is for: part of the channel and of the message.
    pub tenant_id: String,
    /// Channel prefix (default `crm`).
    pub channel_prefix: String,
    /// When set, messages are signed with its first key.
    pub signing_secret: Option<SigningKeys>,
    /// Where events go (SPEC §7; default [`PublishTransport::Both`]).
    pub transport: PublishTransport,
    /// `streamMaxLen`: the stream is trimmed (approximately) to this many entries.
    pub stream_max_len: u64,
}

/// Where a publisher sends events (SPEC §7 `transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishTransport {
    /// The topic channel only (consumers with `transport: 'pubsub'`).
    PubSub,
    /// The tenant's stream and its stream channel only.
    Stream,
    /// Both, in one atomic step: consumers of either transport see every event.
    Both,
}

/// Default of `streamMaxLen`.
pub const DEFAULT_STREAM_MAX_LEN: u64 = 100_000;

/// A publisher. Cheap to clone (clones share one connection); safe to use from
/// many tasks at once: concurrent publishes share the connection and, while
/// Redis is unreachable, one connection attempt at a time.
#[derive(Clone)]
pub struct Publisher {
    /// Shared by the clones.
    inner: Arc<Inner>,
}

struct Inner {
    /// Validated options.
    opts: PublisherOptions,
    /// How long one publish may wait for Redis in all.
    connect_timeout: Duration,
    /// The live connection and the shared reconnect backoff.
    link: Mutex<Link>,
    /// Held while a connection attempt runs, so concurrent publishes share one.
    connecting: tokio::sync::Mutex<()>,
    /// Cancelled by [`Publisher::close`].
    closed: CancellationToken,
    /// With Cluster: the node (`host:port`) a `MOVED` named as the owner of
    /// the tenant's stream key; the next connection goes there.
    redirect: Mutex<Option<String>>,
    /// Set while one publish asks the sentinels whether the master moved, so
    /// a burst of publishes makes one sentinel round trip, not one each.
    checking_master: AtomicBool,
}

struct Link {
    /// The live connection, tagged with its generation so that a failure seen
    /// on an old connection never drops a newer one.
    conn: Option<(u64, MultiplexedConnection)>,
    /// Generation of the next connection.
    next_gen: u64,
    /// No connection attempt before this (backoff after a failed one).
    retry_at: Option<Instant>,
    /// The pause after the next failed attempt.
    delay: Duration,
    /// Why the last attempt or command failed, for the error message (never
    /// carries the URL).
    last_error: Option<String>,
    /// With Sentinel: the master the connection is on, and when the
    /// sentinels last confirmed it (a demoted master still accepts PUBLISH,
    /// but reaches only its own subscribers).
    master: Option<((String, u16), Instant)>,
}

/// The name the publisher's connection gives itself (`CLIENT SETNAME`).
pub const CLIENT_NAME: &str = "smart-crm-publisher";

/// How often a publish on a Sentinel master asks the sentinels whether the
/// master is still the one connected to.
const MASTER_CHECK: Duration = Duration::from_secs(1);

/// Builds the message for `event_type` (pure; used by [`Publisher::publish`]
/// and by tests that need exact bytes).
pub fn build_message(
    opts: &PublisherOptions,
    event_type: &str,
    data: Value,
    version: Option<u64>,
    event_id: String,
    timestamp: String,
) -> Result<String> {
    if !data.is_object() {
        return Err(CoreError::arg_type("data must be an object"));
    }
    let mut m = Map::new();
    m.insert("eventId".into(), Value::String(event_id));
    m.insert("eventType".into(), Value::String(event_type.to_owned()));
    m.insert("tenantId".into(), Value::String(opts.tenant_id.clone()));
    if let Some(v) = version {
        m.insert("version".into(), Value::from(v));
    }
    m.insert("timestamp".into(), Value::String(timestamp));
    m.insert("data".into(), data);
    if let Some(keys) = &opts.signing_secret {
        let sig = signature::sign_with(&m, keys);
        m.insert("signature".into(), Value::String(sig));
    }
    serde_json::to_string(&m)
        .map_err(|e| CoreError::arg_range(format!("cannot encode message: {e}")))
}

/// The receivers in a PUBLISH reply (an integer) or the stream script's
/// (`{id, receivers}`).
fn receivers_of(reply: &redis::Value) -> i64 {
    match reply {
        redis::Value::Int(n) => *n,
        redis::Value::Array(v) => v.get(1).map_or(0, receivers_of),
        _ => 0,
    }
}

/// What a failed PUBLISH calls for.
enum AfterError {
    /// The connection is gone: drop it and send again on a new one.
    Reconnect,
    /// A transient server condition (e.g. `LOADING`): send again shortly.
    Retry,
    /// A refusal (e.g. `NOPERM`): sending again would not help.
    Fail,
}

fn after_error(e: &RedisError) -> AfterError {
    // READONLY: the node became a replica (a failover); the stream script's
    // XADD is refused there, so find the master again instead of retrying.
    if e.kind() == ErrorKind::Io || e.is_unrecoverable_error() || e.code() == Some("READONLY") {
        return AfterError::Reconnect;
    }
    match e.retry_method() {
        RetryMethod::RetryImmediately | RetryMethod::WaitAndRetry => AfterError::Retry,
        _ => AfterError::Fail,
    }
}

/// True for a connection failure that waiting cannot fix.
fn is_fatal_connect_error(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::AuthenticationFailed
            | ErrorKind::InvalidClientConfig
            | ErrorKind::RESP3NotSupported
    )
}

fn int_option(
    obj: &Map<String, Value>,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.is_finite() && f.fract() == 0.0 && f >= min as f64 && f <= max as f64 {
                Ok(f as u64)
            } else {
                Err(CoreError::option_range(
                    name,
                    format!("an integer from {min} to {max}"),
                ))
            }
        }
        Some(_) => Err(CoreError::option_type(name, "a number")),
    }
}

fn string_option(obj: &Map<String, Value>, name: &str) -> Result<Option<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CoreError::option_type(name, "a string")),
    }
}

impl Publisher {
    /// Validates `options` (`{ redisUrl | redisSentinel | redisCluster,
    /// redisTls, tenantId, channelPrefix = 'crm', signingSecret,
    /// connectTimeoutMs = 5000 }`, as JSON; `env` gives the Redis fallbacks of
    /// [`RedisTarget::from_options`]) and returns the publisher without
    /// connecting. Unknown option names are refused. Errors name the option
    /// and never echo a secret.
    pub fn from_json(options: &Value, env: &HashMap<String, String>) -> Result<Publisher> {
        let Value::Object(obj) = options else {
            return Err(CoreError::option_type("options", "an object"));
        };
        if let Some(k) = obj.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
            return Err(CoreError::option_type(
                k,
                "a known option (unknown option name)",
            ));
        }
        let tenant_id = string_option(obj, "tenantId")?
            .ok_or_else(|| CoreError::option_type("tenantId", "a string (it is required)"))?;
        let redis = RedisTarget::from_options(obj, env)?;
        let channel_prefix = string_option(obj, "channelPrefix")?.unwrap_or_else(|| "crm".into());
        let signing_secret = SigningKeys::from_option("signingSecret", obj.get("signingSecret"))?;
        let transport = match string_option(obj, "transport")?.as_deref() {
            None | Some("both") => PublishTransport::Both,
            Some("pubsub") => PublishTransport::PubSub,
            Some("stream") => PublishTransport::Stream,
            Some(_) => {
                return Err(CoreError::option_range(
                    "transport",
                    "'pubsub', 'stream' or 'both'",
                ))
            }
        };
        let stream_max_len = int_option(
            obj,
            "streamMaxLen",
            DEFAULT_STREAM_MAX_LEN,
            1,
            1_000_000_000,
        )?;
        let timeout_ms = int_option(
            obj,
            "connectTimeoutMs",
            DEFAULT_CONNECT_TIMEOUT.as_millis() as u64,
            1,
            MAX_CONNECT_TIMEOUT_MS,
        )?;
        Publisher::new(
            PublisherOptions {
                redis,
                tenant_id,
                channel_prefix,
                signing_secret,
                transport,
                stream_max_len,
            },
            Duration::from_millis(timeout_ms),
        )
    }

    /// Validates the options and returns the publisher; no I/O (it connects on
    /// first use). `connect_timeout` bounds how long one publish waits for Redis.
    pub fn new(opts: PublisherOptions, connect_timeout: Duration) -> Result<Publisher> {
        if !is_valid_tenant_id(&opts.tenant_id) {
            return Err(CoreError::option_range(
                "tenantId",
                "1-128 characters of [A-Za-z0-9._-], starting with a letter or digit",
            ));
        }
        if !is_valid_channel_prefix(&opts.channel_prefix) {
            return Err(CoreError::option_range(
                "channelPrefix",
                "1-64 characters of [A-Za-z0-9._:-]",
            ));
        }
        if connect_timeout.is_zero()
            || connect_timeout > Duration::from_millis(MAX_CONNECT_TIMEOUT_MS)
        {
            return Err(CoreError::option_range(
                "connectTimeoutMs",
                format!("an integer from 1 to {MAX_CONNECT_TIMEOUT_MS}"),
            ));
        }
        Ok(Publisher {
            inner: Arc::new(Inner {
                opts,
                connect_timeout,
                link: Mutex::new(Link {
                    conn: None,
                    next_gen: 0,
                    retry_at: None,
                    delay: RETRY_MIN,
                    last_error: None,
                    master: None,
                }),
                connecting: tokio::sync::Mutex::new(()),
                closed: CancellationToken::new(),
                redirect: Mutex::new(None),
                checking_master: AtomicBool::new(false),
            }),
        })
    }

    /// [`Publisher::new`] with the default connect timeout, then connects at
    /// once: fails with `REDIS_UNAVAILABLE` when Redis cannot be reached within
    /// it. For Rust callers that want to know at start.
    pub async fn connect(opts: PublisherOptions) -> Result<Publisher> {
        let p = Publisher::new(opts, DEFAULT_CONNECT_TIMEOUT)?;
        p.inner
            .connection(Instant::now() + DEFAULT_CONNECT_TIMEOUT)
            .await?;
        Ok(p)
    }

    /// Publishes one event; resolves to the number of receivers. Waits up to
    /// the connect timeout for Redis (see the module docs), then fails with
    /// `REDIS_UNAVAILABLE`; after [`Publisher::close`] fails with `SHUTDOWN`.
    pub async fn publish(
        &self,
        topic: &str,
        event_type: &str,
        data: Value,
        version: Option<u64>,
    ) -> Result<i64> {
        if self.inner.closed.is_cancelled() {
            return Err(CoreError::Shutdown);
        }
        let t = Topic::from_name(topic)
            .ok_or_else(|| CoreError::arg_range(format!("unknown topic {topic:?}")))?;
        if !EVENT_TYPES
            .iter()
            .any(|(e, et)| *e == event_type && *et == t)
        {
            return Err(CoreError::arg_range(format!(
                "event type {event_type:?} does not belong to topic {topic:?}"
            )));
        }
        let msg = build_message(
            &self.inner.opts,
            event_type,
            data,
            version,
            uuid::Uuid::new_v4().to_string(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )?;
        let opts = &self.inner.opts;
        let channel = format!("{}:{}:{}", opts.channel_prefix, opts.tenant_id, topic);
        if opts.transport == PublishTransport::PubSub {
            return self
                .inner
                .send(|| {
                    let mut cmd = redis::cmd("PUBLISH");
                    cmd.arg(&channel).arg(&msg);
                    cmd
                })
                .await;
        }
        // The entry, its live copy and (with 'both') the pub/sub message in one
        // atomic step (stream.rs: PUBLISH_SCRIPT).
        let keys = crate::stream::Keys::new(&opts.channel_prefix, &opts.tenant_id);
        let topic_channel = if opts.transport == PublishTransport::Both {
            channel.as_str()
        } else {
            ""
        };
        let epoch = uuid::Uuid::new_v4().simple().to_string();
        self.inner
            .send(|| {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(crate::stream::PUBLISH_SCRIPT)
                    .arg(2)
                    .arg(&keys.stream)
                    .arg(&keys.epoch)
                    .arg(opts.stream_max_len)
                    .arg(topic)
                    .arg(&msg)
                    .arg(&keys.live)
                    .arg(topic_channel)
                    .arg(&epoch);
                cmd
            })
            .await
    }

    /// Closes the publisher: publishes waiting for Redis fail with `SHUTDOWN`
    /// at once, a PUBLISH already written is still awaited to its answer, and
    /// every later publish fails with `SHUTDOWN`. The connection closes when
    /// the last in-flight command ends. Idempotent.
    pub fn close(&self) {
        self.inner.closed.cancel();
        let old = self.inner.link().conn.take();
        drop(old);
    }
}

impl Inner {
    fn link(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unavailable(&self) -> CoreError {
        let why = self
            .link()
            .last_error
            .clone()
            .unwrap_or_else(|| "no answer".into());
        CoreError::RedisUnavailable(format!(
            "no connection to Redis within connectTimeoutMs ({} ms): {why}",
            self.connect_timeout.as_millis()
        ))
    }

    /// Sleeps until `t`, or fails with `SHUTDOWN` when closed meanwhile.
    async fn pause_until(&self, t: Instant) -> Result<()> {
        tokio::select! {
            _ = self.closed.cancelled() => Err(CoreError::Shutdown),
            _ = tokio::time::sleep_until(t) => Ok(()),
        }
    }

    /// Sends the command `make()` builds (a PUBLISH, or the stream script),
    /// reconnecting as needed, until Redis answers or the connect timeout has
    /// passed. Returns the number of receivers.
    async fn send(&self, make: impl Fn() -> redis::Cmd) -> Result<i64> {
        let deadline = Instant::now() + self.connect_timeout;
        let mut failures = 0u32;
        loop {
            let (gen, mut conn) = self.connection(deadline).await?;
            if self.master_moved().await {
                self.forget(gen, "the sentinels name a new master".into());
                continue;
            }
            let cmd = make();
            // Not raced against close(): once written, its outcome is awaited.
            let answer =
                tokio::time::timeout_at(deadline, cmd.query_async::<redis::Value>(&mut conn)).await;
            let err = match answer {
                Ok(Ok(reply)) => return Ok(receivers_of(&reply)),
                Ok(Err(e)) => e,
                Err(_) => {
                    // No answer in time: treat the link as dead (half-open).
                    self.forget(gen, "no answer to PUBLISH".into());
                    return Err(self.unavailable());
                }
            };
            let why = self.opts.redis.describe_error(&err);
            if let Some((addr, _slot)) = err.redirect_node() {
                // Cluster: the stream key lives on another node; move there
                // (PUBLISH works on any node).
                *self.redirect.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr.to_owned());
                self.forget(gen, why);
                if Instant::now() >= deadline {
                    return Err(self.unavailable());
                }
                continue;
            }
            match after_error(&err) {
                AfterError::Reconnect => self.forget(gen, why),
                AfterError::Retry => self.link().last_error = Some(why),
                AfterError::Fail => {
                    return Err(CoreError::RedisUnavailable(format!(
                        "Redis refused the PUBLISH: {why}"
                    )))
                }
            }
            failures += 1;
            if self.closed.is_cancelled() {
                return Err(CoreError::Shutdown);
            }
            // The first failure (a connection that died since the last publish)
            // is retried at once; repeated ones back off.
            if failures > 1 {
                let pause = RETRY_MIN
                    .saturating_mul(1 << (failures - 2).min(4))
                    .min(RETRY_MAX);
                self.pause_until((Instant::now() + pause).min(deadline))
                    .await?;
            }
            if Instant::now() >= deadline {
                return Err(self.unavailable());
            }
        }
    }

    /// With Sentinel, at most once per [`MASTER_CHECK`]: true when the
    /// sentinels now name another master than the one connected to. An
    /// unreachable sentinel says nothing (false).
    async fn master_moved(&self) -> bool {
        let known = match &self.link().master {
            Some((m, at)) if at.elapsed() >= MASTER_CHECK => m.clone(),
            _ => return false,
        };
        // One check at a time; the publishes meanwhile go to the connection
        // as it is (they would have a second ago too).
        if self.checking_master.swap(true, Ordering::AcqRel) {
            return false;
        }
        /// Clears the flag however the check ends (a dropped future included).
        struct Checking<'a>(&'a AtomicBool);
        impl Drop for Checking<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _checking = Checking(&self.checking_master);
        match self.opts.redis.current_master().await {
            Ok(Some(now)) if now != known => true,
            Ok(_) => {
                if let Some((_, at)) = &mut self.link().master {
                    *at = Instant::now();
                }
                false
            }
            Err(_) => false,
        }
    }

    /// Drops connection `gen` (if it is still the current one) after `why`.
    fn forget(&self, gen: u64, why: String) {
        let mut link = self.link();
        if link.conn.as_ref().is_some_and(|(g, _)| *g == gen) {
            link.conn = None;
        }
        link.last_error = Some(why);
    }

    /// The current connection, connecting first when there is none; waits (with
    /// the shared backoff) until `deadline`.
    async fn connection(&self, deadline: Instant) -> Result<(u64, MultiplexedConnection)> {
        loop {
            if self.closed.is_cancelled() {
                return Err(CoreError::Shutdown);
            }
            let backoff = {
                let link = self.link();
                if let Some(c) = &link.conn {
                    return Ok(c.clone());
                }
                link.retry_at.filter(|t| *t > Instant::now())
            };
            if Instant::now() >= deadline {
                return Err(self.unavailable());
            }
            if let Some(t) = backoff {
                self.pause_until(t.min(deadline)).await?;
                continue;
            }
            let _attempt = tokio::select! {
                _ = self.closed.cancelled() => return Err(CoreError::Shutdown),
                _ = tokio::time::sleep_until(deadline) => return Err(self.unavailable()),
                g = self.connecting.lock() => g,
            };
            {
                // Another publish may have connected, or failed, meanwhile.
                let link = self.link();
                if link.conn.is_some() || link.retry_at.is_some_and(|t| t > Instant::now()) {
                    continue;
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(remaining))
                // Each PUBLISH is bounded by the publish's own deadline instead.
                .set_response_timeout(None);
            let redirect = self
                .redirect
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let open = async {
                match &redirect {
                    Some(addr) => {
                        let r = self
                            .opts
                            .redis
                            .connect_node(addr, config.clone(), ProtocolVersion::RESP2)
                            .await;
                        match r {
                            Ok(c) => Ok((c, None)),
                            Err(_) => {
                                // The node went away (failover): ask the seeds again.
                                *self.redirect.lock().unwrap_or_else(|p| p.into_inner()) = None;
                                self.opts
                                    .redis
                                    .connect(config, ProtocolVersion::RESP2)
                                    .await
                            }
                        }
                    }
                    None => {
                        self.opts
                            .redis
                            .connect(config, ProtocolVersion::RESP2)
                            .await
                    }
                }
            };
            let open = async {
                let (mut conn, master) = open.await?;
                // A name for `CLIENT LIST` (operators, the failover tests); a
                // server that refuses CLIENT (an ACL) is still published to.
                let _ = redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(CLIENT_NAME)
                    .query_async::<()>(&mut conn)
                    .await;
                Ok::<_, RedisError>((conn, master))
            };
            let attempt = tokio::select! {
                _ = self.closed.cancelled() => return Err(CoreError::Shutdown),
                r = tokio::time::timeout_at(deadline, open) => r,
            };
            let mut link = self.link();
            let failure = match attempt {
                Ok(Ok((conn, master))) => {
                    // close() cancels before it clears the link, so checking under
                    // the lock means a connection is never stored after close().
                    if self.closed.is_cancelled() {
                        return Err(CoreError::Shutdown);
                    }
                    let gen = link.next_gen;
                    link.next_gen += 1;
                    link.conn = Some((gen, conn.clone()));
                    link.retry_at = None;
                    link.delay = RETRY_MIN;
                    link.last_error = None;
                    link.master = master.map(|m| (m, Instant::now()));
                    return Ok((gen, conn));
                }
                Ok(Err(e)) => {
                    if is_fatal_connect_error(&e) {
                        return Err(CoreError::RedisUnavailable(format!(
                            "cannot connect to Redis: {}",
                            self.opts.redis.describe_error(&e)
                        )));
                    }
                    self.opts.redis.describe_error(&e)
                }
                Err(_) => "connection attempt timed out".into(),
            };
            link.last_error = Some(failure);
            link.retry_at = Some(Instant::now() + link.delay);
            link.delay = (link.delay * 2).min(RETRY_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use serde_json::json;

    fn err(v: Value) -> CoreError {
        match Publisher::from_json(&v, &HashMap::new()) {
            Ok(_) => panic!("{v} was accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn options_are_validated_and_named() {
        let ok = Publisher::from_json(&json!({"tenantId": "acme"}), &HashMap::new()).unwrap();
        assert_eq!(ok.inner.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(ok.inner.opts.channel_prefix, "crm");
        let p = Publisher::from_json(
            &json!({"tenantId": "acme", "connectTimeoutMs": 250, "signingSecret": ["a", "b"]}),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(p.inner.connect_timeout, Duration::from_millis(250));
        let cases = [
            (json!(null), "`options`"),
            (json!({}), "`tenantId`"),
            (json!({"tenantId": "a:b"}), "`tenantId`"),
            (
                json!({"tenantId": "acme", "channelPrefix": "x*"}),
                "`channelPrefix`",
            ),
            (
                json!({"tenantId": "acme", "redisUrl": "http://u:hunter2@h"}),
                "`redisUrl`",
            ),
            (
                json!({"tenantId": "acme", "connectTimeoutMs": 0}),
                "`connectTimeoutMs`",
            ),
            (
                json!({"tenantId": "acme", "connectTimeoutMs": 600_001}),
                "`connectTimeoutMs`",
            ),
            (
                json!({"tenantId": "acme", "connectTimeoutMs": "5"}),
                "`connectTimeoutMs`",
            ),
            (
                json!({"tenantId": "acme", "signingSecret": ["hunter2", ""]}),
                "`signingSecret[1]`",
            ),
            (
                json!({"tenantId": "acme", "signingsecret": "hunter2"}),
                "`signingsecret`",
            ),
        ];
        for (v, named) in cases {
            let msg = err(v.clone()).to_string();
            assert!(msg.contains(named), "{v}: {msg}");
            assert!(!msg.contains("hunter2"), "{v}: {msg}");
        }
    }

    #[test]
    fn the_first_key_signs() {
        let keys = SigningKeys::from_option("signingSecret", Some(&json!(["new", "old"])))
            .unwrap()
            .unwrap();
        let opts = PublisherOptions {
            redis: RedisTarget::url("redis://127.0.0.1:9").unwrap(),
            tenant_id: "acme".into(),
            channel_prefix: "crm".into(),
            signing_secret: Some(keys),
            transport: PublishTransport::PubSub,
            stream_max_len: DEFAULT_STREAM_MAX_LEN,
        };
        let text = build_message(
            &opts,
            "role-deleted",
            json!({"roleId": "r"}),
            Some(3),
            "e-1".into(),
            "2026-01-01T00:00:00.000Z".into(),
        )
        .unwrap();
        let m: Map<String, Value> = serde_json::from_str(&text).unwrap();
        let sig = m["signature"].as_str().unwrap();
        assert!(signature::verify(&m, &Secret::new("new"), sig));
        assert!(!signature::verify(&m, &Secret::new("old"), sig));
    }

    /// A port nothing listens on: bound, then released.
    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn unreachable_redis_fails_after_the_connect_timeout_and_close_ends_waits() {
        let url = format!("redis://127.0.0.1:{}", closed_port());
        let p = Publisher::from_json(
            &json!({"tenantId": "acme", "redisUrl": url, "connectTimeoutMs": 300}),
            &HashMap::new(),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let e = p
            .publish("control", "resync-required", json!({}), None)
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert_eq!(e.code(), "REDIS_UNAVAILABLE", "{e}");
        assert!(waited >= Duration::from_millis(290), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        assert!(e.to_string().contains("connection refused"), "{e}");
        assert!(!e.to_string().contains("127.0.0.1"), "{e}");

        let slow = Publisher::from_json(
            &json!({"tenantId": "acme", "redisUrl": url, "connectTimeoutMs": 60_000}),
            &HashMap::new(),
        )
        .unwrap();
        let waiting = tokio::spawn({
            let slow = slow.clone();
            async move {
                slow.publish("control", "resync-required", json!({}), None)
                    .await
            }
        });
        // Once an attempt has failed, the publish is waiting out the backoff.
        while slow.inner.link().last_error.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!waiting.is_finished());
        slow.close();
        let e = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("close() ends the wait")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code(), "SHUTDOWN");
        let e = slow
            .publish("control", "resync-required", json!({}), None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "SHUTDOWN");
        slow.close();
    }

    #[tokio::test]
    async fn wrong_topic_or_type_is_an_argument_error() {
        let p = Publisher::from_json(&json!({"tenantId": "acme"}), &HashMap::new()).unwrap();
        for (topic, ty) in [("nope", "resync-required"), ("roles", "resync-required")] {
            let e = p.publish(topic, ty, json!({}), None).await.unwrap_err();
            assert_eq!(e.code(), "ERR_OUT_OF_RANGE", "{e}");
        }
    }
}
