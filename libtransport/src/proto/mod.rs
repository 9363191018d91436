//! The sans-IO protocol layer: state machines that take inputs and `now`
//! and return outputs. Builds without the `runtime` feature (no tokio, no
//! sockets, no clock).

// Router streams: header, length prefix, reassembly.
pub mod stream;

// The identity proof exchange after the TLS handshake.
pub mod proof;

// Reliable delivery — receive-ACK, repair dials, scavenger probes.
pub mod ack;
pub mod probe;
pub mod repair;
