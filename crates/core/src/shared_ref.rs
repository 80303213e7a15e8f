//! The shared reference tier (SPEC §7 `sharedReference`): a second tier of
//! the reference cache in Redis, shared by every instance of a fleet.
//!
//! The layout (also in `PROTOCOL.md`, "Shared reference tier"); every key
//! carries the tenant's hash tag, so one tenant's keys share one Cluster slot:
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `{prefix}:{{tenant}}:ref:{cacheKey}` | hash | `v`: the Wrapper's JSON object as text, or `null` for a remembered 404; `e`: the tenant epoch it was written under; `s`: with a signing secret, its HMAC. Expires with the entry's TTL (`PX`) |
//! | `{prefix}:{{tenant}}:ref-fence:{cacheKey}` | string | the key's fence token (random; created by a reader that misses) |
//! | `{prefix}:{{tenant}}:ref-lease:{cacheKey}` | string | the fetch lease (`SET NX PX`): who is asking the Wrapper now |
//! | `{prefix}:{{tenant}}:ref-epoch` | string | the tenant's reference epoch (random) |
//!
//! * **A miss** runs one script ([`READ`]): an entry written under the
//!   current epoch is a hit, taken with its remaining `PTTL`; otherwise the
//!   reader gets the key's fence token and the epoch (creating either when
//!   missing) and tries to take the lease, all in the same atomic step.
//! * **One Wrapper request per key across the fleet.** The lease holder
//!   fetches and writes; the others poll (5 ms doubling to 50 ms) until the
//!   value is there, or the lease is free and one of them takes it (its
//!   holder failed and released it, or was fenced off, or died). A lease
//!   lives `requestTimeoutMs`, one Wrapper request's bound, so a dead holder
//!   blocks the others no longer than that. A waiter waits for one holder up
//!   to `requestTimeoutMs` + 250 ms, and for a new holder that took over up to
//!   twice that in all; then it asks the Wrapper itself (still fenced).
//! * **The fence.** A write ([`WRITE`]) stores the value only if the key's
//!   fence token and the tenant epoch are still the ones read before the
//!   fetch began, atomically. An invalidation deletes the entry, its fence
//!   and its lease ([`SharedTier::invalidate`]); a reload that drops
//!   reference data deletes the epoch ([`SharedTier::clear`]). A deleted
//!   token is recreated at random by the next reader, so it never equals a
//!   token read before the deletion: a fetch that began before an
//!   invalidation can never write after it. (A counter would come back to a
//!   value read earlier if its key expired or was evicted between the read
//!   and the write; random tokens cannot, and a missing token matches
//!   nothing.)
//! * **The fetcher learns it too.** A write refused by the fence tells the
//!   fetching instance that its answer is outdated (the invalidation may not
//!   have reached its own subscription yet): it answers the callers already
//!   waiting, as SPEC §2 allows, and keeps nothing ([`Written::Fenced`]).
//! * **Ordering with this instance's own invalidations.** Invalidations are
//!   queued (the call sites are synchronous, under locks) and sent in order
//!   by one task ([`SharedTier::run`]). A miss first waits until every
//!   invalidation issued before it has reached Redis (or skips the tier), so
//!   it can never read back an entry this instance was told is outdated.
//! * **Redis unavailable**: the tier is skipped (local cache and Wrapper, as
//!   without it); a read never fails because of it.
//!
//! Stale-if-error stays local: an entry expires from Redis at its TTL.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::commands::CommandLink;
use crate::config::Config;
use crate::secret::Secret;
use crate::signature::{sign_bytes, verify_bytes_any, SigningKeys};

/// A miss. KEYS: entry, fence, lease, epoch. ARGV: fence candidate, epoch
/// candidate, lease token, lease ms, fence and epoch ms. Returns
/// `{1, v, pttl, s, e}` for a hit; for a miss `{0, fence, epoch}` when the
/// lease was taken, else `{0, fence, epoch, holder}` (the holder's token).
pub const READ: &str = r#"
local e = redis.call('GET', KEYS[4])
if not e then
  e = ARGV[2]
  redis.call('SET', KEYS[4], e, 'PX', ARGV[5])
end
local h = redis.call('HMGET', KEYS[1], 'v', 'e', 's')
if h[1] then
  if h[2] == e then
    return {1, h[1], redis.call('PTTL', KEYS[1]), h[3], e}
  end
  redis.call('DEL', KEYS[1])
