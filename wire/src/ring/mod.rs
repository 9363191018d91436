//! A shared-memory single-producer/single-consumer ring of variable-length
//! records.
//!
//! Layers, bottom up:
//!
//! * [`layout`] — where the indices, flags and records live; the record
//!   format and its checked decoding (wrap-around uses a skip marker so a
//!   record is always contiguous).
//! * [`core`] — the index protocol over any [`core::RingMemory`]: publish
//!   with release/acquire, park without lost wake-ups, validate everything
//!   the peer wrote. No blocking, no system calls; this is what the
//!   `loom-tests` crate model-checks (atomics come through [`crate::loom`]).
//! * [`spin`] — the adaptive spin-then-park budget.
//! * [`endpoint`] — blocking [`Producer`]/[`Consumer`] with counters, generic
//!   over a [`Parker`].
//! * [`shm`] — the production memory and parker: a sealed memfd mapping,
//!   two eventfds, and the control socket (plus a pidfd) to notice a dead
//!   peer; set up over a Unix socket with `SCM_RIGHTS`.
//! * [`heap`] — the same ring in heap memory with a condition variable, for
//!   loom models and tests.
//!
//! The design and measured numbers are in `docs/adr/0010-shm-ring.md`.

pub mod core;
pub mod endpoint;
pub mod error;
pub mod heap;
pub mod layout;
#[cfg(not(tern_loom))]
pub mod shm;
pub mod spin;

pub use endpoint::{Consumer, Parker, Producer, RingStats};
pub use error::{Corrupt, PeerGone, PopError, PushError, TryPushError};
pub use layout::Geometry;
pub use spin::SpinConfig;

#[cfg(test)]
mod tests;
