//! A counting global allocator for tests of hostile lengths.
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: test_support::alloc::Counting = test_support::alloc::Counting;
//!
//! let t = test_support::alloc::tracked(|| parse(hostile_bytes));
//! assert!(t.largest < 4096);
//! ```
//!
//! Counting is per thread and only while [`tracked`] runs its closure, so
//! other tests running in parallel threads do not disturb a measurement.
//! Without the allocator installed, [`tracked`] reports zeros, which a
//! test would notice as a vacuous bound: [`installed`] checks for that.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to the system allocator and records, while a [`tracked`]
/// closure runs on this thread, each request's size.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with` because the allocator may run during thread teardown.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            LARGEST.with(|l| l.set(l.get().max(size)));
            TOTAL.with(|t| t.set(t.get().saturating_add(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to the system allocator with the
// caller's own arguments, so `System` upholds the contract; the bookkeeping
// only touches const-initialised thread-locals, which never allocate.
// Covered by this module's tests and by every hostile-input test using it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours, forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours, forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours, forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as ours, forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// What a [`tracked`] closure returned and allocated.
#[derive(Debug)]
pub struct Tracked<T> {
    /// The closure's value.
    pub value: T,
    /// Largest single allocation (or reallocation target) in bytes.
    pub largest: usize,
    /// Sum of all requested sizes in bytes.
    pub total: usize,
}

/// Runs `f` with counting on for this thread.
pub fn tracked<T>(f: impl FnOnce() -> T) -> Tracked<T> {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    ARMED.with(|a| a.set(true));
    let value = f();
    ARMED.with(|a| a.set(false));
    Tracked {
        value,
        largest: LARGEST.with(Cell::get),
        total: TOTAL.with(Cell::get),
    }
}

/// True when [`Counting`] is this binary's global allocator: a known
/// allocation is seen. Tests assert it once so that their bounds cannot pass
/// vacuously.
pub fn installed() -> bool {
    let t = tracked(|| std::hint::black_box(vec![0u8; 4097]));
    t.largest >= 4097
}
