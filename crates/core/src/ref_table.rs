//! The reference cache's table: dense slots in one `Vec` with a hash index
//! of slot numbers (IndexMap-style), sampled-LRU eviction, lazy and
//! incremental expiry.
//!
//! * Each slot's key and stored bytes share one allocation; the slot itself
//!   is 64 bytes, the index 4 bytes (plus a control byte) per entry.
//! * Eviction samples [`SAMPLE`] slots at random and removes the one used
//!   least recently (an entry past its hold time first): Redis's approximated
//!   LRU, O(1) per eviction with no list to maintain on a hit.
//! * Expiry is lazy (a read of an entry past its time is a miss) and
//!   incremental (every insert looks at [`EXPIRE_STEP`] slots in turn and
//!   removes those past their hold time).
//!
//! The table is not synchronised: the cache holds it in an `RwLock` (reads
//! under the read lock only touch atomics) and keeps its counters.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use hashbrown::HashTable;

use crate::packing::Form;

/// Slots looked at per eviction.
pub const SAMPLE: usize = 8;

/// Slots looked at for expiry per insert.
pub const EXPIRE_STEP: usize = 4;

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// A remembered 404.
    NotFound,
    /// A value, stored as given.
    Value(Form),
}

/// One entry. Times are nanoseconds on the cache's clock.
#[derive(Debug)]
pub struct Slot {
    /// The key's bytes followed by the stored bytes.
    data: Box<[u8]>,
    /// How many of `data`'s bytes are the key.
    key_len: u16,
    /// What the stored bytes are.
    pub stored: Stored,
    /// The kind's index (for the dictionary), see `packing.rs`.
    pub kind: u8,
    /// Set by the hit that asked for this entry's refresh: once per entry.
    pub refreshing: AtomicBool,
    /// Its weight in bytes, as counted against the bound.
    pub weight: u32,
    /// Until when this is a hit.
    pub fresh_until: u64,
    /// Until when it is held (TTL + stale window).
    pub hold_until: u64,
    /// A hit from this time on also refreshes it (`u64::MAX`: never).
    pub refresh_after: u64,
    /// When it was last stored or hit, for eviction.
    pub used: AtomicU64,
}

impl Slot {
    /// A slot for `key` holding `bytes`; `None` when the key is too long to
    /// be kept (over 65,535 bytes).
    pub fn new(key: &str, bytes: &[u8], stored: Stored, kind: u8, weight: u32) -> Option<Slot> {
        let key_len = u16::try_from(key.len()).ok()?;
        let mut data = Vec::with_capacity(key.len() + bytes.len());
        data.extend_from_slice(key.as_bytes());
        data.extend_from_slice(bytes);
        Some(Slot {
            data: data.into_boxed_slice(),
            key_len,
            stored,
            kind,
            refreshing: AtomicBool::new(false),
            weight,
            fresh_until: 0,
            hold_until: 0,
            refresh_after: u64::MAX,
            used: AtomicU64::new(0),
        })
    }

    /// Its key's bytes.
    pub fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    /// Its stored bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }
}

/// See the module docs.
#[derive(Default)]
pub struct Table {
    /// The entries, dense.
    slots: Vec<Slot>,
    /// Slot numbers by the hash of their key.
    index: HashTable<u32>,
    /// The hasher of keys.
    hasher: foldhash::fast::RandomState,
    /// Sum of the slots' weights.
    bytes: u64,
    /// The next slot incremental expiry looks at.
    cursor: usize,
    /// State of the sampling generator (xorshift).
    rng: u64,
}

