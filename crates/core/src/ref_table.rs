//! The reference cache's table: dense slots in one `Vec` with a hash index
//! of slot numbers (IndexMap-style), sampled-LRU eviction, lazy and
//! incremental expiry.
//!
//! * Each slot's key and stored bytes are one record in a 64 KB chunk
//!   ([`CHUNK`]) rather than an allocation of their own: a few hundred
//!   long-lived small allocations interleaved with the fetch path's
//!   short-lived ones fragmented the heap by ~250 B per entry. A chunk whose
//!   records are more than half dead is compacted (its live records copied to
//!   the current chunk) and freed; a chunk with no live record is freed at
//!   once. The slot itself is 56 bytes, the index 4 bytes (plus a control
//!   byte) per entry.
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

/// Bytes per chunk of records (a record larger than this gets a chunk of its
/// own).
pub const CHUNK: usize = 64 * 1024;

/// Bytes of a record's header: the key's length (u16) and the stored
/// bytes' length (u32), little-endian.
const HEADER: usize = 6;

/// One entry. Times are nanoseconds on the cache's clock.
#[derive(Debug)]
pub struct Slot {
    /// The chunk holding its record.
    chunk: u32,
    /// Where its record starts in the chunk.
    offset: u32,
    /// The key's length.
    key_len: u16,
    /// The stored bytes' length.
    len: u32,
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

/// What a new entry is, besides its key and bytes.
#[derive(Debug)]
pub struct Meta {
    /// What the stored bytes are.
    pub stored: Stored,
    /// The kind's index.
    pub kind: u8,
    /// Its weight in bytes.
    pub weight: u32,
    /// Until when this is a hit.
    pub fresh_until: u64,
    /// Until when it is held.
    pub hold_until: u64,
    /// A hit from this time on also refreshes it (`u64::MAX`: never).
    pub refresh_after: u64,
    /// Now (its first use).
    pub used: u64,
}

/// One chunk of records.
#[derive(Debug)]
struct Chunk {
    /// The records, appended; never reallocated.
    data: Vec<u8>,
    /// Bytes of records no slot points to any more.
    dead: usize,
}

/// Refusal of [`Table::insert`]: a key over 65,535 bytes or a value over
/// 4 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

/// A removed entry: its slot and its stored bytes.
#[derive(Debug)]
pub struct Removed {
    /// The slot as it was.
    pub slot: Slot,
    /// Its key.
    pub key: Box<[u8]>,
}

/// See the module docs.
#[derive(Default)]
pub struct Table {
    /// The entries, dense.
    slots: Vec<Slot>,
    /// The chunks of records (`None`: freed, its number in `free`).
    chunks: Vec<Option<Chunk>>,
    /// Numbers of freed chunks, for reuse.
    free: Vec<u32>,
    /// The chunk records are appended to.
    current: Option<u32>,
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

    /// Bytes reserved for slots, index and chunks.
    pub fn capacity_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.index.capacity() * 5
            + self
                .chunks
                .iter()
                .flatten()
                .map(|c| c.data.capacity())
                .sum::<usize>()
    }

    /// Every held slot.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    /// The key of `slot`.
    pub fn key(&self, slot: &Slot) -> &[u8] {
        key_in(&self.chunks, slot)
    }

