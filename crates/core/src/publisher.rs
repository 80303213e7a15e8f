//! The publishing side of SPEC §3, for a Wrapper written in Node (and for the
//! demo and tests): builds the message envelope (`eventId`, `timestamp`,
//! `tenantId`, optional `version`), signs it when a secret is set, and
//! PUBLISHes it on `{prefix}:{tenant}:{topic}`.

use serde_json::{Map, Value};

use crate::config::{is_valid_channel_prefix, is_valid_tenant_id, Secret};
use crate::error::{CoreError, Result};
use crate::protocol::{Topic, EVENT_TYPES};
use crate::signature;

/// Options of [`Publisher::connect`].
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Redis URL.
    pub redis_url: Secret,
    /// The tenant every message is for.
    pub tenant_id: String,
    /// Channel prefix (default `crm`).
    pub channel_prefix: String,
    /// Signs messages when set.
    pub signing_secret: Option<Secret>,
}

/// A connected publisher. Cheap to clone; safe to share.
#[derive(Clone)]
pub struct Publisher {
    /// Multiplexed connection (reconnects on demand).
    conn: redis::aio::MultiplexedConnection,
    /// Validated options.
    opts: PublisherOptions,
}

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
    if let Some(secret) = &opts.signing_secret {
        let sig = signature::sign(&m, secret);
        m.insert("signature".into(), Value::String(sig));
    }
    serde_json::to_string(&m)
        .map_err(|e| CoreError::arg_range(format!("cannot encode message: {e}")))
}

impl Publisher {
    /// Validates the options and connects.
    pub async fn connect(opts: PublisherOptions) -> Result<Publisher> {
        if !is_valid_tenant_id(&opts.tenant_id) {
            return Err(CoreError::option_range(
                "tenantId",
                "1-128 characters of [A-Za-z0-9._-]",
            ));
        }
        if !is_valid_channel_prefix(&opts.channel_prefix) {
            return Err(CoreError::option_range(
                "channelPrefix",
                "1-64 characters of [A-Za-z0-9._:-]",
            ));
        }
        let client = redis::Client::open(opts.redis_url.expose())
            .map_err(|_| CoreError::option_range("redisUrl", "a redis:// or rediss:// URL"))?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| CoreError::RedisUnavailable(format!("{:?}", e.kind())))?;
        Ok(Publisher { conn, opts })
    }

    /// Publishes one event; resolves to the number of receivers.
    pub async fn publish(
        &self,
        topic: &str,
        event_type: &str,
        data: Value,
        version: Option<u64>,
    ) -> Result<i64> {
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
            &self.opts,
            event_type,
            data,
            version,
            uuid::Uuid::new_v4().to_string(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )?;
        let channel = format!(
            "{}:{}:{}",
            self.opts.channel_prefix, self.opts.tenant_id, topic
        );
        let mut conn = self.conn.clone();
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(msg)
            .query_async(&mut conn)
            .await
            .map_err(|e| CoreError::RedisUnavailable(format!("{:?}", e.kind())))
    }
}