impl Table {
    /// Entries held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Sum of the held weights.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes reserved for slots and index (not counting what slots point to).
    pub fn capacity_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>() + self.index.capacity() * 5
    }

    /// Every held slot.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot number of `key`.
    fn position(&self, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(self.hash(key), |&i| slots[i as usize].key() == key)
            .map(|&i| i as usize)
    }

    /// The slot of `key`.
    pub fn get(&self, key: &str) -> Option<&Slot> {
        self.position(key.as_bytes()).map(|i| &self.slots[i])
    }

    /// Holds `slot`, replacing the slot of its key; returns the replaced one.
    /// Makes no room: the caller evicts first.
    pub fn insert(&mut self, slot: Slot) -> Option<Slot> {
        let old = self.remove(std::str::from_utf8(slot.key()).unwrap_or_default());
        let h = self.hash(slot.key());
        let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.bytes += u64::from(slot.weight);
        self.slots.push(slot);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(h, i, |&j| hasher.hash_one(slots[j as usize].key()));
        old
    }

    /// Drops the slot of `key`, returning it.
    pub fn remove(&mut self, key: &str) -> Option<Slot> {
        let i = self.position(key.as_bytes())?;
        Some(self.remove_at(i))
    }

    /// Drops slot `i` (swapping the last slot into its place).
    fn remove_at(&mut self, i: usize) -> Slot {
        let h = self.hash(self.slots[i].key());
        if let Ok(e) = self.index.find_entry(h, |&j| j as usize == i) {
            e.remove();
        }
        let last = self.slots.len() - 1;
        if i != last {
            let h = self.hash(self.slots[last].key());
            if let Some(j) = self.index.find_mut(h, |&j| j as usize == last) {
                *j = i as u32;
            }
        }
        let slot = self.slots.swap_remove(i);
        self.bytes -= u64::from(slot.weight);
        if self.slots.len() * 4 < self.slots.capacity() && self.slots.capacity() > 64 {
            self.slots.shrink_to(self.slots.len() * 2);
            let (slots, hasher) = (&self.slots, &self.hasher);
            self.index.shrink_to(slots.len() * 2, |&j| {
                hasher.hash_one(slots[j as usize].key())
            });
        }
        slot
    }

    fn random(&mut self) -> usize {
        // xorshift64*, seeded from the hasher on first use.
        if self.rng == 0 {
            self.rng = self.hasher.hash_one(0xC0FFEEu64) | 1;
        }
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as usize
    }

    /// Evicts one slot: of [`SAMPLE`] random ones, one past its hold time at
    /// `now` if any, else the least recently used. `None` when empty.
    pub fn evict_one(&mut self, now: u64) -> Option<Slot> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let rank = |s: &Slot| (s.hold_until > now, s.used.load(Relaxed));
        // With SAMPLE slots or fewer, every one is looked at.
        let small = n <= SAMPLE;
        let mut best = if small { 0 } else { self.random() % n };
        for k in 1..SAMPLE.min(n) {
            let i = if small { k } else { self.random() % n };
            if rank(&self.slots[i]) < rank(&self.slots[best]) {
                best = i;
            }
        }
        Some(self.remove_at(best))
    }

    /// Looks at the next [`EXPIRE_STEP`] slots and drops those past their
    /// hold time at `now`; returns them.
    pub fn expire_some(&mut self, now: u64) -> Vec<Slot> {
        let mut out = Vec::new();
        for _ in 0..EXPIRE_STEP {
            if self.slots.is_empty() {
                break;
            }
            if self.cursor >= self.slots.len() {
                self.cursor = 0;
            }
            if self.slots[self.cursor].hold_until <= now {
                // The last slot moves here: look at this position again.
                out.push(self.remove_at(self.cursor));
            } else {
                self.cursor += 1;
            }
        }
        out
    }

    /// Drops everything and frees the memory.
    pub fn clear(&mut self) {
        self.slots = Vec::new();
        self.index = HashTable::new();
        self.bytes = 0;
        self.cursor = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(key: &str, used: u64, hold_until: u64) -> Slot {
        let mut s = Slot::new(key, b"{}", Stored::Value(Form::Raw), 0, 10).unwrap();
        s.hold_until = hold_until;
        s.used = AtomicU64::new(used);
        s
    }

    #[test]
    fn insert_replace_remove_keep_index_and_bytes_exact() {
        let mut t = Table::default();
        for i in 0..1000 {
            assert!(t.insert(slot(&format!("user:{i}"), i, u64::MAX)).is_none());
        }
        assert!(t.insert(slot("user:5", 0, u64::MAX)).is_some(), "replaced");
        assert_eq!((t.len(), t.bytes()), (1000, 10_000));
        for i in (0..1000).step_by(3) {
            assert!(t.remove(&format!("user:{i}")).is_some());
        }
        for i in 0..1000 {
            let held = t.get(&format!("user:{i}")).map(|s| s.key().to_vec());
            if i % 3 == 0 {
                assert!(held.is_none());
            } else {
                assert_eq!(held.unwrap(), format!("user:{i}").as_bytes());
            }
        }
        assert_eq!(
            t.bytes(),
            t.iter().map(|s| u64::from(s.weight)).sum::<u64>()
        );
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.capacity_bytes(), 0, "clear frees");
    }

    #[test]
    fn eviction_prefers_expired_then_least_recently_used() {
        let mut t = Table::default();
        // 8 slots or fewer: every one is in the sample.
        for i in 0..8 {
            t.insert(slot(&format!("k{i}"), 100 + i, u64::MAX));
        }
        t.get("k0").unwrap().used.store(1_000, Relaxed);
        let e = t.evict_one(50).unwrap();
        assert_eq!(e.key(), b"k1", "the oldest use goes");
        t.insert(slot("gone", 5_000, 40));
        let e = t.evict_one(50).unwrap();
        assert_eq!(e.key(), b"gone", "past its hold time first");
        // Many slots: what is evicted is from the older part (sampled LRU).
        let mut t = Table::default();
        for i in 0..10_000 {
            t.insert(slot(&format!("k{i}"), i, u64::MAX));
        }
        let mut evicted = 0u64;
        for _ in 0..1000 {
            evicted += t.evict_one(0).unwrap().used.load(Relaxed);
        }
        assert!(
            evicted / 1000 < 2_500,
            "mean use time of the evicted: {}",
            evicted / 1000
        );
    }

    #[test]
    fn incremental_expiry_drops_what_is_past_its_hold_time() {
        let mut t = Table::default();
        for i in 0..100 {
            t.insert(slot(
                &format!("k{i}"),
                0,
                if i % 2 == 0 { 10 } else { 1_000 },
            ));
        }
        let mut dropped = 0;
        for _ in 0..100 {
            dropped += t.expire_some(20).len();
        }
        assert_eq!(dropped, 50);
        assert!(t.iter().all(|s| s.hold_until == 1_000));
        assert_eq!(t.bytes(), 500);
    }
}