end
local f = redis.call('GET', KEYS[2])
if not f then
  f = ARGV[1]
  redis.call('SET', KEYS[2], f, 'PX', ARGV[5])
end
if redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return {0, f, e}
end
return {0, f, e, redis.call('GET', KEYS[3])}
"#;

/// The fenced write. KEYS: entry, fence, lease, epoch. ARGV: fence token
/// read, epoch read, lease token (`''`: none held), value, TTL ms, signature
/// (`''`: none). Writes only if the fence and the epoch are unchanged (and
/// then deletes the fence: the entry needs none until it is missed again, and
/// another write with the same token is a duplicate); releases the lease if
/// it is still ours. Returns 1 when written.
pub const WRITE: &str = r#"
local ok = redis.call('GET', KEYS[2]) == ARGV[1] and redis.call('GET', KEYS[4]) == ARGV[2]
if ok then
  redis.call('DEL', KEYS[1])
  if ARGV[6] ~= '' then
    redis.call('HSET', KEYS[1], 'v', ARGV[4], 'e', ARGV[2], 's', ARGV[6])
  else
    redis.call('HSET', KEYS[1], 'v', ARGV[4], 'e', ARGV[2])
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('DEL', KEYS[2])
  local p = redis.call('PTTL', KEYS[4])
  if p >= 0 and p < tonumber(ARGV[5]) then
    redis.call('PEXPIRE', KEYS[4], ARGV[5])
  end
end
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) == ARGV[3] then
  redis.call('DEL', KEYS[3])
end
if ok then return 1 end
return 0
"#;

/// The stored form of a remembered 404.
pub const NOT_FOUND_VALUE: &str = "null";

/// Queued invalidations beyond which the queue becomes one tenant-wide clear.
const MAX_QUEUED: usize = 10_000;
/// Keys per `DEL` (three per cache key).
const DEL_CHUNK: usize = 300;
/// How much longer a miss waits than a lease lives (Redis's clock and ours).
const WAIT_MARGIN: Duration = Duration::from_millis(250);
/// Poll schedule of a miss waiting for another instance's fetch.
const POLL_FIRST: Duration = Duration::from_millis(5);
/// The longest pause between polls.
const POLL_MAX: Duration = Duration::from_millis(50);

/// A shared key layout (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `{prefix}:{{tenant}}:`.
    base: String,
}

impl Layout {
    /// The keys of `tenant` under `prefix` (the channel prefix).
    pub fn new(prefix: &str, tenant: &str) -> Layout {
        Layout {
            base: format!("{prefix}:{{{tenant}}}:"),
        }
    }

    /// The entry of cache key `key` (`user:u1`, ...).
    pub fn entry(&self, key: &str) -> String {
        format!("{}ref:{key}", self.base)
    }

    /// Its fence token.
    pub fn fence(&self, key: &str) -> String {
        format!("{}ref-fence:{key}", self.base)
    }

    /// Its fetch lease.
    pub fn lease(&self, key: &str) -> String {
        format!("{}ref-lease:{key}", self.base)
    }

    /// The tenant's reference epoch.
    pub fn epoch(&self) -> String {
        format!("{}ref-epoch", self.base)
    }
}

/// The bytes an entry's signature covers: tenant, cache key, epoch and value,
/// separated by newlines (none of them can hold one but the value, which
/// comes last).
fn signed_parts<'a>(tenant: &'a str, key: &'a str, epoch: &'a str, v: &'a str) -> [&'a [u8]; 8] {
    [
        b"ref\n",
        tenant.as_bytes(),
        b"\n",
        key.as_bytes(),
        b"\n",
        epoch.as_bytes(),
        b"\n",
        v.as_bytes(),
    ]
}

/// The signature (`s`) of an entry: hex HMAC-SHA256 with `secret` over
/// [`signed_parts`] (PROTOCOL.md).
pub fn entry_signature(tenant: &str, key: &str, epoch: &str, v: &str, secret: &Secret) -> String {
    sign_bytes(&signed_parts(tenant, key, epoch, v), secret)
}

