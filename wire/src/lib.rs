//! `wire`: how Tern's processes talk to each other.
//!
//! * [`generated`] — flatbuffers types produced by `flatc` from `schema/*.fbs`
//!   (checked in; regenerate with `wire/regen.sh`).
//! * [`frame`] — `[u32 LE length][flatbuffer]` frames with a negotiated
//!   maximum size, verified before use, blocking and async.
//! * [`uds`] — Unix-socket helpers: stale-socket removal, 0660 binding,
//!   peer credentials, configurable paths.
//! * [`ring`] — a shared-memory single-producer/single-consumer ring of
//!   variable-length records (memfd + eventfd, fds passed with SCM_RIGHTS).
//! * [`relay`] — the relayd ↔ gossipd session (hello, data channel of two
//!   rings, control frames) and its delivery contract.
//! * [`loom`] — the atomics facade the ring uses, swapped for loom's under
//!   `--cfg tern_loom` so the production code itself is model-checked.
#![warn(missing_docs)]

pub mod error;
pub mod frame;
pub mod generated;
pub mod hello;
pub mod loom;
#[cfg(not(tern_loom))]
pub mod relay;
pub mod ring;
pub mod uds;

pub use error::{RemoteError, WireError};
