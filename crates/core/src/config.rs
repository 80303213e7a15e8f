//! Constructor options: defaults, environment fallbacks and validation (SPEC §2).
//!
//! [`Config::from_json`] takes the options object exactly as the user passed it
//! (minus the JS-only `logger`) and the relevant environment variables, and
//! either returns a complete [`Config`] or a [`CoreError::InvalidOption`] whose
//! message names the offending option. Unknown option names are refused too, so
//! a typo such as `ttl.userProfile` fails loudly instead of silently keeping the
//! default. Secret values (passwords, tokens, the signing secret) are never
//! echoed in a message and are redacted from `Debug`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{CoreError, Result};
use crate::protocol::Topic;
use crate::redis_target::RedisTarget;
use crate::signature::SigningKeys;

pub use crate::secret::Secret;

/// Per-type TTLs of the reference cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Ttls {
    /// `user:{id}` entries (default 5 min).
    pub user_profiles: Duration,
    /// `hierarchy:{id}` entries (default 15 min).
    pub hierarchy: Duration,
    /// `audit:{id}` entries (default 1 h).
    pub audit_logs: Duration,
    /// `historical:{key}` entries (default 24 h).
    pub historical_data: Duration,
    /// How long a Wrapper 404 is remembered (default 30 s).
    pub not_found: Duration,
}

/// The validated, complete configuration of one consumer.
#[derive(Debug, Clone)]
pub struct Config {
    /// The tenant whose channels are subscribed and whose events are accepted.
    pub tenant_id: String,
    /// Base URL of the Wrapper (http or https), without a trailing slash.
    pub wrapper_url: String,
    /// Where Redis is: a server, a Sentinel master or a Cluster, with TLS
    /// material (SPEC §6).
    pub redis: RedisTarget,
    /// Optional bearer token sent to the Wrapper.
    pub wrapper_token: Option<Secret>,
    /// First segment of every channel name.
    pub channel_prefix: String,
    /// When set, events must be signed with one of these keys (a list lets a
    /// fleet rotate its secret; SPEC §3).
    pub signing_secret: Option<SigningKeys>,
    /// With a signing secret: how far a signed event's timestamp may predate the
    /// start of the latest full load and still be accepted
    /// (`maxClockSkewMs`, default 30 s). Older ones are `expired`: after a
    /// restart the replay window is empty, and the load already holds their
    /// effect. Allows for clock skew between publisher and consumer.
    pub max_clock_skew: Duration,
    /// Reference cache TTLs.
    pub ttl: Ttls,
    /// How long past expiry a reference entry may be served while the Wrapper fails.
    pub stale_if_error: Duration,
    /// Ping interval of the subscription; two silent intervals mean a lost link.
    pub heartbeat: Duration,
    /// Memory bound of the reference cache, in bytes.
    pub max_reference_bytes: u64,
    /// Periodic full reload of critical data; `None` = off.
    pub refresh_interval: Option<Duration>,
    /// Timeout of one Wrapper request.
    pub request_timeout: Duration,
    /// How long `initialize()` waits before rejecting.
    pub init_timeout: Duration,
    /// Consecutive unavailable Wrapper calls that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the open circuit fails fast before one probe is let through.
    pub breaker_cool_down: Duration,
    /// Largest Wrapper response body read (`maxResponseBytes`, default 64 MiB):
    /// a larger one is `INVALID_RESPONSE` and is not buffered past the limit, so
    /// a broken or hostile Wrapper cannot make the process allocate without
    /// bound. One snapshot load reads at most
    /// `wrapper::LOAD_BYTES_FACTOR` times this over
    /// all its pages.
    pub max_response_bytes: u64,
    /// `resyncJitterMs`: a `resync-required` reload waits a random 0–this,
    /// and such reloads start at least this far apart (SPEC §7).
    pub resync_jitter: Duration,
    /// `transport` (SPEC §7): how events arrive.
    pub transport: Transport,
    /// `refreshAheadRatio` (SPEC §10; 0 = off): a hit on a reference entry
    /// older than this share of its TTL is answered and refreshed once in the
    /// background.
    pub refresh_ahead_ratio: f64,
    /// `referenceHotEntries` (default 256, 0 = off): how many reference
    /// entries of each kind the JS side may keep as text next to the
    /// handler (lib/consumer.js), so a hit crosses into native code only to
    /// admit an entry. Each stays valid while the cache's generation is
    /// unchanged and until the native entry's refresh point.
    pub reference_hot_entries: u32,
    /// `sharedSnapshot` (SPEC §7; stream transport only, default on there):
    /// full loads go through the tenant's snapshot in Redis and its lease.
    pub shared_snapshot: bool,
    /// `sharedReference` (SPEC §7, default off): reference data gets a
    /// second tier in Redis shared by the fleet (`shared_ref.rs`).
    pub shared_reference: bool,
    /// Bounds of the internal queues (not options: Rust tests lower them).
    pub limits: Limits,
}

