//! One module per stage. Each exposes `run(&SuiteOpts) -> anyhow::Result<Outcome>`.

#[cfg(feature = "gossip")]
pub mod gossip;
#[cfg(feature = "ipc")]
pub mod ipc;
#[cfg(feature = "node")]
pub mod node;
#[cfg(feature = "transport")]
pub mod transport;
#[cfg(feature = "verify")]
pub mod verify;
