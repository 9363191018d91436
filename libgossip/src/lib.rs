//! `libgossip`: sans-IO gossip protocol core (HyParView membership + PlumTree
//! broadcast) and, behind the `sim` feature, a deterministic simulator.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod proto;
pub mod wire;

#[cfg(feature = "sim")]
pub mod sim;
