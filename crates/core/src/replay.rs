//! The replay window: `eventId`s of applied events, remembered for at least
//! five minutes (SPEC §3), in a moka cache with a time-to-live.
//!
//! The window is bounded in entries ([`MAX_IDS`]) so a flood of unique ids
//! cannot exhaust memory; at that bound moka evicts the least useful ids early,
//! which is the documented trade-off.

use std::time::Duration;

use moka::sync::Cache;

/// How long an applied `eventId` is remembered.
pub const WINDOW: Duration = Duration::from_secs(5 * 60 + 1);
/// Most ids remembered at once.
pub const MAX_IDS: u64 = 2_000_000;

/// See the module docs. Thread-safe.
pub struct ReplayWindow {
    /// Applied ids.
    ids: Cache<String, ()>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            ids: Cache::builder()
                .max_capacity(MAX_IDS)
                .time_to_live(WINDOW)
                .build(),
        }
    }
}

impl ReplayWindow {
    /// True when `id` was applied within the window.
    pub fn seen(&self, id: &str) -> bool {
        self.ids.contains_key(id)
    }

    /// Remembers an applied `id`.
    pub fn remember(&self, id: &str) {
        self.ids.insert(id.to_owned(), ());
    }
}