    /// The stored bytes of `slot`.
    pub fn bytes_of(&self, slot: &Slot) -> &[u8] {
        let start = slot.offset as usize + HEADER + slot.key_len as usize;
        match &self.chunks[slot.chunk as usize] {
            Some(c) => &c.data[start..start + slot.len as usize],
            None => &[],
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The slot number of `key`.
    fn position(&self, key: &[u8]) -> Option<usize> {
        let (slots, chunks) = (&self.slots, &self.chunks);
        self.index
            .find(self.hash(key), |&i| {
                key_in(chunks, &slots[i as usize]) == key
            })
            .map(|&i| i as usize)
    }

    /// The slot of `key`.
    pub fn get(&self, key: &str) -> Option<&Slot> {
        self.position(key.as_bytes()).map(|i| &self.slots[i])
    }

    /// Appends a record of `key` and `bytes`; (chunk, offset).
    fn place(&mut self, key: &[u8], bytes: &[u8]) -> (u32, u32) {
        let need = HEADER + key.len() + bytes.len();
        let fits = |c: &Chunk| c.data.capacity() - c.data.len() >= need;
        let n = match self.current {
            Some(n) if self.chunks[n as usize].as_ref().is_some_and(fits) => n,
            _ => {
                let chunk = Chunk {
                    data: Vec::with_capacity(need.max(CHUNK)),
                    dead: 0,
                };
                let n = match self.free.pop() {
                    Some(n) => {
                        self.chunks[n as usize] = Some(chunk);
                        n
                    }
                    None => {
                        self.chunks.push(Some(chunk));
                        (self.chunks.len() - 1) as u32
                    }
                };
                // An old current chunk with room left keeps it as dead space.
                if let Some(old) = self.current.and_then(|o| self.chunks[o as usize].as_mut()) {
                    old.dead += old.data.capacity() - old.data.len();
                }
                if need <= CHUNK {
                    self.current = Some(n);
                }
                n
            }
        };
        let Some(c) = self.chunks[n as usize].as_mut() else {
            unreachable!("chunk {n} was just placed")
        };
        let offset = c.data.len() as u32;
        c.data.extend_from_slice(&(key.len() as u16).to_le_bytes());
        c.data
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        c.data.extend_from_slice(key);
        c.data.extend_from_slice(bytes);
        (n, offset)
    }

    /// Holds `key` with `bytes` and `meta`, replacing the slot of the key
    /// (returned). Makes no room: the caller evicts first. [`TooLong`] (and
    /// nothing held or removed) for a key over 65,535 bytes.
    pub fn insert(
        &mut self,
        key: &str,
        bytes: &[u8],
        meta: Meta,
    ) -> Result<Option<Removed>, TooLong> {
        let key_len = u16::try_from(key.len()).map_err(|_| TooLong)?;
        let len = u32::try_from(bytes.len()).map_err(|_| TooLong)?;
        let old = self.remove(key);
        let (chunk, offset) = self.place(key.as_bytes(), bytes);
        let slot = Slot {
            chunk,
            offset,
            key_len,
            len,
            stored: meta.stored,
            kind: meta.kind,
            refreshing: AtomicBool::new(false),
            weight: meta.weight,
            fresh_until: meta.fresh_until,
            hold_until: meta.hold_until,
            refresh_after: meta.refresh_after,
            used: AtomicU64::new(meta.used),
        };
        let h = self.hash(key.as_bytes());
        let i = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        self.bytes += u64::from(slot.weight);
        self.slots.push(slot);
        let (slots, chunks, hasher) = (&self.slots, &self.chunks, &self.hasher);
        self.index.insert_unique(h, i, |&j| {
            hasher.hash_one(key_in(chunks, &slots[j as usize]))
        });
        Ok(old)
    }

    /// Drops the slot of `key`, returning it.
    pub fn remove(&mut self, key: &str) -> Option<Removed> {
        let i = self.position(key.as_bytes())?;
        Some(self.remove_at(i))
    }

    /// Drops slot `i` (swapping the last slot into its place), then frees or
    /// compacts its chunk as needed.
    fn remove_at(&mut self, i: usize) -> Removed {
        let key: Box<[u8]> = self.key(&self.slots[i]).into();
        let h = self.hash(&key);
        if let Ok(e) = self.index.find_entry(h, |&j| j as usize == i) {
            e.remove();
        }
        let last = self.slots.len() - 1;
        if i != last {
            let h = self.hash(self.key(&self.slots[last]));
            if let Some(j) = self.index.find_mut(h, |&j| j as usize == last) {
                *j = i as u32;
            }
        }
        let slot = self.slots.swap_remove(i);
        self.bytes -= u64::from(slot.weight);
        if self.slots.len() * 4 < self.slots.capacity() && self.slots.capacity() > 64 {
            self.slots.shrink_to(self.slots.len() * 2);
            let (slots, chunks, hasher) = (&self.slots, &self.chunks, &self.hasher);
            self.index.shrink_to(slots.len() * 2, |&j| {
                hasher.hash_one(key_in(chunks, &slots[j as usize]))
            });
        }
        self.release(
            slot.chunk,
            HEADER + slot.key_len as usize + slot.len as usize,
        );
        Removed { slot, key }
    }

    /// Marks `n` bytes of chunk `c` dead; frees it when nothing in it lives,
    /// compacts it when more than half is dead (not the current chunk).
    fn release(&mut self, c: u32, n: usize) {
        let Some(chunk) = self.chunks[c as usize].as_mut() else {
            return;
        };
        chunk.dead += n;
        let current = self.current == Some(c);
        if chunk.dead >= chunk.data.capacity() && !current {
            self.chunks[c as usize] = None;
            self.free.push(c);
        } else if !current && chunk.dead * 2 > chunk.data.capacity() {
            self.compact(c);
        }
    }

    /// Moves the live records of chunk `c` to the current chunk, and frees it.
    fn compact(&mut self, c: u32) {
        let mut offset = 0usize;
        let mut record = Vec::new();
        loop {
            let Some(chunk) = self.chunks[c as usize].as_ref() else {
                return;
            };
            if offset + HEADER > chunk.data.len() {
                break;
            }
            let d = &chunk.data;
            let key_len = u16::from_le_bytes([d[offset], d[offset + 1]]) as usize;
            let len =
                u32::from_le_bytes([d[offset + 2], d[offset + 3], d[offset + 4], d[offset + 5]])
                    as usize;
            let end = offset + HEADER + key_len + len;
            record.clear();
            record.extend_from_slice(&d[offset + HEADER..end]);
            let (key, bytes) = record.split_at(key_len);
            if let Some(i) = self.position(key) {
                let s = &self.slots[i];
                if s.chunk == c && s.offset as usize == offset {
                    let (nc, no) = self.place(key, bytes);
                    let s = &mut self.slots[i];
                    s.chunk = nc;
                    s.offset = no;
                }
            }
            offset = end;
        }
        self.chunks[c as usize] = None;
        self.free.push(c);
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
    pub fn evict_one(&mut self, now: u64) -> Option<Removed> {
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
    pub fn expire_some(&mut self, now: u64) -> Vec<Removed> {
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
        self.chunks = Vec::new();
        self.free = Vec::new();
        self.current = None;
        self.index = HashTable::new();
        self.bytes = 0;
        self.cursor = 0;
    }
}

/// The key of `slot` in `chunks`.
fn key_in<'a>(chunks: &'a [Option<Chunk>], slot: &Slot) -> &'a [u8] {
    let start = slot.offset as usize + HEADER;
    match &chunks[slot.chunk as usize] {
        Some(c) => &c.data[start..start + slot.key_len as usize],
        None => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(used: u64, hold_until: u64, weight: u32) -> Meta {
        Meta {
            stored: Stored::Value(Form::Raw),
            kind: 0,
            weight,
            fresh_until: hold_until,
            hold_until,
            refresh_after: u64::MAX,
            used,
        }
    }

    fn put(t: &mut Table, key: &str, used: u64, hold_until: u64) -> Option<Removed> {
        t.insert(key, b"{}", meta(used, hold_until, 10)).unwrap()
    }

    #[test]
    fn insert_replace_remove_keep_index_and_bytes_exact() {
        let mut t = Table::default();
        for i in 0..1000 {
            assert!(put(&mut t, &format!("user:{i}"), i, u64::MAX).is_none());
        }
        assert!(put(&mut t, "user:5", 0, u64::MAX).is_some(), "replaced");
        assert_eq!((t.len(), t.bytes()), (1000, 10_000));
        for i in (0..1000).step_by(3) {
            assert!(t.remove(&format!("user:{i}")).is_some());
        }
        for i in 0..1000 {
            let held = t.get(&format!("user:{i}")).map(|s| t.key(s).to_vec());
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
    fn chunks_are_compacted_and_freed_as_records_die() {
        let mut t = Table::default();
        let body = |i: usize| format!("{i:0>300}");
        for i in 0..2_000 {
            t.insert(&format!("k{i}"), body(i).as_bytes(), meta(0, u64::MAX, 1))
                .unwrap();
        }
        let full = t.chunks.iter().flatten().count();
        assert!(full >= 9, "{full} chunks for ~620 KB of records");
        // Drop 3 of every 4: every old chunk goes past half dead.
        for i in 0..2_000 {
            if i % 4 != 0 {
                t.remove(&format!("k{i}")).unwrap();
            }
        }
        let live = t.chunks.iter().flatten().count();
        assert!(live * 2 < full + 2, "{live} chunks of {full} left");
        // Every survivor reads back its own bytes after being moved.
        for i in (0..2_000).step_by(4) {
            let s = t.get(&format!("k{i}")).unwrap();
            assert_eq!(t.bytes_of(s), body(i).as_bytes());
        }
        // A record larger than a chunk has one of its own, freed with it.
        let big = "x".repeat(CHUNK + 10);
        t.insert("big", big.as_bytes(), meta(0, u64::MAX, 1))
            .unwrap();
        assert_eq!(t.bytes_of(t.get("big").unwrap()), big.as_bytes());
        let n = t.chunks.iter().flatten().count();
        t.remove("big").unwrap();
        assert_eq!(t.chunks.iter().flatten().count(), n - 1);
        // A key too long to hold is refused, and nothing is held for it.
        assert!(t.insert(&"k".repeat(70_000), b"{}", meta(0, 1, 1)).is_err());
    }

    #[test]
    fn eviction_prefers_expired_then_least_recently_used() {
        let mut t = Table::default();
        // 8 slots or fewer: every one is in the sample.
        for i in 0..8 {
            put(&mut t, &format!("k{i}"), 100 + i, u64::MAX);
        }
        t.get("k0").unwrap().used.store(1_000, Relaxed);
        let e = t.evict_one(50).unwrap();
        assert_eq!(&*e.key, b"k1", "the oldest use goes");
        put(&mut t, "gone", 5_000, 40);
        let e = t.evict_one(50).unwrap();
        assert_eq!(&*e.key, b"gone", "past its hold time first");
        // Many slots: what is evicted is from the older part (sampled LRU).
        let mut t = Table::default();
        for i in 0..10_000 {
            put(&mut t, &format!("k{i}"), i, u64::MAX);
        }
        let mut evicted = 0u64;
        for _ in 0..1000 {
            evicted += t.evict_one(0).unwrap().slot.used.load(Relaxed);
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
            put(
                &mut t,
                &format!("k{i}"),
                0,
                if i % 2 == 0 { 10 } else { 1_000 },
            );
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