/// How events reach a consumer (SPEC §7 `transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `'pubsub'`: the seven topic channels; a lost connection means a reload.
    PubSub,
    /// `'stream'`: the tenant's stream, live through its stream channel; a
    /// lost connection is caught up from the stream.
    Stream,
}

/// Bounds of the queues between Redis, the core and the JS thread. Each has a
/// defined, counted (`queueOverflows`) behaviour when it is hit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Push messages waiting between the Redis connection and the
    /// subscription task: beyond it the link is treated as lost (resync).
    pub push_messages: usize,
    /// Payload bytes of those messages.
    pub push_bytes: usize,
    /// Events recorded during one reload: beyond it recording stops, the
    /// reload is installed and one more follows.
    pub recorded_events: usize,
    /// Message bytes of those events.
    pub recorded_bytes: usize,
    /// `'change'` notices waiting for the JS thread: beyond it they collapse
    /// into one `'resync'` notice with reason `change-overflow`.
    pub pending_changes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            push_messages: 100_000,
            push_bytes: 64 * 1024 * 1024,
            recorded_events: 1_000_000,
            recorded_bytes: 64 * 1024 * 1024,
            pending_changes: 100_000,
        }
    }
}

const TOP_LEVEL: &[&str] = &[
    "tenantId",
    "wrapperUrl",
    "redisUrl",
    "redisSentinel",
    "redisCluster",
    "redisTls",
    "wrapperToken",
    "channelPrefix",
    "signingSecret",
    "maxClockSkewMs",
    "ttl",
    "staleIfErrorMs",
    "heartbeatMs",
    "maxReferenceBytes",
    "refreshIntervalMs",
    "requestTimeoutMs",
    "initTimeoutMs",
    "circuitBreaker",
    "maxResponseBytes",
    "resyncJitterMs",
    "transport",
    "sharedSnapshot",
    "refreshAheadRatio",
    "referenceHotEntries",
    "sharedReference",
    // Handled on the JS side, accepted here so one list names every option.
    "logger",
];

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Default of `maxClockSkewMs`: generous for NTP-synced hosts, small next to
/// the 5-minute replay window it closes after a restart.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 30_000;

/// True when `id` is a valid tenant id: `^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`.
pub fn is_valid_tenant_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// True when `p` is a valid channel prefix: 1–64 of `[A-Za-z0-9._:-]`, so that it
/// can never carry a glob character into a channel name.
pub fn is_valid_channel_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b':'))
}

