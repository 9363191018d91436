//! `relayd`: the daemon that owns a node's UDP sockets and QUIC
//! connections and feeds gossipd over the relay IPC.
//!
//! This crate is, for now, the daemon's sans-IO library part, everything
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
//! The binary (endpoint, ring to gossipd, admin socket) builds on these.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod kind;
pub mod pressure;
pub mod pump;

pub use kind::{Stream, UnknownKind};
pub use pressure::{Level, PressureConfig, PressureMonitor, PressureSignal, Signals};
pub use pump::{KindLimits, KindStats, Overflow, Popped, PumpConfig, Push, RecvPump, Rejection};
