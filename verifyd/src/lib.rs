//! `verifyd`: batched ML-DSA-65 signature verification as a stage of its own.
//!
//! Every pubsub message in Tern is signed with ML-DSA-65 and verified before
//! it is delivered or forwarded. This crate holds:
//!
//! * [`backend`] — the ML-DSA-65 implementations behind one trait, and the
//!   size rules every path shares;
//! * [`calibrate`] — start-up timing of every backend built in, to pick the
//!   fastest for this CPU;
//! * [`keys`] — the bounded cache of decoded public keys, addressed by key id;
//! * [`sched`] — the sans-IO scheduler: admission (`Busy`), fair gathering of
//!   items from all clients into batches, adaptive delay and admission limit;
//! * [`proto`] — the verify requests and responses and their
//!   [`wire`] encoding ([`proto::decode_request`] is the fuzzed decoder);
//! * [`server`] — the daemon, served on the hardened core `server-core`:
//!   a small tokio runtime for both sockets (caps, deadlines, budgets),
//!   rayon pool, admin socket, metrics, SIGTERM drain;
//! * [`client`] — a pool over several daemons with least-outstanding
//!   balancing, `Busy` back-off and re-submission when an instance dies,
//!   plus an explicit in-process backend;
//! * [`transport`] — frames on the socket, or a shared-memory ring pair
//!   when both sides offer it in the hello;
//! * [`fixtures`] — deterministic keys and signatures for tests and benches.
//!
//! Operators: see `docs/verifyd.md`. Design decisions: `docs/adr/002*.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backend;
pub mod calibrate;
pub mod client;
pub mod fixtures;
pub mod keys;
pub mod metrics;
pub mod proto;
pub mod sched;
pub mod server;
pub mod session;
pub mod transport;

pub use backend::{Backend, BackendKind, PUBLIC_KEY_LEN, SIGNATURE_LEN};

/// The outcome for one item of a verify batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Verdict {
    /// The signature is a valid ML-DSA-65 signature of the message under the key.
    Valid,
    /// Sizes were right but the signature does not verify.
    Invalid,
    /// Wrong key or signature length, or a key the backend cannot decode.
    Malformed,
    /// The item names a key id this daemon does not hold (never registered,
    /// or evicted): register the key again and re-submit the item.
    UnknownKey,
}
