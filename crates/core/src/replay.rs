//! The replay window (SPEC §3): `eventId`s of applied events, and the load
//! fence that covers what the window cannot know after a restart.
//!
//! **How long an id is kept.** Until [`WINDOW_MS`] after the later of the
//! event's `timestamp` and its arrival. The parser accepts a signed event whose
//! timestamp is up to 5 minutes from the local clock either way, so an event
//! from a publisher whose clock runs ahead stays acceptable for up to 5 minutes
//! after its timestamp: keeping the id for 5 minutes after arrival alone would
//! let it be replayed once forgotten. A timestamp more than the window ahead of
//! the arrival is clamped to it (the parser rejects those when signed; an
//! unsigned one must not pin memory).
//!
//! **Memory.** Ids are kept as 64-bit hashes (foldhash, seeded at random per
//! process, so a publisher cannot aim for collisions) in sets ("chunks") keyed
//! by the minute in which they expire: ~16 bytes per id, so at 1,000 events/s
//! the window holds 300,000 ids in about 5 MB and memory stays flat under
//! steady traffic. A lookup checks every chunk (about a dozen). A chunk whose
//! ids have all expired is dropped on the next insert.
//!
//! **The cap.** At most [`MAX_IDS`] ids are kept. One chunk holds at most a
//! sixteenth of that, so when a storm far above normal rates reaches the cap,
//! the chunk that would expire first goes early, a sixteenth at a time: the
//! newest ids always survive, never is the whole window wiped. Ids dropped
//! early could be replayed: that is the documented trade-off of the bound.
//!
//! **The load fence.** A restarted consumer starts with an empty window, so a
//! signed event of the last 5 minutes could be replayed into it (and, for an
//! unversioned entity, undo a later change the load brought in). The subscriber
//! records the start of each full load with [`ReplayWindow::set_fence`] when
//! the load begins (events that arrive during a load are re-applied on top of
//! its snapshot, so they must already be checked against it);
//! [`ReplayWindow::not_before_ms`] gives the bound that
//! `protocol::parse_event_since` enforces on signed events. A load
//! that fails leaves the fence at its start: the next one, started later,
//! covers what it refused.
//!
//! Thread-safe: one short lock per `seen`/`remember` call; the fence is an
//! atomic.

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How long an applied `eventId` is remembered, at least, after the later of
/// its timestamp and its arrival, in milliseconds.
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
/// The same, as a `Duration`.
pub const WINDOW: Duration = Duration::from_millis(WINDOW_MS as u64);
/// Width of the expiry buckets.
const BUCKET_MS: i64 = 60 * 1000;
/// Most ids remembered at once.
pub const MAX_IDS: usize = 2_000_000;
/// A chunk holds at most `cap / CHUNKS` ids: what the cap drops at a time.
const CHUNKS: usize = 16;
/// `fence_ms` before the first successful load.
const NO_FENCE: i64 = i64::MIN;

type IdSet = HashSet<u64, std::hash::BuildHasherDefault<IdentityHasher>>;

/// The ids are already hashes: hash them as themselves.
#[derive(Default)]
struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

struct Chunks {
    /// (expiry minute, chunk number within it) → ids; the first entry is the
    /// one that expires first, so pruning and the cap pop from the front.
    sets: BTreeMap<(i64, u32), IdSet>,
    /// Ids in all sets.
    total: usize,
}

/// See the module docs. Thread-safe (one short lock per call).
pub struct ReplayWindow {
    /// Seeded hasher for the ids.
    hasher: foldhash::quality::RandomState,
    /// Most ids kept ([`MAX_IDS`]; smaller in tests).
    cap: usize,
    /// Most ids in one chunk: `cap / CHUNKS`, at least 1.
    chunk_cap: usize,
    /// The remembered ids.
    chunks: Mutex<Chunks>,
    /// Epoch ms at which the latest full load started, or [`NO_FENCE`]; only
    /// ever moves forward.
    fence_ms: AtomicI64,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow::with_cap(MAX_IDS)
    }
}

/// The wall clock in epoch ms: the clock the subscriber gives the parser, so
/// the window and the timestamp check agree.
fn wall_ms() -> i64 {
    crate::metrics::now_ms()
}