/// What a miss found in the shared tier.
#[derive(Debug)]
pub enum Begin {
    /// An entry: the body (`None`: a remembered 404) and the time it has
    /// left in Redis (`None`: it has no expiry, so the local TTL applies).
    Hit {
        /// JSON text, or `None` for a 404.
        body: Option<Arc<str>>,
        /// `PTTL`.
        remaining: Option<Duration>,
    },
    /// Not there: ask the Wrapper, then [`SharedTier::finish`].
    Fetch(Ticket),
    /// Not usable now (Redis unavailable, or an invalidation of this
    /// instance has not reached it yet): local cache and Wrapper only.
    Skip,
}

/// What a fetch needs to write its answer: the fence and epoch read before
/// it began, and the lease when it holds it.
#[derive(Debug)]
pub struct Ticket {
    /// The cache key.
    key: String,
    /// The key's fence token as read.
    fence: String,
    /// The tenant epoch as read.
    epoch: String,
    /// Our lease token, when we hold the lease.
    lease: Option<String>,
}

impl Ticket {
    /// True when this fetch holds the fleet's lease for the key.
    pub fn holds_lease(&self) -> bool {
        self.lease.is_some()
    }

    /// The cache key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

/// What became of a fetched answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// It is in Redis for the fleet.
    Yes,
    /// Refused by the fence: the key was invalidated (or the tenant's
    /// reference data dropped) since the fetch began, so the answer is
    /// outdated and this instance must not keep it either.
    Fenced,
    /// Nothing written (nothing to write, or Redis unavailable).
    No,
}

/// Invalidations waiting to be sent.
#[derive(Debug, Default)]
struct Queue {
    /// Cache keys to delete.
    keys: HashSet<String>,
    /// Delete the epoch (every entry of the tenant).
    clear: bool,
    /// The sequence number of the latest invalidation queued.
    upto: u64,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.clear
    }

    fn merge(&mut self, other: Queue) {
        self.clear |= other.clear;
        self.keys.extend(other.keys);
        self.upto = self.upto.max(other.upto);
        self.bound();
    }

    fn bound(&mut self) {
        if self.keys.len() > MAX_QUEUED {
            // One clear covers every key.
            self.keys.clear();
            self.clear = true;
        }
    }
}

struct Inner {
    /// The command connection (the pool's, shared by its tenants).
    link: Arc<CommandLink>,
    /// The tenant's keys.
    layout: Layout,
    /// The tenant id (signed with each entry).
    tenant: String,
    /// With a signing secret: entries are signed and checked.
    signing: Option<SigningKeys>,
    /// Lifetime of a fetch lease: every attempt of one fetch, and a margin.
    lease_ttl: Duration,
    /// Lifetime of a fence token or epoch created by a reader.
    token_ttl: Duration,
    /// The longest a miss waits for another instance's fetch.
    wait: Duration,
    /// Largest value taken from Redis (`maxResponseBytes`).
    max_bytes: u64,
    /// Invalidations not yet sent.
    queue: Mutex<Queue>,
    /// Sequence number of the latest invalidation issued.
    issued: AtomicU64,
    /// Sequence number up to which every invalidation has reached Redis,
    /// and whether the latest attempt to send more failed.
    applied: watch::Sender<(u64, bool)>,
    /// Wakes the sending task.
    wake: Notify,
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct SharedTier {
    inner: Arc<Inner>,
}

/// `{0, ...}` / `{1, ...}` of [`READ`].
enum Read {
    Hit {
        v: String,
        pttl: i64,
        sig: Option<String>,
        epoch: String,
    },
    Miss {
        fence: String,
        epoch: String,
        /// Who holds the lease; `None`: we took it.
        holder: Option<String>,
    },
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn parse_read(v: &Value) -> Option<Read> {
    let Value::Array(items) = v else { return None };
    match items.first().and_then(int)? {
        1 => Some(Read::Hit {
            v: text(items.get(1)?)?,
            pttl: int(items.get(2)?)?,
            sig: items.get(3).and_then(text),
            epoch: text(items.get(4)?)?,
        }),
        _ => Some(Read::Miss {
            fence: text(items.get(1)?)?,
            epoch: text(items.get(2)?)?,
            // A lease that expired between SET NX and GET: nobody's.
            holder: items.get(3).map(|h| text(h).unwrap_or_default()),
        }),
    }
}

/// True when `v` may be served: a JSON object (as the Wrapper client
/// demands of a reference object) or the 404 marker.
pub fn valid_value(v: &str, max_bytes: u64) -> bool {
    v == NOT_FOUND_VALUE
        || (v.len() as u64 <= max_bytes
            && v.trim_start().starts_with('{')
            && serde_json::from_str::<serde::de::IgnoredAny>(v).is_ok())
}

fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn ms(d: Duration) -> Vec<u8> {
    d.as_millis().max(1).to_string().into_bytes()
}

impl SharedTier {
    /// The tier of the tenant `config` names, over `link`.
    pub fn new(config: &Config, link: Arc<CommandLink>) -> SharedTier {
        // One Wrapper request's bound: a holder that dies stops blocking the
        // fleet then (one that retries may lose it; another instance then
        // fetches too).
        let lease_ttl = config.request_timeout;
        let (applied, _) = watch::channel((0, false));
        SharedTier {
            inner: Arc::new(Inner {
                link,
                layout: Layout::new(&config.channel_prefix, &config.tenant_id),
                tenant: config.tenant_id.clone(),
                signing: config.signing_secret.clone(),
                lease_ttl,
                token_ttl: (lease_ttl * 4).max(Duration::from_secs(60)),
                wait: config.request_timeout + WAIT_MARGIN,
                max_bytes: config.max_response_bytes,
                queue: Mutex::new(Queue::default()),
                issued: AtomicU64::new(0),
                applied,
                wake: Notify::new(),
            }),
        }
    }

