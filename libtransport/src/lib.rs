//! `libtransport`: QUIC for Tern over our own `quinn-proto` driver.
//!
//! * [`io`] — the I/O backend seam ([`io::Socket`]) and backends.
//! * [`identity`] — ML-DSA-65 identity, `PeerId`, the exporter-bound proof.
//! * [`keyfile`] — the identity as an owner-only key file (save/load).
//! * [`tls`] — rustls (aws-lc-rs, X25519MLKEM768) configuration.
//! * [`manager`] — sans-IO connection policy (one connection per peer).
//! * [`kind`] — stream kinds, priorities, header and message framing.
//! * [`Endpoint`] — the driver task and the handles applications use.
//! * [`diag`] — serde diagnostics snapshot.
//! * [`proto`] — sans-IO reliable delivery: receive-ACK, repair dials,
//!   scavenger probes.
//! * [`resolve`] — address lookup: resolvers queried in parallel.
//!
//! Features: `runtime` (default) — the tokio driver, endpoint and I/O
//! backends; without it only the sans-IO parts build. `uring` — the
//! io_uring backend (Linux). `test-util` — test helpers kept out of
//! production builds: the in-process `io::mem` network and
//! `Endpoint::withhold_proof_for_tests`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), libtransport::Error> {
//! use libtransport::{Config, Endpoint, Identity, Kind, KindConfig};
//! let ep = Endpoint::bind("127.0.0.1:0".parse().unwrap(), Identity::generate()?, Config::default())?;
//! let mut dms = ep.register(Kind::DM, KindConfig::default())?;
//! while let Some(m) = dms.recv().await {
//!     println!("{} says {:?}", m.peer.short(), m.data);
//! }
//! # Ok(()) }
//! ```
// No unsafe anywhere, except the io_uring backend (feature `uring`), which
// opts in at its module with `allow(unsafe_code)` and `// SAFETY:` comments.
#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(not(feature = "uring"), forbid(unsafe_code))]
#![cfg_attr(feature = "uring", deny(unsafe_code))]

pub mod config;
#[cfg(feature = "runtime")]
pub mod diag;
#[cfg(feature = "runtime")]
pub mod endpoint;
pub mod identity;
#[cfg(feature = "runtime")]
pub mod io;
pub mod keyfile;
pub mod kind;
pub mod manager;
pub mod proto;
#[cfg(feature = "runtime")]
pub mod resolve;
pub mod tls;

pub use bytes::Bytes;
pub use config::Config;
#[cfg(feature = "runtime")]
pub use endpoint::{
    BiStream, CloseReason, Connection, Endpoint, Error, Event, KindReceiver, ManualReceiver,
    ManualRequest, MessageReceived, PathStats, ProbeError, RecvStream, Responder, SendStream,
    WeakConnection,
};
pub use identity::{Identity, PeerId};
pub use keyfile::KeyFileError;
pub use kind::{Kind, KindConfig, Overflow};
/// The QUIC state machine this crate drives, re-exported because its types
/// are in this API (`tls::configs`, the source of `Error::Connect`), so a
/// caller names them at the same version.
pub use quinn_proto;
