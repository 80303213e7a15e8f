//! Giving freed memory back to the system.
//!
//! glibc keeps freed chunks in the arena of the thread that allocated them
//! and returns free pages inside an arena only on `malloc_trim`. Two moments
//! free a lot at once: a large full load (the parsed rows of every page are
//! dropped once the new tables are built) and a burst of tenant releases in a
//! pool. Both call [`give_back`] on a blocking thread.

/// Rows in a load above which [`give_back`] runs after it (a small load frees
/// too little to be worth a pass over the heap).
pub const LARGE_LOAD_ROWS: usize = 50_000;

/// Drops the interned values nothing uses any more (intern.rs), then
/// `malloc_trim(0)` where the allocator is glibc's. Blocking (a pass over the
/// heap: milliseconds for hundreds of MiB); safe to call from any thread.
pub fn give_back() {
    crate::intern::purge();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim takes no pointers and may be called from any
        // thread at any time; it only returns free pages to the system.
        unsafe {
            malloc_trim(0);
        }
    }
}