impl Config {
    /// Validates `options` (a JSON object) with `env` as the source of fallbacks.
    ///
    /// Pure: reads nothing but its arguments. Errors name the option.
    pub fn from_json(options: &Value, env: &HashMap<String, String>) -> Result<Config> {
        let obj = match options {
            Value::Object(m) => m,
            _ => return Err(CoreError::option_type("options", "an object")),
        };
        for key in obj.keys() {
            if !TOP_LEVEL.contains(&key.as_str()) {
                return Err(CoreError::option_type(
                    key,
                    "a known option (unknown option name)",
                ));
            }
        }
        let env_get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();

        let tenant_id = match obj.get("tenantId") {
            None | Some(Value::Null) => {
                return Err(CoreError::option_type(
                    "tenantId",
                    "a string (it is required)",
                ))
            }
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(CoreError::option_type("tenantId", "a string")),
        };
        if !is_valid_tenant_id(&tenant_id) {
            return Err(CoreError::option_range(
                "tenantId",
                "1-128 characters of [A-Za-z0-9._-], starting with a letter or digit",
            ));
        }

        let wrapper_url = match opt_string(obj, "wrapperUrl")?.or_else(|| env_get("WRAPPER_URL")) {
            Some(u) => u,
            None => {
                return Err(CoreError::option_type(
                    "wrapperUrl",
                    "a string (set it or the WRAPPER_URL environment variable)",
                ))
            }
        };
        let parsed = url::Url::parse(&wrapper_url).map_err(|_| {
            CoreError::option_range("wrapperUrl", "an absolute http:// or https:// URL")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(CoreError::option_range(
                "wrapperUrl",
                "an absolute http:// or https:// URL",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(CoreError::option_range(
                "wrapperUrl",
                "a base URL without query or fragment",
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(CoreError::option_range(
                "wrapperUrl",
                "a URL without credentials (use wrapperToken)",
            ));
        }
        let wrapper_url = parsed.as_str().trim_end_matches('/').to_string();

        let redis = RedisTarget::from_options(obj, env)?;

        let wrapper_token = opt_string(obj, "wrapperToken")?;
        if let Some(t) = &wrapper_token {
            if t.is_empty() || !t.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                return Err(CoreError::option_range(
                    "wrapperToken",
                    "a non-empty string of visible ASCII characters",
                ));
            }
        }
        let channel_prefix = opt_string(obj, "channelPrefix")?.unwrap_or_else(|| "crm".into());
        if !is_valid_channel_prefix(&channel_prefix) {
            return Err(CoreError::option_range(
                "channelPrefix",
                "1-64 characters of [A-Za-z0-9._:-]",
            ));
        }
        let signing_secret = SigningKeys::from_option("signingSecret", obj.get("signingSecret"))?;

        let ttl = parse_ttls(obj.get("ttl"))?;
        let ms = |name: &str, default: u64, min: u64, max: u64| -> Result<Duration> {
            Ok(Duration::from_millis(opt_int(
                obj, name, default, min, max,
            )?))
        };
        let stale_if_error = ms("staleIfErrorMs", 3_600_000, 0, 30 * DAY_MS)?;
        let heartbeat = ms("heartbeatMs", 5_000, 50, 3_600_000)?;
        let max_reference_bytes = opt_int(obj, "maxReferenceBytes", 64 * 1024 * 1024, 0, 1 << 40)?;
        let refresh = opt_int(obj, "refreshIntervalMs", 300_000, 0, 30 * DAY_MS)?;
        if refresh != 0 && refresh < 1000 {
            return Err(CoreError::option_range(
                "refreshIntervalMs",
                "0 (off) or at least 1000",
            ));
        }
        let request_timeout = ms("requestTimeoutMs", 2_000, 1, 600_000)?;
        // At most the timestamp window: a larger allowance would never reject
        // anything that window does not.
        let max_clock_skew = ms(
            "maxClockSkewMs",
            DEFAULT_MAX_CLOCK_SKEW_MS,
            0,
            crate::signature::TIMESTAMP_WINDOW_MS as u64,
        )?;
        let init_timeout = ms("initTimeoutMs", 10_000, 1, DAY_MS)?;
        let (breaker_failures, breaker_cool_down) = parse_breaker(obj.get("circuitBreaker"))?;
        let max_response_bytes = opt_int(obj, "maxResponseBytes", 64 * 1024 * 1024, 1, 1 << 40)?;
        let resync_jitter = ms("resyncJitterMs", 5_000, 0, 600_000)?;
        let reference_hot_entries = opt_int(obj, "referenceHotEntries", 256, 0, 65_536)? as u32;
        let refresh_ahead_ratio = match obj.get("refreshAheadRatio") {
            None | Some(Value::Null) => 0.0,
            Some(Value::Number(n)) => {
                let r = n.as_f64().unwrap_or(f64::NAN);
                if !(0.0..1.0).contains(&r) {
                    return Err(CoreError::option_range(
                        "refreshAheadRatio",
                        "a number from 0 (off) to below 1",
                    ));
                }
                r
            }
            Some(_) => return Err(CoreError::option_type("refreshAheadRatio", "a number")),
        };
        let transport = match obj.get("transport") {
            None | Some(Value::Null) => Transport::PubSub,
            Some(Value::String(s)) if s == "pubsub" => Transport::PubSub,
            Some(Value::String(s)) if s == "stream" => Transport::Stream,
            Some(Value::String(_)) => {
                return Err(CoreError::option_range("transport", "'pubsub' or 'stream'"))
            }
            Some(_) => return Err(CoreError::option_type("transport", "a string")),
        };
        let shared_snapshot = match obj.get("sharedSnapshot") {
            None | Some(Value::Null) => transport == Transport::Stream,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(CoreError::option_type("sharedSnapshot", "a boolean")),
        };
        if shared_snapshot && transport != Transport::Stream {
            return Err(CoreError::option_range(
                "sharedSnapshot",
                "false unless transport is 'stream' (the snapshot is as of a stream entry)",
            ));
        }
        let shared_reference = match obj.get("sharedReference") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(CoreError::option_type("sharedReference", "a boolean")),
        };

        Ok(Config {
            tenant_id,
            wrapper_url,
            redis,
            wrapper_token: wrapper_token.map(Secret::new),
            channel_prefix,
            signing_secret,
            max_clock_skew,
            ttl,
            stale_if_error,
            heartbeat,
            max_reference_bytes,
            refresh_interval: (refresh > 0).then(|| Duration::from_millis(refresh)),
            request_timeout,
            init_timeout,
            breaker_failures,
            breaker_cool_down,
            max_response_bytes,
            resync_jitter,
            transport,
            shared_snapshot,
            shared_reference,
            refresh_ahead_ratio,
            reference_hot_entries,
            limits: Limits::default(),
        })
    }

    /// The channel of `topic` for this tenant: `{prefix}:{tenant}:{topic}`.
    pub fn channel(&self, topic: &str) -> String {
        format!("{}:{}:{}", self.channel_prefix, self.tenant_id, topic)
    }

    /// The channels this tenant subscribes: the seven topics with pub/sub,
    /// its stream channel with the stream transport.
    pub fn channels(&self) -> Vec<String> {
        match self.transport {
            Transport::PubSub => Topic::ALL.iter().map(|t| self.channel(t.name())).collect(),
            Transport::Stream => vec![self.channel(crate::stream::LIVE_SEGMENT)],
        }
    }
}

/// A tenant pool's options (SPEC §8): every consumer option except
/// `tenantId`, applied to each tenant, and the pool's own.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// What every tenant gets; its `tenant_id` is replaced per tenant
    /// ([`PoolConfig::for_tenant`]).
    pub template: Config,
    /// `maxTenants` (default 10,000): tenants loaded at once; beyond it the
    /// least recently used is released (the JS pool tracks use).
    pub max_tenants: u64,
    /// `idleTenantMs` (default 30 min, 0 = never): a tenant without reads
    /// for this long is released.
    pub idle_tenant_ms: u64,
    /// `maxConcurrentLoads` (default 8): full loads of the pool's tenants
    /// that download from the Wrapper at once (a reconnect resyncs them all).
    pub max_concurrent_loads: usize,
}

/// The pool's own options, not passed on to its tenants.
const POOL_ONLY: &[&str] = &["maxTenants", "idleTenantMs", "maxConcurrentLoads"];

/// Stands in for the tenant id while a pool's options are validated.
const TEMPLATE_TENANT: &str = "pool";

impl PoolConfig {
    /// Validates a pool's options (plain JSON); errors as
    /// [`Config::from_json`]'s, naming the option. `tenantId` is refused: a
    /// pool's tenants are named by `pool.tenant(id)`.
    pub fn from_json(options: &Value, env: &HashMap<String, String>) -> Result<PoolConfig> {
        let obj = match options {
            Value::Object(o) => o,
            _ => return Err(CoreError::option_type("options", "an object")),
        };
        if obj.contains_key("tenantId") {
            return Err(CoreError::option_type(
                "tenantId",
                "absent (a pool's tenants are named by pool.tenant(id))",
            ));
        }
        let max_tenants = opt_int(obj, "maxTenants", 10_000, 1, 10_000_000)?;
        let idle_tenant_ms = opt_int(obj, "idleTenantMs", 30 * 60_000, 0, 365 * DAY_MS)?;
        let max_concurrent_loads = opt_int(obj, "maxConcurrentLoads", 8, 1, 1024)? as usize;
        let mut rest = obj.clone();
        for k in POOL_ONLY {
            rest.remove(*k);
        }
        rest.insert("tenantId".into(), Value::String(TEMPLATE_TENANT.into()));
        let template = Config::from_json(&Value::Object(rest), env)?;
        Ok(PoolConfig {
            template,
            max_tenants,
            idle_tenant_ms,
            max_concurrent_loads,
        })
    }

    /// The configuration of tenant `id`: a `RangeError`-class error when
    /// `id` is not a valid tenant id (nothing is subscribed or requested).
    pub fn for_tenant(&self, id: &str) -> Result<Config> {
        if !is_valid_tenant_id(id) {
            return Err(CoreError::arg_range(
                "tenantId must be 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit",
            ));
        }
        let mut config = self.template.clone();
        config.tenant_id = id.to_owned();
        Ok(config)
    }
}

fn opt_string(obj: &Map<String, Value>, name: &str) -> Result<Option<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(CoreError::option_type(name, "a string")),
    }
}

