//! The command connection: plain Redis commands and scripts (the shared
//! reference tier of SPEC §7), next to the subscription link.
//!
//! * **Lazy.** Nothing is opened until the first command; a consumer or a
//!   tenant pool that never uses the shared tier never connects.
//! * **One per consumer, one per pool.** A pool builds one [`CommandLink`]
//!   and hands it to every tenant: it is a multiplexed connection, so a
//!   thousand tenants' commands share one socket (per Cluster node).
//! * **Replaced after a failure.** A command that fails with a connection
//!   error or does not answer within the timeout drops the connection (only
//!   the one it ran on); the next command opens a new one. A failed connect
//!   backs off (250 ms doubling to 10 s, jittered): meanwhile every command
//!   fails at once with [`Unavailable`], so a caller that can do without
//!   Redis (the shared tier) pays nothing while Redis is down.
//! * **Cluster.** Commands go to the node the target's `connect()` found
//!   first; a `MOVED` redirect teaches the slot's owner (the slot is computed
//!   from the key's hash tag, as Redis does), and later commands for that slot
//!   go straight to it over a connection of its own. `ASK` (a slot being
//!   migrated) is followed once with `ASKING`.
//!
//! Every connection is RESP2 and bounded by the link's timeout (connect and
//! each command).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, ErrorKind, ProtocolVersion, RedisError, Value};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::redis_target::RedisTarget;

/// Why a command did not run (or did not answer): Redis is unreachable,
/// backing off, too slow, or refused the command. The text holds no secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Unavailable(pub String);

/// A command that did not succeed.
enum Failure {
    /// Not sent, or no answer.
    Unavailable(Unavailable),
    /// Redis answered with an error.
    Refused(RedisError),
}

/// A connection and its number (to drop exactly the one that failed).
type Numbered = (u64, MultiplexedConnection);

/// See the module docs.
#[derive(Default)]
struct State {
    /// The connection `RedisTarget::connect` opened.
    main: Option<Numbered>,
    /// Cluster: connections to other nodes, by `host:port`.
    nodes: HashMap<String, Numbered>,
    /// Cluster: the owner (`host:port`) of a slot, learned from `MOVED`.
    owners: HashMap<u16, String>,
    /// The next connection's number.
    next: u64,
    /// No connection attempt before this (after a failed one).
    retry_at: Option<Instant>,
    /// The schedule of `retry_at`.
    backoff: Option<Backoff>,
    /// Connections opened so far (for tests and metrics).
    opened: u64,
}

/// See the module docs. Thread-safe; share it with an `Arc`.
pub struct CommandLink {
    /// Where Redis is.
    target: RedisTarget,
    /// Bound of a connect and of each command.
    timeout: Duration,
    /// Connections and what is known of the cluster.
    state: Mutex<State>,
    /// One connection attempt at a time (others wait for its outcome).
    connecting: tokio::sync::Mutex<()>,
}

/// The first delay after a failed connect.
const RETRY_MIN: Duration = Duration::from_millis(250);
/// The longest delay between connect attempts.
const RETRY_MAX: Duration = Duration::from_secs(10);

