//! The durable transport of SPEC §7: the Redis layout of a tenant's change
//! stream, epoch, shared snapshot and lease, and the commands that read and
//! write them. `PROTOCOL.md` is the same layout in prose, for publishers in
//! other languages.
//!
//! Every key of a tenant carries the hash tag `{tenant}`, so all of them are
//! in one Cluster hash slot:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `{prefix}:{{tenant}}:stream` | stream | every event: fields `topic`, `msg` (the SPEC §3 message, signed as on pub/sub) |
//! | `{prefix}:{{tenant}}:epoch` | string | a random id set once (`SET NX`); a different or missing value means Redis lost its data |
//! | `{prefix}:{{tenant}}:snapshot` | string | the shared snapshot (see `snapshot.rs`) |
//! | `{prefix}:{{tenant}}:lease` | string | who is loading from the Wrapper (`SET NX PX`) |
//! | `{prefix}:{{tenant}}:refresh` | string | who does this interval's refresh (`SET NX PX`) |
//!
//! Live delivery stays on pub/sub: the publisher's script (`PUBLISH_SCRIPT`)
//! adds the entry and, in the same atomic step, publishes `"{id} {topic}
//! {msg}"` on the channel `{prefix}:{tenant}:stream`, so a consumer learns
//! each entry's id as it arrives, with pub/sub's latency, and applies entries
//! in id order. After a lost connection it reads the entries after the last id
//! it applied (`XRANGE (id +`) instead of reloading, provided the epoch is
//! unchanged and the stream still holds that entry; otherwise the gap cannot
//! be proven empty and it reloads.

use std::cmp::Ordering;
use std::fmt;

use redis::aio::MultiplexedConnection;
use redis::Value;

use crate::protocol::Topic;

/// The channel segment of live stream messages: `{prefix}:{tenant}:stream`.
pub const LIVE_SEGMENT: &str = "stream";

/// The publisher's atomic step. KEYS: stream, epoch. ARGV: maxlen, topic,
/// message, live channel, topic channel (empty: no pub/sub copy), a fresh
/// epoch candidate. Returns `{entry id, receivers}`.
pub const PUBLISH_SCRIPT: &str = r#"
redis.call('SET', KEYS[2], ARGV[6], 'NX')
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'topic', ARGV[2], 'msg', ARGV[3])
local n = redis.call('PUBLISH', ARGV[4], id .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
if ARGV[5] ~= '' then n = n + redis.call('PUBLISH', ARGV[5], ARGV[3]) end
return {id, n}
"#;

/// Deletes a lease only while it is still ours. KEYS: lease. ARGV: owner.
pub const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// A stream entry id `ms-seq`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds part (Redis's clock when the entry was added).
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// `0-0`: before every entry (an empty or absent stream).
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// Parses `ms-seq`.
    pub fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-')?;
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One tenant's keys and live channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// The change stream.
    pub stream: String,
    /// The data epoch.
    pub epoch: String,
    /// The shared snapshot.
    pub snapshot: String,
    /// The Wrapper-load lease.
    pub lease: String,
    /// The periodic-refresh lease.
    pub refresh: String,
    /// The live channel.
    pub live: String,
}

impl Keys {
    /// The keys of `tenant` under `prefix`.
    pub fn new(prefix: &str, tenant: &str) -> Keys {
        let key = |name: &str| format!("{prefix}:{{{tenant}}}:{name}");
        Keys {
            stream: key("stream"),
            epoch: key("epoch"),
            snapshot: key("snapshot"),
            lease: key("lease"),
            refresh: key("refresh"),
            live: format!("{prefix}:{tenant}:{LIVE_SEGMENT}"),
        }
    }
}

/// A live message split into its entry id, topic and SPEC §3 message.
pub fn parse_live(payload: &[u8]) -> Option<(StreamId, Topic, &[u8])> {
    let sp = payload.iter().position(|&b| b == b' ')?;
    let id = StreamId::parse(std::str::from_utf8(&payload[..sp]).ok()?)?;
    let rest = &payload[sp + 1..];
    let sp2 = rest.iter().position(|&b| b == b' ')?;
    let topic = Topic::from_name(std::str::from_utf8(&rest[..sp2]).ok()?)?;
    Some((id, topic, &rest[sp2 + 1..]))
}