fn int_of(name: &str, v: &Value, min: u64, max: u64) -> Result<u64> {
    let n = match v {
        Value::Number(n) => n,
        _ => return Err(CoreError::option_type(name, "a number")),
    };
    let f = n.as_f64().unwrap_or(f64::NAN);
    if !(f.is_finite() && f.fract() == 0.0 && f >= min as f64 && f <= max as f64) {
        return Err(CoreError::option_range(
            name,
            format!("an integer from {min} to {max}"),
        ));
    }
    Ok(f as u64)
}

fn opt_int(obj: &Map<String, Value>, name: &str, default: u64, min: u64, max: u64) -> Result<u64> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => int_of(name, v, min, max),
    }
}

fn parse_ttls(v: Option<&Value>) -> Result<Ttls> {
    let mut t = Ttls {
        user_profiles: Duration::from_millis(300_000),
        hierarchy: Duration::from_millis(900_000),
        audit_logs: Duration::from_millis(3_600_000),
        historical_data: Duration::from_millis(86_400_000),
        not_found: Duration::from_millis(30_000),
    };
    let obj = match v {
        None | Some(Value::Null) => return Ok(t),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(CoreError::option_type("ttl", "an object")),
    };
    for (key, val) in obj {
        let name = format!("ttl.{key}");
        let slot = match key.as_str() {
            "userProfiles" => &mut t.user_profiles,
            "hierarchy" => &mut t.hierarchy,
            "auditLogs" => &mut t.audit_logs,
            "historicalData" => &mut t.historical_data,
            "notFound" => &mut t.not_found,
            _ => {
                return Err(CoreError::option_type(
                    &name,
                    "one of userProfiles, hierarchy, auditLogs, historicalData, notFound",
                ))
            }
        };
        if !val.is_null() {
            *slot = Duration::from_millis(int_of(&name, val, 0, 365 * DAY_MS)?);
        }
    }
    Ok(t)
}

