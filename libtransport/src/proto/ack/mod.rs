//! Receive-ACKed delivery, sans-IO: the wire format, the receiver's
//! admission and dedupe, one send's attempts and retry, RTT-derived
//! timeouts, stuck-connection detection and telemetry. No tokio, no clock:
//! every input carries `now`, every output is plain data the driver
//! executes. The protocol and its decisions are in
//! `docs/adr/0037-receive-ack.md`.
//!
//! * [`wire`] — request/response encoding, checked parsing.
//! * [`Receiver`] — admission contract, manual responders, dedupe cache,
//!   bounded response writes.
//! * [`AckSend`] — one send: first attempt, one duplicate-safe retry,
//!   re-issue after `Replaced`, the caller's budget.
//! * [`RttEstimator`] — per-connection RTT estimate for attempt timeouts.
//! * [`StuckDetector`] — N consecutive ACK timeouts on a live-looking
//!   connection → [`Reconnect`].
//! * [`SenderStats`], [`ReceiverStats`], [`AckSnapshot`] — counters and
//!   per-stage latency histograms.
//! * [`AckConfig`] — settings, and the optional [`AckFrequency`] tuning.

mod config;
mod dedupe;
mod receiver;
mod rtt;
mod sender;
mod stuck;
mod telemetry;
pub mod wire;

#[cfg(test)]
mod sim_tests;

pub use config::{
    AckConfig, AckFrequency, AttemptTimeout, ReceiverConfig, SenderConfig, StuckConfig,
};
pub use dedupe::ENTRY_BYTES;
pub use receiver::{
    Admission, Admit, BUSY_CODE, Output, RESPONSE_TIMEOUT_CODE, Receiver, ResolveError, Ticket,
};
pub use rtt::RttEstimator;
pub use sender::{AckError, AckSend, Attempt, AttemptFailure, Cause, Delivered, Link, Step};
pub use stuck::{Reconnect, ReconnectReason, StuckDetector};
pub use telemetry::{
    AckSnapshot, Latency, ReceiverCounters, ReceiverStats, SenderCounters, SenderStats,
    StageSnapshot, StagesSnapshot,
};
pub use wire::{
    AckWireError, Outcome, PayloadHash, REQUEST_HEADER_LEN, RESPONSE_LEN, Request, RequestHeader,
    RequestId, Response,
};
