//! The relay session between relayd and gossipd (`tern.relay`), and the
//! delivery contract that makes "an `Accepted` DM is never lost" hold
//! across a gossipd crash. Design: `docs/adr/0060-relay-ipc.md`; wire
//! format: `docs/protocols/relay.md`.
//!
//! A session is one Unix stream connection from gossipd to relayd's relay
//! socket:
//!
//! 1. the hello ([`hello_config`]; protocol [`PROTOCOL`], roles `Relayd`
//!    and `Gossipd` only, both offering `ShmRing` with a ring capacity);
//! 2. the data channel ([`channel::serve`] / [`channel::attach`]): a
//!    socketpair passed over the connection, and two shared-memory rings
//!    set up over it — inbound records (relayd → gossipd) and outbound
//!    sends (gossipd → relayd), each record one `RelayFrame`;
//! 3. control frames on the connection itself: `PeerEvent`, `SendResult`
//!    (relayd → gossipd) and `Consumed` (gossipd → relayd).
//!
//! The delivery contract, in sans-IO halves:
//!
//! * relayd's [`Retainer`]: a receive-ACKed DM is answered `Accepted` only
//!   once its record is in the inbound ring; it is kept (bounded, counted)
//!   until gossipd's `Consumed` names its `seq`, and re-sent, marked
//!   `redelivered`, to every gossipd that attaches before that.
//! * gossipd's [`Intake`]: removes duplicates by DM id and confirms a
//!   `seq` only when the application has the DM.

pub mod channel;
pub mod intake;
pub mod record;
pub mod retain;

pub use channel::{ChannelError, GossipdRings, RelaydRings};
pub use intake::{Intake, IntakeConfig, IntakeStats, Offer};
pub use record::{InboundRecord, MAX_CONSUMED_PER_FRAME, OutboundSend, encode_consumed};
pub use retain::{Refused, RetainConfig, RetainStats, Retainer};

use crate::generated::hello::{Capability, Role};
use crate::hello::HelloConfig;

/// The protocol name in the hello.
pub const PROTOCOL: &str = "tern.relay";

/// Highest relay protocol version this build speaks.
pub const VERSION: u16 = 1;

/// The hello for `role` (`Relayd` or `Gossipd`): accepts only the other
/// of the two, offers `ShmRing` with `ring_capacity` bytes per direction
/// (the data channel needs it) and `Batching`.
#[must_use]
pub fn hello_config(role: Role, ring_capacity: u32, instance: u64) -> HelloConfig {
    let peer = if role == Role::Relayd {
        Role::Gossipd
    } else {
        Role::Relayd
    };
    HelloConfig::new(PROTOCOL, role)
        .versions(1, VERSION)
        .capabilities(Capability::ShmRing | Capability::Batching)
        .ring_capacity(ring_capacity)
        .instance(instance)
        .allow_peer_roles(&[peer])
}