fn parse_breaker(v: Option<&Value>) -> Result<(u32, Duration)> {
    let mut failures = crate::breaker::FAILURES_TO_OPEN;
    let mut cool_down = crate::breaker::COOL_DOWN;
    let obj = match v {
        None | Some(Value::Null) => return Ok((failures, cool_down)),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(CoreError::option_type("circuitBreaker", "an object")),
    };
    for (key, val) in obj {
        let name = format!("circuitBreaker.{key}");
        match key.as_str() {
            "failures" if !val.is_null() => failures = int_of(&name, val, 1, 1_000_000)? as u32,
            "coolDownMs" if !val.is_null() => {
                cool_down = Duration::from_millis(int_of(&name, val, 1, DAY_MS)?)
            }
            "failures" | "coolDownMs" => {}
            _ => return Err(CoreError::option_type(&name, "one of failures, coolDownMs")),
        }
    }
    Ok((failures, cool_down))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ArgKind;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base() -> Value {
        json!({ "tenantId": "t1", "wrapperUrl": "http://127.0.0.1:9/" })
    }

    fn err_of(v: Value) -> String {
        Config::from_json(&v, &env(&[])).unwrap_err().to_string()
    }

    #[test]
    fn defaults_match_the_spec() {
        let c = Config::from_json(&base(), &env(&[])).unwrap();
        assert_eq!(c.wrapper_url, "http://127.0.0.1:9");
        assert_eq!(c.redis.describe(), "redis://127.0.0.1:6379");
        assert_eq!(c.channel_prefix, "crm");
        assert_eq!(c.ttl.user_profiles, Duration::from_secs(300));
        assert_eq!(c.ttl.hierarchy, Duration::from_secs(900));
        assert_eq!(c.ttl.audit_logs, Duration::from_secs(3600));
        assert_eq!(c.ttl.historical_data, Duration::from_secs(86400));
        assert_eq!(c.ttl.not_found, Duration::from_secs(30));
        assert_eq!(c.stale_if_error, Duration::from_secs(3600));
        assert_eq!(c.heartbeat, Duration::from_secs(5));
        assert_eq!(c.max_reference_bytes, 64 * 1024 * 1024);
        assert_eq!(c.refresh_interval, Some(Duration::from_secs(300)));
        assert_eq!(c.request_timeout, Duration::from_secs(2));
        assert_eq!(c.init_timeout, Duration::from_secs(10));
        assert_eq!(c.signing_secret, None);
        assert_eq!(c.max_clock_skew, Duration::from_secs(30));
        assert_eq!(c.max_response_bytes, 64 * 1024 * 1024);
        assert_eq!(c.channel("roles"), "crm:t1:roles");
    }

    #[test]
    fn env_fallbacks() {
        let v = json!({ "tenantId": "t1" });
        let c = Config::from_json(
            &v,
            &env(&[
                ("WRAPPER_URL", "https://w.example/base/"),
                ("REDIS_HOST", "redis.local"),
                ("REDIS_PORT", "6390"),
                ("REDIS_USERNAME", "app"),
                ("REDIS_PASSWORD", "s3cret"),
            ]),
        )
        .unwrap();
        assert_eq!(c.wrapper_url, "https://w.example/base");
        assert_eq!(c.redis.describe(), "redis://app:***@redis.local:6390");
        assert!(!format!("{c:?}").contains("s3cret"));
        let c = Config::from_json(
            &v,
            &env(&[("WRAPPER_URL", "http://w"), ("REDIS_URL", "redis://h:1/2")]),
        )
        .unwrap();
        assert_eq!(c.redis.describe(), "redis://h:1/2");
    }

    #[test]
    fn errors_name_the_option() {
        assert!(err_of(json!({})).contains("`tenantId`"));
        assert!(err_of(json!({"tenantId": "a:b", "wrapperUrl": "http://x"})).contains("`tenantId`"));
        assert!(err_of(json!({"tenantId": "a*", "wrapperUrl": "http://x"})).contains("`tenantId`"));
        assert!(err_of(json!({"tenantId": "t"})).contains("`wrapperUrl`"));
        assert!(err_of(json!({"tenantId": "t", "wrapperUrl": "ftp://x"})).contains("`wrapperUrl`"));
        let mut v = base();
        v["heartbeatMs"] = json!("5");
        assert!(err_of(v.clone()).contains("`heartbeatMs`"));
        v["heartbeatMs"] = json!(-1);
        assert!(err_of(v.clone()).contains("`heartbeatMs`"));
        let mut v = base();
        v["ttl"] = json!({"userProfile": 1});
        assert!(err_of(v).contains("`ttl.userProfile`"));
        let mut v = base();
        v["ttl"] = json!({"userProfiles": 1.5});
        assert!(err_of(v).contains("`ttl.userProfiles`"));
        let mut v = base();
        v["channelPrefix"] = json!("crm*");
        assert!(err_of(v).contains("`channelPrefix`"));
        for bad in [json!(0), json!(-1), json!(1.5), json!(2_199_023_255_552u64)] {
            let mut v = base();
            v["maxResponseBytes"] = bad;
            assert!(err_of(v).contains("`maxResponseBytes`"));
        }
        let mut v = base();
        v["maxResponseBytes"] = json!("1024");
        assert!(err_of(v).contains("`maxResponseBytes`"));
        let mut v = base();
        v["maxResponseBytes"] = json!(1);
        assert_eq!(
            Config::from_json(&v, &env(&[])).unwrap().max_response_bytes,
            1
        );
        let mut v = base();
        v["bogus"] = json!(1);
        assert!(err_of(v).contains("`bogus`"));
    }

    #[test]
    fn redis_url_fragments_are_refused() {
        for url in [
            "rediss://h:6380/#insecure",
            "rediss://:pw-hunter2@h/0#insecure",
            "redis://h#x",
        ] {
            let mut v = base();
            v["redisUrl"] = json!(url);
            let e = Config::from_json(&v, &env(&[])).unwrap_err();
            assert_eq!(e.arg_kind(), Some(ArgKind::Range));
            let msg = e.to_string();
            assert!(
                msg.contains("`redisUrl`") && !msg.contains("hunter2"),
                "{msg}"
            );
        }
        let mut v = base();
        v["redisUrl"] = json!("rediss://h:6380/0");
        assert!(Config::from_json(&v, &env(&[])).is_ok());
    }

    #[test]
    fn the_env_option_is_unknown() {
        let mut v = base();
        v["env"] = json!({});
        assert!(err_of(v).contains("`env`"));
    }

    #[test]
    fn secrets_never_echoed() {
        let mut v = base();
        v["redisUrl"] = json!("http://user:hunter2@host");
        let e = err_of(v);
        assert!(e.contains("`redisUrl`") && !e.contains("hunter2"), "{e}");
        let mut v = base();
        v["wrapperToken"] = json!("tok\nen-hunter2");
        let e = err_of(v);
        assert!(
            e.contains("`wrapperToken`") && !e.contains("hunter2"),
            "{e}"
        );
        let mut v = base();
        v["wrapperToken"] = json!("hunter2");
        v["signingSecret"] = json!("hunter3");
        let c = Config::from_json(&v, &env(&[])).unwrap();
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("hunter3"),
            "{dbg}"
        );
        let mut v = base();
        v["signingSecret"] = json!(["hunter4", "hunter5"]);
        let c = Config::from_json(&v, &env(&[])).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter"), "{dbg}");
        v["signingSecret"] = json!(["hunter4", ""]);
        let e = err_of(v);
        assert!(
            e.contains("`signingSecret[1]`") && !e.contains("hunter"),
            "{e}"
        );
    }

    #[test]
    fn signing_secret_string_or_list() {
        let mut v = base();
        v["signingSecret"] = json!("one");
        let c = Config::from_json(&v, &env(&[])).unwrap();
        assert_eq!(c.signing_secret.unwrap().primary().expose(), "one");
        v["signingSecret"] = json!(["new", "old"]);
        let c = Config::from_json(&v, &env(&[])).unwrap();
        let keys = c.signing_secret.unwrap();
        assert_eq!(keys.primary().expose(), "new");
        assert_eq!(keys.all().len(), 2);
        for bad in [json!(""), json!([]), json!([""]), json!(1)] {
            v["signingSecret"] = bad.clone();
            assert!(err_of(v.clone()).contains("`signingSecret"), "{bad}");
        }
    }

    #[test]
    fn shared_reference_is_a_boolean_off_by_default() {
        let c = Config::from_json(&base(), &env(&[])).unwrap();
        assert!(!c.shared_reference);
        let mut v = base();
        v["sharedReference"] = json!(true);
        assert!(Config::from_json(&v, &env(&[])).unwrap().shared_reference);
        v["sharedReference"] = json!(null);
        assert!(!Config::from_json(&v, &env(&[])).unwrap().shared_reference);
        for bad in [json!("true"), json!(1), json!({})] {
            v["sharedReference"] = bad.clone();
            let e = Config::from_json(&v, &env(&[])).unwrap_err();
            assert_eq!(e.arg_kind(), Some(ArgKind::Type), "{bad}");
            assert!(e.to_string().contains("`sharedReference`"), "{e}");
        }
        let pool = PoolConfig::from_json(
            &json!({ "wrapperUrl": "http://w", "sharedReference": true }),
            &env(&[]),
        )
        .unwrap();
        assert!(pool.for_tenant("acme").unwrap().shared_reference);
    }

    #[test]
    fn max_clock_skew() {
        let mut v = base();
        v["maxClockSkewMs"] = json!(0);
        let c = Config::from_json(&v, &env(&[])).unwrap();
        assert_eq!(c.max_clock_skew, Duration::ZERO);
        v["maxClockSkewMs"] = json!(300_000);
        assert!(Config::from_json(&v, &env(&[])).is_ok());
        for bad in [json!(-1), json!(300_001), json!(1.5), json!("5")] {
            v["maxClockSkewMs"] = bad.clone();
            assert!(err_of(v.clone()).contains("`maxClockSkewMs`"), "{bad}");
        }
    }
}
