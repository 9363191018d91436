//! Helpers shared by Tern's test suites, and by nothing else (every user
//! takes this crate as a dev-dependency).
//!
//! * [`alloc`] — a counting global allocator: a test binary installs
//!   [`alloc::Counting`] and wraps hostile reads in [`alloc::tracked`] to
//!   learn the largest single allocation and the bytes requested, so a
//!   "never an allocation sized by a hostile length" claim is measured.
//! * [`daemon`] — the workspace's daemon binaries (built on demand), a
//!   child killed on drop, and the admin-socket JSON client.
//! * [`node`] — one node of spawned daemons (relayd, gossipd, verifyd) in
//!   a temp dir, for multi-process tests.
//! * [`scrape`] — a free loopback port, one `GET /metrics`, a sample's
//!   value.
//! * [`seeds`] — keeps a fuzz target's committed seed corpus
//!   (`fuzz/corpus/<target>/`) byte-equal to the seeds a test builds.
#![warn(missing_docs, unreachable_pub)]

pub mod alloc;
pub mod daemon;
pub mod node;
pub mod scrape;
pub mod seeds;