/// One entry read back from the stream.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its id.
    pub id: StreamId,
    /// Its topic (`None`: a field the consumer does not know; rejected).
    pub topic: Option<Topic>,
    /// The SPEC §3 message.
    pub msg: Vec<u8>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The entries of an `XRANGE` reply.
fn entries(v: Value) -> redis::RedisResult<Vec<Entry>> {
    let Value::Array(items) = v else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(parts) = item else { continue };
        let [id, fields] = &parts[..] else { continue };
        let Some(id) = text(id).as_deref().and_then(StreamId::parse) else {
            continue;
        };
        let fields: Vec<Value> = match fields {
            Value::Array(f) => f.clone(),
            Value::Map(m) => m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
            _ => Vec::new(),
        };
        let mut topic = None;
        let mut msg = Vec::new();
        for pair in fields.chunks(2) {
            if let [k, v] = pair {
                match text(k).as_deref() {
                    Some("topic") => topic = text(v).as_deref().and_then(Topic::from_name),
                    Some("msg") => {
                        if let Value::BulkString(b) = v {
                            msg = b.clone();
                        }
                    }
                    _ => {}
                }
            }
        }
        out.push(Entry { id, topic, msg });
    }
    Ok(out)
}

/// The position a load is "as of": the id of the stream's last entry; when
/// the stream is empty (or absent), `0-N` where N is the number of entries
/// ever added to it (`entries-added`), which is before every entry and lets
/// [`holds`] tell whether any entry added later was trimmed.
pub async fn tail(conn: &mut MultiplexedConnection, keys: &Keys) -> redis::RedisResult<StreamId> {
    let Some(info) = info(conn, keys).await? else {
        return Ok(StreamId::ZERO);
    };
    if info.length == 0 {
        return Ok(StreamId {
            ms: 0,
            seq: info.added,
        });
    }
    Ok(info.last)
}

/// What `XINFO STREAM` says of a stream (Redis 7).
struct Info {
    /// Entries in it now.
    length: u64,
    /// Entries ever added (`entries-added`).
    added: u64,
    /// `last-generated-id`.
    last: StreamId,
}

