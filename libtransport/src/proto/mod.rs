//! The sans-IO protocol layer: state machines that take inputs and `now`
//! and return outputs. Builds without the `runtime` feature (no tokio, no
//! sockets, no clock).

// Router streams: header, length prefix, reassembly.
pub mod stream;

// The identity proof exchange after the TLS handshake.
pub mod proof;

// Two quinn-proto endpoints on a virtual clock, for unit tests.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a test harness: setup failures panic
mod pair;

// Reliable delivery — receive-ACK, repair dials, scavenger probes.
pub mod ack;
pub mod probe;
pub mod repair;
