//! The replay window: `eventId`s of applied events, remembered for at least
//! five minutes (SPEC §3).
//!
//! Ids are kept as 64-bit hashes (foldhash, seeded at random per process, so a
//! publisher cannot aim for collisions) in one set per minute; a lookup checks
//! every set, and the oldest set is dropped once it is more than [`WINDOW`]
//! old. That is ~16 bytes per id instead of the id string plus a cache entry:
//! at 1,000 events/s the window holds 300,000 ids in about 5 MB, so memory
//! stays flat under steady traffic. At most [`MAX_IDS`] ids are kept; beyond
//! that (a storm far above normal rates) the oldest minute goes early, which
//! is the documented trade-off.

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an applied `eventId` is remembered, at least.
pub const WINDOW: Duration = Duration::from_secs(5 * 60);
/// Width of one bucket.
const BUCKET: Duration = Duration::from_secs(60);
/// Most ids remembered at once.
pub const MAX_IDS: usize = 2_000_000;

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

struct Buckets {
    /// (start of the bucket, ids applied in it), oldest first.
    sets: VecDeque<(Instant, IdSet)>,
    /// Ids in all sets.
    total: usize,
}

/// See the module docs. Thread-safe (one short lock per call).
pub struct ReplayWindow {
    /// Seeded hasher for the ids.
    hasher: foldhash::quality::RandomState,
    buckets: Mutex<Buckets>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            hasher: foldhash::quality::RandomState::default(),
            buckets: Mutex::new(Buckets {
                sets: VecDeque::new(),
                total: 0,
            }),
        }
    }
}

impl ReplayWindow {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when `id` was applied within the window.
    pub fn seen(&self, id: &str) -> bool {
        let h = self.hasher.hash_one(id);
        self.lock().sets.iter().any(|(_, s)| s.contains(&h))
    }

    /// Remembers an applied `id`.
    pub fn remember(&self, id: &str) {
        self.remember_at(id, Instant::now());
    }

    fn remember_at(&self, id: &str, now: Instant) {
        let h = self.hasher.hash_one(id);
        let mut b = self.lock();
        // Drop buckets that ended more than WINDOW ago, and the oldest ones
        // beyond the size bound.
        while let Some((start, set)) = b.sets.front() {
            let expired = now.saturating_duration_since(*start) > WINDOW + BUCKET;
            if expired || b.total >= MAX_IDS {
                let n = set.len();
                b.sets.pop_front();
                b.total -= n;
            } else {
                break;
            }
        }
        let need_new = match b.sets.back() {
            Some((start, _)) => now.saturating_duration_since(*start) >= BUCKET,
            None => true,
        };
        if need_new {
            b.sets.push_back((now, IdSet::default()));
        }
        if let Some((_, set)) = b.sets.back_mut() {
            if set.insert(h) {
                b.total += 1;
            }
        }
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

    #[test]
    fn remembers_for_the_window_then_forgets() {
        let w = ReplayWindow::default();
        let t0 = Instant::now();
        w.remember_at("a", t0);
        assert!(w.seen("a"));
        assert!(!w.seen("b"));
        // Still remembered just under WINDOW later, across bucket boundaries.
        for m in 1..=5 {
            w.remember_at(&format!("x{m}"), t0 + Duration::from_secs(60 * m));
        }
        assert!(w.seen("a"), "remembered for at least five minutes");
        // Long after, a new id pushes the old buckets out.
        w.remember_at("late", t0 + WINDOW + BUCKET * 3);
        assert!(!w.seen("a"));
        assert!(w.seen("late"));
        assert!(!w.seen("x1"));
        assert!(w.len() < 7, "old buckets were dropped");
    }
}