impl ReplayWindow {
    /// A window that keeps at most `cap` ids.
    fn with_cap(cap: usize) -> Self {
        ReplayWindow {
            hasher: foldhash::quality::RandomState::default(),
            cap,
            chunk_cap: (cap / CHUNKS).max(1),
            chunks: Mutex::new(Chunks {
                sets: BTreeMap::new(),
                total: 0,
            }),
            fence_ms: AtomicI64::new(NO_FENCE),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Chunks> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when `id` was applied within the window.
    pub fn seen(&self, id: &str) -> bool {
        let h = self.hasher.hash_one(id);
        self.lock().sets.values().any(|s| s.contains(&h))
    }

    /// Remembers an applied `id` that carried no timestamp (kept for the window
    /// after now). Prefer [`ReplayWindow::remember_event`].
    pub fn remember(&self, id: &str) {
        self.remember_at(id, None, wall_ms());
    }

    /// Remembers an applied `id` with its event's `timestamp` (epoch ms, as
    /// `protocol::Parsed::timestamp_ms` gives it): kept until the window
    /// after the later of the timestamp and now.
    pub fn remember_event(&self, id: &str, timestamp_ms: Option<i64>) {
        self.remember_at(id, timestamp_ms, wall_ms());
    }

    fn remember_at(&self, id: &str, timestamp_ms: Option<i64>, now_ms: i64) {
        let h = self.hasher.hash_one(id);
        // Kept until `base + WINDOW_MS`; a timestamp in the past changes nothing,
        // one far ahead is clamped so it cannot pin memory.
        let base = timestamp_ms.map_or(now_ms, |ts| {
            ts.clamp(now_ms, now_ms.saturating_add(WINDOW_MS))
        });
        let minute = base.div_euclid(BUCKET_MS);
        let mut c = self.lock();
        // Drop chunks whose ids have all expired: every id of minute `m` has
        // `base < (m + 1) * BUCKET_MS`.
        while let Some(entry) = c.sets.first_entry() {
            let (m, _) = *entry.key();
            if (m + 1) * BUCKET_MS + WINDOW_MS <= now_ms {
                let n = entry.remove().len();
                c.total -= n;
            } else {
                break;
            }
        }
        // At the cap, the chunk that expires first goes early (a fraction of
        // the cap: never the whole window).
        while c.total >= self.cap {
            let Some((_, set)) = c.sets.pop_first() else {
                break;
            };
            c.total -= set.len();
        }
        let last = c
            .sets
            .range((minute, 0)..=(minute, u32::MAX))
            .next_back()
            .map(|(&(_, n), set)| (n, set.len()));
        let key = match last {
            Some((n, len)) if len < self.chunk_cap => (minute, n),
            Some((n, _)) => (minute, n.saturating_add(1)),
            None => (minute, 0),
        };
        if c.sets.entry(key).or_default().insert(h) {
            c.total += 1;
        }
    }

    /// Records that a full load started at `load_started_ms` (epoch ms): call
    /// it when the load begins. Only moves forward: an older value never
    /// replaces a newer one.
    pub fn set_fence(&self, load_started_ms: i64) {
        self.fence_ms.fetch_max(load_started_ms, Ordering::AcqRel);
    }

    /// The bound for `protocol::parse_event_since`: the start of the
    /// latest full load minus `max_clock_skew`, or `None` before the first one.
    pub fn not_before_ms(&self, max_clock_skew: Duration) -> Option<i64> {
        let fence = self.fence_ms.load(Ordering::Acquire);
        let skew = i64::try_from(max_clock_skew.as_millis()).unwrap_or(i64::MAX);
        (fence != NO_FENCE).then(|| fence.saturating_sub(skew))
    }

    /// Ids currently remembered.
    pub fn len(&self) -> usize {
        self.lock().total
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000;
    const MIN: i64 = 60_000;

    #[test]
    fn remembers_for_the_window_then_forgets() {
        let w = ReplayWindow::default();
        w.remember_at("a", None, T0);
        assert!(w.seen("a"));
        assert!(!w.seen("b"));
        // Still remembered up to WINDOW later, across bucket boundaries.
        for m in 1..=5 {
            w.remember_at(&format!("x{m}"), None, T0 + MIN * m);
        }
        w.remember_at("y", None, T0 + WINDOW_MS);
        assert!(w.seen("a"), "remembered for at least five minutes");
        // Long after, a new id pushes the old chunks out.
        w.remember_at("late", None, T0 + WINDOW_MS + 3 * MIN);
        assert!(!w.seen("a"));
        assert!(w.seen("late"));
        assert!(!w.seen("x1"));
        assert!(w.len() < 7, "old chunks were dropped");
    }

    // A publisher clock 4 minutes ahead: the parser accepts the event's
    // timestamp until 9 minutes after it arrived, so its id is kept that long.
    #[test]
    fn a_clock_ahead_event_cannot_be_replayed_while_its_timestamp_is_accepted() {
        let w = ReplayWindow::default();
        let ts = T0 + 4 * MIN;
        w.remember_at("ahead", Some(ts), T0);
        // Traffic goes on, which prunes; just before ts + WINDOW it is still there.
        for m in 1..=8 {
            w.remember_at(&format!("x{m}"), None, T0 + MIN * m);
        }
        w.remember_at("edge", None, ts + WINDOW_MS);
        assert!(w.seen("ahead"), "kept until its timestamp plus the window");
        // Once the timestamp is out of the ±5 min window, the id may go.
        w.remember_at("after", None, ts + WINDOW_MS + 2 * MIN);
        assert!(!w.seen("ahead"));
    }

    #[test]
    fn a_past_or_far_future_timestamp_keeps_the_window_after_arrival() {
        let w = ReplayWindow::default();
        // Behind: kept for the window after arrival, not after the timestamp.
        w.remember_at("behind", Some(T0 - 4 * MIN), T0);
        w.remember_at("probe", None, T0 + WINDOW_MS);
        assert!(w.seen("behind"));
        // A year ahead (unsigned: nothing checked it) is clamped to now + WINDOW.
        w.remember_at("far", Some(T0 + 365 * 24 * 60 * MIN), T0);
        w.remember_at("probe2", None, T0 + 2 * WINDOW_MS);
        assert!(w.seen("far"));
        w.remember_at("probe3", None, T0 + 2 * WINDOW_MS + 2 * MIN);
        assert!(!w.seen("far"), "a far-future timestamp does not pin memory");
        assert!(!w.seen("behind"));
    }

    // A storm inside one minute reaches the cap: the oldest chunk goes, a
    // sixteenth of the cap at a time; the newest ids survive.
    #[test]
    fn the_cap_drops_the_oldest_chunk_never_the_window() {
        let cap = 1600;
        let w = ReplayWindow::with_cap(cap);
        for i in 0..cap {
            w.remember_at(&format!("id{i}"), None, T0);
        }
        assert_eq!(w.len(), cap);
        w.remember_at("one-more", None, T0);
        assert_eq!(w.len(), cap - cap / CHUNKS + 1);
        assert!(!w.seen("id0"), "the oldest went first");
        assert!(w.seen(&format!("id{}", cap / CHUNKS)));
        assert!(w.seen(&format!("id{}", cap - 1)), "the newest survive");
        assert!(w.seen("one-more"));
        // Over many minutes: the cap drops the oldest minute first.
        let w = ReplayWindow::with_cap(cap);
        for i in 0..2 * cap {
            let now = T0 + (i as i64) * (4 * MIN) / (2 * cap as i64);
            w.remember_at(&format!("s{i}"), None, now);
        }
        assert!(w.len() <= cap);
        assert!(w.len() > cap - cap / CHUNKS - 1);
        assert!(!w.seen("s0"));
        for i in (2 * cap - cap / 2)..2 * cap {
            assert!(w.seen(&format!("s{i}")), "s{i}: the newest half survives");
        }
    }

    #[test]
    fn the_default_cap_is_two_million_in_chunks_of_a_sixteenth() {
        let w = ReplayWindow::default();
        assert_eq!(w.cap, MAX_IDS);
        assert_eq!(w.chunk_cap, MAX_IDS / 16);
    }

    #[test]
    fn the_fence_moves_forward_only_and_subtracts_the_skew() {
        let w = ReplayWindow::default();
        let skew = Duration::from_secs(30);
        assert_eq!(w.not_before_ms(skew), None, "no load yet: no fence");
        w.set_fence(T0);
        assert_eq!(w.not_before_ms(skew), Some(T0 - 30_000));
        w.set_fence(T0 - MIN);
        assert_eq!(w.not_before_ms(skew), Some(T0 - 30_000), "never backwards");
        w.set_fence(T0 + MIN);
        assert_eq!(w.not_before_ms(Duration::ZERO), Some(T0 + MIN));
    }
}