impl CommandLink {
    /// A link to `target` whose connects and commands each take at most
    /// `timeout`. Opens nothing.
    pub fn new(target: RedisTarget, timeout: Duration) -> CommandLink {
        CommandLink {
            target,
            timeout,
            state: Mutex::new(State::default()),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections opened so far (reconnects included).
    pub fn connections_opened(&self) -> u64 {
        self.state().opened
    }

    /// True while a connection to the target is open (it may still turn out
    /// dead at its next command).
    pub fn is_open(&self) -> bool {
        self.state().main.is_some()
    }

    /// True when a command now would not even try (no connection, and the
    /// backoff after a failed connect has not passed).
    pub fn is_backing_off(&self) -> bool {
        let s = self.state();
        s.main.is_none() && s.retry_at.is_some_and(|t| t > Instant::now())
    }

    /// Runs `cmd`, whose keys all carry the hash tag of `key` (one slot),
    /// on the node that owns it. See the module docs for failures.
    pub async fn query(&self, key: &str, cmd: &Cmd) -> Result<Value, Unavailable> {
        self.run(key, cmd).await.map_err(|f| match f {
            Failure::Unavailable(u) => u,
            Failure::Refused(e) => self.unavailable(&e),
        })
    }

    async fn run(&self, key: &str, cmd: &Cmd) -> Result<Value, Failure> {
        let slot = self.target.is_cluster().then(|| key_slot(key));
        let mut node = slot.and_then(|s| self.state().owners.get(&s).cloned());
        let mut asking = false;
        // The first answer, and at most two redirects after it.
        for _ in 0..3 {
            let (n, mut conn) = self
                .connection(node.as_deref())
                .await
                .map_err(Failure::Unavailable)?;
            let answer = if asking {
                let mut pipe = redis::pipe();
                pipe.cmd("ASKING").ignore().add_command(cmd.clone());
                tokio::time::timeout(self.timeout, pipe.query_async::<Vec<Value>>(&mut conn))
                    .await
                    .map(|r| r.map(|mut v| v.pop().unwrap_or(Value::Nil)))
            } else {
                tokio::time::timeout(self.timeout, cmd.query_async::<Value>(&mut conn)).await
            };
            let err = match answer {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => {
                    self.forget(node.as_deref(), n);
                    return Err(Failure::Unavailable(Unavailable(
                        "no answer from Redis in time".into(),
                    )));
                }
            };
            if let (Some(slot), Some((addr, _))) = (slot, err.redirect_node()) {
                let addr = addr.to_owned();
                asking = err.kind() == ErrorKind::Server(redis::ServerErrorKind::Ask);
                if !asking {
                    self.state().owners.insert(slot, addr.clone());
                }
                node = Some(addr);
                continue;
            }
            if must_replace(&err) {
                self.forget(node.as_deref(), n);
            }
            return Err(Failure::Refused(err));
        }
        Err(Failure::Unavailable(Unavailable(
            "too many cluster redirects".into(),
        )))
    }

    /// Runs the Lua script `source` (`EVAL`; Redis caches its compiled
    /// form by hash, and the `SHA1` needed for `EVALSHA` is not worth a
    /// dependency for a few hundred bytes per call). Its keys must share
    /// `keys[0]`'s slot.
    pub async fn eval(
        &self,
        source: &str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<Value, Unavailable> {
        let mut c = redis::cmd("EVAL");
        c.arg(source).arg(keys.len());
        for k in keys {
            c.arg(*k);
        }
        for a in args {
            c.arg(*a);
        }
        self.query(keys.first().copied().unwrap_or(""), &c).await
    }

    fn unavailable(&self, e: &RedisError) -> Unavailable {
        Unavailable(self.target.describe_error(e))
    }

    /// Drops connection `n` to `node` (the target's when `None`), if it is
    /// still the current one; slots learned to live on `node` are forgotten
    /// too (the next command for them asks the target's connection, which
    /// redirects to the current owner).
    fn forget(&self, node: Option<&str>, n: u64) {
        let mut s = self.state();
        if let Some(addr) = node {
            s.owners.retain(|_, owner| owner != addr);
        }
        match node {
            None => {
                if s.main.as_ref().is_some_and(|(m, _)| *m == n) {
                    s.main = None;
                }
            }
            Some(addr) => {
                if s.nodes.get(addr).is_some_and(|(m, _)| *m == n) {
                    s.nodes.remove(addr);
                }
            }
        }
    }

    /// The current connection to `node` (the target's when `None`),
    /// opening it first when there is none and no backoff is running.
    async fn connection(&self, node: Option<&str>) -> Result<Numbered, Unavailable> {
        let current = |s: &State| match node {
            None => s.main.clone(),
            Some(addr) => s.nodes.get(addr).cloned(),
        };
        let backing_off = |s: &State| s.retry_at.is_some_and(|t| t > Instant::now());
        {
            let s = self.state();
            if let Some(c) = current(&s) {
                return Ok(c);
            }
            if backing_off(&s) {
                return Err(Unavailable(
                    "Redis unavailable (waiting to reconnect)".into(),
                ));
            }
        }
        let _one = tokio::time::timeout(self.timeout, self.connecting.lock())
            .await
            .map_err(|_| Unavailable("Redis connect in progress".into()))?;
        {
            // Another command may have connected, or failed, meanwhile.
            let s = self.state();
            if let Some(c) = current(&s) {
                return Ok(c);
            }
            if backing_off(&s) {
                return Err(Unavailable(
                    "Redis unavailable (waiting to reconnect)".into(),
                ));
            }
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let attempt = tokio::time::timeout(self.timeout, async {
            match node {
                None => self
                    .target
                    .connect(config, ProtocolVersion::RESP2)
                    .await
                    .map(|(c, _)| c),
                Some(addr) => {
                    self.target
                        .connect_node(addr, config, ProtocolVersion::RESP2)
                        .await
                }
            }
        })
        .await;
        let mut s = self.state();
        match attempt {
            Ok(Ok(conn)) => {
                let n = s.next;
                s.next += 1;
                s.opened += 1;
                s.retry_at = None;
                s.backoff = None;
                match node {
                    None => s.main = Some((n, conn.clone())),
                    Some(addr) => {
                        s.nodes.insert(addr.to_owned(), (n, conn.clone()));
                    }
                }
                Ok((n, conn))
            }
            failed => {
                if let Some(addr) = node {
                    s.owners.retain(|_, owner| owner != addr);
                }
                let delay = s
                    .backoff
                    .get_or_insert_with(|| Backoff::new(RETRY_MIN, RETRY_MAX))
                    .next_delay();
                s.retry_at = Some(Instant::now() + delay);
                Err(Unavailable(match failed {
                    Ok(Err(e)) => format!(
                        "cannot connect to Redis: {}",
                        self.target.describe_error(&e)
                    ),
                    _ => "cannot connect to Redis: timed out".into(),
                }))
            }
        }
    }
}

/// True when `e` means the connection must be replaced: it is broken, or
/// it reaches a server that no longer takes writes (a master demoted by a
/// Sentinel or Cluster failover answers `READONLY`; `MASTERDOWN`,
/// `CLUSTERDOWN`), so the next connection asks the topology again.
fn must_replace(e: &RedisError) -> bool {
    use redis::ServerErrorKind::{ClusterDown, MasterDown, ReadOnly};
    e.kind() == ErrorKind::Io
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(ReadOnly | MasterDown | ClusterDown)
        )
}

/// The Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part
/// between the first `{` and the next `}`, when that is not empty), else of
/// the whole key, modulo 16384.
pub fn key_slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|open| {
        let rest = &b[open + 1..];
        rest.iter()
            .position(|&c| c == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(b)) % 16384
}

/// CRC16-CCITT (XMODEM), as Redis Cluster uses it.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag_as_redis_computes_them() {
        // The CRC16/XMODEM check value, and slots from the Redis Cluster spec.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot("123456789"), 12739);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("{user1000}.followers"), key_slot("user1000"));
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(key_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot("foo{{bar}}zap"), crc16(b"{bar") % 16384);
        assert_eq!(key_slot("foo{bar}{zap}"), key_slot("bar"));
        assert_eq!(
            key_slot("crm:{acme}:ref:user:u1"),
            key_slot("crm:{acme}:ref-epoch")
        );
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_and_backs_off() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = RedisTarget::url(&format!("redis://127.0.0.1:{port}")).unwrap();
        let link = CommandLink::new(target, Duration::from_millis(500));
        let started = std::time::Instant::now();
        let err = link.query("k", &redis::cmd("PING")).await.unwrap_err();
        assert!(err.0.contains("cannot connect"), "{err:?}");
        assert!(link.is_backing_off());
        // While it backs off, nothing is attempted at all.
        let err = link.query("k", &redis::cmd("PING")).await.unwrap_err();
        assert!(err.0.contains("waiting to reconnect"), "{err:?}");
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(link.connections_opened(), 0);
    }
}