    /// The key layout.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The command connection.
    pub fn link(&self) -> &Arc<CommandLink> {
        &self.inner.link
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues the deletion of `key`'s entry, fence and lease (sent by
    /// [`SharedTier::run`]). Synchronous and cheap: callable under locks.
    pub fn invalidate(&self, key: &str) {
        let mut q = self.queue();
        q.keys.insert(key.to_owned());
        q.upto = self.inner.issued.fetch_add(1, SeqCst) + 1;
        q.bound();
        drop(q);
        self.inner.wake.notify_one();
    }

    /// Queues the deletion of the tenant's epoch: every entry written before
    /// it stops counting, and no fetch that began before it can write.
    pub fn clear(&self) {
        let mut q = self.queue();
        q.keys.clear();
        q.clear = true;
        q.upto = self.inner.issued.fetch_add(1, SeqCst) + 1;
        drop(q);
        self.inner.wake.notify_one();
    }

    /// Sends queued invalidations in order until `cancel`; a failed send is
    /// retried (with backoff) before anything queued after it. One last
    /// attempt is made on cancellation when Redis is up.
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let pending = {
                let notified = self.inner.wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.queue().is_empty() {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = notified => {}
                    }
                }
                std::mem::take(&mut *self.queue())
            };
            if pending.is_empty() {
                continue;
            }
            let sent = tokio::select! {
                _ = cancel.cancelled() => {
                    if !self.inner.link.is_backing_off() {
                        let _ = self.send(&pending).await;
                    }
                    return;
                }
                ok = self.send(&pending) => ok,
            };
            if sent {
                backoff.reset();
                self.inner.applied.send_modify(|(a, stalled)| {
                    *a = (*a).max(pending.upto);
                    *stalled = false;
                });
            } else {
                // Misses waiting for this skip the tier instead of waiting on.
                self.inner
                    .applied
                    .send_modify(|(_, stalled)| *stalled = true);
                self.queue().merge(pending);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }

