//! The concurrency facade the shared-memory ring is written against.
//!
//! Normal builds re-export `std`'s atomics, locks and threads. Built with
//! `RUSTFLAGS="--cfg tern_loom"` (see `scripts/loom.sh`), the same names come
//! from [loom](https://docs.rs/loom), so the `loom-tests` crate model-checks
//! the production ring code itself rather than a copy of it. Code in
//! [`crate::ring`] imports atomics only through this module.
//!
//! The cfg is `tern_loom`, not `loom`, so that building our models does not
//! also flip tokio's (or any other dependency's) own loom code paths.

/// Atomics: `std::sync::atomic` or `loom::sync::atomic`.
pub mod atomic {
    #[cfg(tern_loom)]
    pub use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
    #[cfg(not(tern_loom))]
    pub use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
}

/// Locks and shared ownership: `std::sync` or `loom::sync`.
pub mod sync {
    #[cfg(tern_loom)]
    pub use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
    #[cfg(not(tern_loom))]
    pub use std::sync::{Arc, Condvar, Mutex, MutexGuard};
}

/// Interior mutability whose accesses loom checks for data races.
pub mod cell {
    /// An `UnsafeCell` with loom's `with`/`with_mut` API in both builds, so
    /// code using it is race-checked under loom and free of overhead otherwise.
    #[cfg(tern_loom)]
    pub use loom::cell::UnsafeCell;

    /// `std`'s `UnsafeCell` behind loom's closure-style accessors.
    #[cfg(not(tern_loom))]
    #[derive(Debug, Default)]
    pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(tern_loom))]
    impl<T> UnsafeCell<T> {
        /// Wraps `value`.
        pub const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        /// Runs `f` with a shared raw pointer to the contents.
        pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Runs `f` with a mutable raw pointer to the contents.
        pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

/// Threads: `std::thread` or `loom::thread`.
pub mod thread {
    #[cfg(tern_loom)]
    pub use loom::thread::{JoinHandle, spawn, yield_now};
    #[cfg(not(tern_loom))]
    pub use std::thread::{JoinHandle, spawn, yield_now};
}

/// CPU hints: a spin-loop hint is a scheduling point under loom.
pub mod hint {
    #[cfg(tern_loom)]
    pub use loom::hint::spin_loop;
    #[cfg(not(tern_loom))]
    pub use std::hint::spin_loop;
}