/// `XINFO STREAM`, or `None` when the stream does not exist.
async fn info(conn: &mut MultiplexedConnection, keys: &Keys) -> redis::RedisResult<Option<Info>> {
    let reply: redis::RedisResult<Value> = redis::cmd("XINFO")
        .arg("STREAM")
        .arg(&keys.stream)
        .query_async(conn)
        .await;
    let reply = match reply {
        Ok(v) => v,
        Err(e) if e.code() == Some("ERR") => return Ok(None),
        Err(e) => return Err(e),
    };
    let fields: Vec<(String, Value)> = match reply {
        Value::Map(m) => m
            .into_iter()
            .filter_map(|(k, v)| text(&k).map(|k| (k, v)))
            .collect(),
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => text(k).map(|k| (k, v.clone())),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let int = |name: &str| match get(name) {
        Some(Value::Int(n)) => Some(*n as u64),
        _ => None,
    };
    let (Some(length), Some(added), Some(last)) = (
        int("length"),
        int("entries-added"),
        get("last-generated-id")
            .and_then(text)
            .and_then(|t| StreamId::parse(&t)),
    ) else {
        return Ok(None);
    };
    Ok(Some(Info {
        length,
        added,
        last,
    }))
}

/// Whether every entry after position `id` (see [`tail`]) is still in the
/// stream, so that reading from `id` on misses nothing. Entries are trimmed
/// oldest first (`MAXLEN`) and never deleted otherwise, so for a real id it
/// suffices that the entry itself is still there; for `0-N`, that no more
/// than the N entries added before it were trimmed.
pub async fn holds(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    id: StreamId,
) -> redis::RedisResult<bool> {
    if id.ms == 0 {
        return Ok(match info(conn, keys).await? {
            None => true,
            Some(i) => i.added.saturating_sub(i.length) <= id.seq,
        });
    }
    let v: Value = redis::cmd("XRANGE")
        .arg(&keys.stream)
        .arg(id.to_string())
        .arg(id.to_string())
        .query_async(conn)
        .await?;
    Ok(entries(v)?.iter().any(|e| e.id == id))
}

/// Up to `count` entries after `id`, in order.
pub async fn read_after(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    id: StreamId,
    count: usize,
) -> redis::RedisResult<Vec<Entry>> {
    let v: Value = redis::cmd("XRANGE")
        .arg(&keys.stream)
        .arg(format!("({id}"))
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    entries(v)
}

/// The tenant's epoch, set to `candidate` when there is none yet.
pub async fn epoch(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    candidate: &str,
) -> redis::RedisResult<String> {
    let old: Option<String> = redis::cmd("SET")
        .arg(&keys.epoch)
        .arg(candidate)
        .arg("NX")
        .arg("GET")
        .query_async(conn)
        .await?;
    Ok(old.unwrap_or_else(|| candidate.to_owned()))
}

/// The current epoch, or `None` when there is none.
pub async fn current_epoch(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> redis::RedisResult<Option<String>> {
    redis::cmd("GET").arg(&keys.epoch).query_async(conn).await
}

/// Tries to take a lease (`SET NX PX`); true when taken.
pub async fn take_lease(
    conn: &mut MultiplexedConnection,
    key: &str,
    owner: &str,
    ms: u64,
) -> redis::RedisResult<bool> {
    let r: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(owner)
        .arg("NX")
        .arg("PX")
        .arg(ms.max(1))
        .query_async(conn)
        .await?;
    Ok(r.is_some())
}

/// Whether a lease is held by anyone.
pub async fn leased(conn: &mut MultiplexedConnection, key: &str) -> redis::RedisResult<bool> {
    let n: i64 = redis::cmd("EXISTS").arg(key).query_async(conn).await?;
    Ok(n > 0)
}

/// Gives a lease back if it is still `owner`'s.
pub async fn release_lease(
    conn: &mut MultiplexedConnection,
    key: &str,
    owner: &str,
) -> redis::RedisResult<()> {
    let _: i64 = redis::cmd("EVAL")
        .arg(RELEASE_SCRIPT)
        .arg(1)
        .arg(key)
        .arg(owner)
        .query_async(conn)
        .await?;
    Ok(())
}

/// Compares two ids for "is `a` after `b`".
pub fn after(a: StreamId, b: StreamId) -> bool {
    a.cmp(&b) == Ordering::Greater
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_as_redis_orders_them() {
        let a = StreamId::parse("1700000000000-0").unwrap();
        let b = StreamId::parse("1700000000000-1").unwrap();
        let c = StreamId::parse("1700000000001-0").unwrap();
        assert!(a < b && b < c && StreamId::ZERO < a);
        assert_eq!(b.to_string(), "1700000000000-1");
        assert!(StreamId::parse("17-").is_none() && StreamId::parse("x-1").is_none());
    }

    #[test]
    fn keys_share_one_hash_slot_and_live_messages_parse() {
        let k = Keys::new("crm", "acme");
        assert_eq!(k.stream, "crm:{acme}:stream");
        assert_eq!(k.snapshot, "crm:{acme}:snapshot");
        assert_eq!(k.live, "crm:acme:stream");
        let (id, topic, msg) = parse_live(b"5-1 roles {\"a\":1}").unwrap();
        assert_eq!(
            (id, topic, msg),
            (StreamId { ms: 5, seq: 1 }, Topic::Roles, &b"{\"a\":1}"[..])
        );
        assert!(parse_live(b"5-1 nope {}").is_none());
        assert!(parse_live(b"garbage").is_none());
    }
}