    /// One `DEL` per chunk of keys; true when every one was answered.
    async fn send(&self, q: &Queue) -> bool {
        let layout = &self.inner.layout;
        let mut keys: Vec<String> = Vec::with_capacity(q.keys.len() * 3 + 1);
        if q.clear {
            keys.push(layout.epoch());
        }
        for k in &q.keys {
            keys.push(layout.entry(k));
            keys.push(layout.fence(k));
            keys.push(layout.lease(k));
        }
        for chunk in keys.chunks(DEL_CHUNK) {
            let mut cmd = redis::cmd("DEL");
            for k in chunk {
                cmd.arg(k);
            }
            if self.inner.link.query(&chunk[0], &cmd).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Waits until every invalidation issued so far has reached Redis; false
    /// when that did not happen within the wait bound, or sending failed
    /// (Redis is down: the tier is skipped rather than waited for).
    async fn caught_up(&self) -> bool {
        let need = self.inner.issued.load(SeqCst);
        let mut applied = self.inner.applied.subscribe();
        let (sent, stalled) = *applied.borrow_and_update();
        if sent >= need {
            return true;
        }
        // The sender is failing (and backing off), or Redis is: not now.
        if stalled || self.inner.link.is_backing_off() {
            return false;
        }
        let waited = tokio::time::timeout(self.inner.wait, async {
            loop {
                if applied.changed().await.is_err() {
                    return false;
                }
                let (a, stalled) = *applied.borrow_and_update();
                if a >= need {
                    return true;
                }
                if stalled {
                    return false;
                }
            }
        });
        waited.await.unwrap_or(false)
    }

    async fn read(&self, key: &str, lease: &str) -> Option<Read> {
        let i = &self.inner;
        let (entry, fence, lease_key, epoch) = (
            i.layout.entry(key),
            i.layout.fence(key),
            i.layout.lease(key),
            i.layout.epoch(),
        );
        let (new_fence, new_epoch) = (token(), token());
        let answer = i
            .link
            .eval(
                READ,
                &[&entry, &fence, &lease_key, &epoch],
                &[
                    new_fence.as_bytes(),
                    new_epoch.as_bytes(),
                    lease.as_bytes(),
                    &ms(i.lease_ttl),
                    &ms(i.token_ttl),
                ],
            )
            .await
            .ok()?;
        parse_read(&answer)
    }

    /// A miss of `key` in the local cache: the shared entry, or a ticket to
    /// fetch it (holding the fleet's lease when no one else is fetching it;
    /// see the module docs), or [`Begin::Skip`].
    pub async fn begin(&self, key: &str) -> Begin {
        if !self.caught_up().await {
            return Begin::Skip;
        }
        let i = &self.inner;
        let started = Instant::now();
        // Past the lifetime of any lease seen now: a dead holder's lease has
        // expired by then, and the last poll takes it over.
        let mut deadline = started + i.wait;
        let mut holder: Option<String> = None;
        let mut pause = POLL_FIRST;
        let lease = token();
        loop {
            let (fence, epoch, now_held_by) = match self.read(key, &lease).await {
                None => return Begin::Skip,
                Some(Read::Hit {
                    v,
                    pttl,
                    sig,
                    epoch,
                }) => return self.hit(key, v, pttl, sig, &epoch),
                Some(Read::Miss {
                    fence,
                    epoch,
                    holder: None,
                }) => {
                    return Begin::Fetch(Ticket {
                        key: key.to_owned(),
                        fence,
                        epoch,
                        lease: Some(lease),
                    })
                }
                Some(Read::Miss {
                    fence,
                    epoch,
                    holder: Some(h),
                }) => (fence, epoch, h),
            };
            let now = Instant::now();
            if holder.as_deref() != Some(&now_held_by) {
                // A new holder (the one before failed, or died and its lease
                // expired): wait for it too, within twice the bound in all.
                if holder.is_some() {
                    deadline = (now + i.wait).min(started + i.wait * 2);
                }
                holder = Some(now_held_by);
            }
            if now >= deadline {
                // Waited long enough: ask the Wrapper without the lease
                // (the write is still fenced).
                return Begin::Fetch(Ticket {
                    key: key.to_owned(),
                    fence,
                    epoch,
                    lease: None,
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }

    /// Checks an entry read from Redis; an invalid one is deleted and skipped.
    fn hit(&self, key: &str, v: String, pttl: i64, sig: Option<String>, epoch: &str) -> Begin {
        let i = &self.inner;
        let signed = match &i.signing {
            None => true,
            Some(keys) => sig.is_some_and(|s| {
                verify_bytes_any(&signed_parts(&i.tenant, key, epoch, &v), keys, &s)
            }),
        };
        if !signed || !valid_value(&v, i.max_bytes) {
            self.invalidate(key);
            return Begin::Skip;
        }
        let remaining = u64::try_from(pttl).ok().map(Duration::from_millis);
        if remaining == Some(Duration::ZERO) {
            return Begin::Skip;
        }
        let body = (v != NOT_FOUND_VALUE).then(|| Arc::<str>::from(v));
        Begin::Hit { body, remaining }
    }

    /// After the fetch of `ticket`: writes `value` (the JSON text, or
    /// [`NOT_FOUND_VALUE`]) for `ttl` if the fence allows, and releases the
    /// lease. `None` (an error, an invalidated fetch, a zero TTL): releases
    /// the lease only.
    pub async fn finish(&self, ticket: Ticket, value: Option<&str>, ttl: Duration) -> Written {
        let i = &self.inner;
        let value = value.filter(|_| !ttl.is_zero());
        if value.is_none() && ticket.lease.is_none() {
            return Written::No;
        }
        let k = &ticket.key;
        let (entry, fence, lease_key, epoch) = (
            i.layout.entry(k),
            i.layout.fence(k),
            i.layout.lease(k),
            i.layout.epoch(),
        );
        // Without a value the fence is given a token that cannot match, so
        // the script only releases the lease.
        let (fence_arg, v) = match value {
            Some(v) => (ticket.fence.as_str(), v),
            None => ("", ""),
        };
        let sig = match (&i.signing, value) {
            (Some(keys), Some(v)) => {
                entry_signature(&i.tenant, k, &ticket.epoch, v, keys.primary())
            }
            _ => String::new(),
        };
        let lease = ticket.lease.as_deref().unwrap_or("");
        let answer = i
            .link
            .eval(
                WRITE,
                &[&entry, &fence, &lease_key, &epoch],
                &[
                    fence_arg.as_bytes(),
                    ticket.epoch.as_bytes(),
                    lease.as_bytes(),
                    v.as_bytes(),
                    &ms(ttl),
                    sig.as_bytes(),
                ],
            )
            .await;
        match answer {
            Ok(Value::Int(1)) => Written::Yes,
            Ok(_) if value.is_some() => Written::Fenced,
            _ => Written::No,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_tenant_one_slot() {
        let l = Layout::new("crm", "acme");
        assert_eq!(l.entry("user:u1"), "crm:{acme}:ref:user:u1");
        assert_eq!(l.fence("user:u1"), "crm:{acme}:ref-fence:user:u1");
        assert_eq!(l.lease("user:u1"), "crm:{acme}:ref-lease:user:u1");
        assert_eq!(l.epoch(), "crm:{acme}:ref-epoch");
        let slot = crate::commands::key_slot(&l.epoch());
        for k in [
            l.entry("user:{x}"),
            l.fence("hierarchy:a{b}c"),
            l.lease("historical:k"),
        ] {
            assert_eq!(crate::commands::key_slot(&k), slot, "{k}");
        }
        // A prefix with colons keeps the tag.
        assert_eq!(
            Layout::new("app:crm", "t-1").entry("audit:l"),
            "app:crm:{t-1}:ref:audit:l"
        );
    }

    #[test]
    fn values_from_redis_are_checked() {
        assert!(valid_value("null", 10));
        assert!(valid_value(r#"{"name":"Ann"}"#, 100));
        assert!(valid_value(" {}", 100));
        for bad in ["[1]", "\"x\"", "{", "nul", "", "{} {}", "1"] {
            assert!(!valid_value(bad, 100), "{bad:?}");
        }
        assert!(
            !valid_value(r#"{"name":"Ann"}"#, 5),
            "over maxResponseBytes"
        );
    }

    #[test]
    fn the_queue_is_bounded_by_a_clear() {
        let mut q = Queue::default();
        for i in 0..=MAX_QUEUED {
            q.keys.insert(format!("user:{i}"));
        }
        q.bound();
        assert!(q.clear && q.keys.is_empty());
        let mut a = Queue {
            upto: 3,
            ..Queue::default()
        };
        a.keys.insert("user:a".into());
        a.merge(Queue {
            upto: 7,
            keys: ["user:b".to_string()].into(),
            clear: false,
        });
        assert_eq!(a.upto, 7);
        assert_eq!(a.keys.len(), 2);
    }

    #[test]
    fn signatures_cover_tenant_key_epoch_and_value() {
        let keys = SigningKeys::single(crate::secret::Secret::new("s3")).unwrap();
        let sig = sign_bytes(&signed_parts("t", "user:u1", "e1", "{}"), keys.primary());
        assert!(verify_bytes_any(
            &signed_parts("t", "user:u1", "e1", "{}"),
            &keys,
            &sig
        ));
        for (t, k, e, v) in [
            ("u", "user:u1", "e1", "{}"),
            ("t", "user:u2", "e1", "{}"),
            ("t", "user:u1", "e2", "{}"),
            ("t", "user:u1", "e1", "{ }"),
        ] {
            assert!(!verify_bytes_any(&signed_parts(t, k, e, v), &keys, &sig));
        }
    }
}
