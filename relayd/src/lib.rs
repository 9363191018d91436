//! `relayd`: the daemon that owns a node's UDP sockets, QUIC connections
//! and identity, and feeds gossipd over the relay IPC (ADR 0060).
//!
//! The crate has two halves. This library is the sans-IO part, everything
//! that decides without doing I/O:
//!
//! * [`kind`] — the one mapping between libtransport's stream kind bytes
//!   and the relay protocol's `StreamKind` ([`Stream`]).
//! * [`pump`] — the recv pump: per-kind bounded queues with reserved
//!   capacity; pubsub overflow is dropped and counted, urgent kinds push
//!   back on their own stream only ([`RecvPump`]).
//! * [`pressure`] — INFO above 50 %, WARN above 80 %, time-rate-limited,
//!   firing on any jump past a threshold ([`PressureMonitor`]).
//!
//! The `relayd` binary (`src/main.rs`, `src/daemon/`) does the I/O on
//! top of them: it loads the node config's `[relayd]` section
//! (`docs/config.md`) and the identity key file, binds the libtransport
//! endpoint, and serves the relay socket (one gossipd at a time; data on
//! the shared-memory rings of `wire::relay`, `Consumed`/`SendResult`/
//! `PeerEvent` on the control socket) and the admin socket (`status`,
//! `diagnostics`) on `server-core`. Its delivery contract, capability by
//! capability:
//!
//! * **P2** — every message a peer sends on a forwarded kind reaches the
//!   attached gossipd through the pump and the inbound ring; gossipd's
//!   outbound records become endpoint sends, acknowledged ones answered
//!   with a `SendResult`.
//! * **P3** — a receive-ACKed DM is answered `Accepted` only once its
//!   record is in the inbound ring, and retained (bounded) until gossipd's
//!   `Consumed`; a gossipd that attaches later gets what is held again,
//!   flagged `redelivered`. With no gossipd the answer is `ConsumerGone`.
//! * **P4** — pubsub overflow is dropped and counted; the transport never
//!   waits for gossipd.
//! * **P5** — connection events reach gossipd as `PeerEvent` frames.
//! * **R1** — every queue, map and connection is bounded, every drop and
//!   refusal counted and shown in `diagnostics`; hostile input on either
//!   socket is contained by server-core's deadlines and caps.
//! * **R3** — duplicates of a held DM are not admitted twice; gossipd
//!   removes redeliveries by id.
//!
//! The binary's tests (`tests/daemon.rs`) spawn it and drive it over its
//! real sockets and real UDP.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod kind;
pub mod pressure;
pub mod pump;

pub use kind::{Stream, UnknownKind};
pub use pressure::{Level, PressureConfig, PressureMonitor, PressureSignal, Signals};
pub use pump::{KindLimits, KindStats, Overflow, Popped, PumpConfig, Push, RecvPump, Rejection};
