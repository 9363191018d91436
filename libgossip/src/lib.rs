//! `libgossip`: sans-IO gossip protocol core (HyParView membership + PlumTree
//! broadcast), behind the `sim` feature a deterministic simulator, and behind
//! the `runtime` feature an async driver over real libtransport connections.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod proto;
pub mod wire;

#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "sim")]
pub mod sim;
