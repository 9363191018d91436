//! Peer health: who is worth sending to, and how much.
//!
//! Sans-IO building blocks the protocol core composes; none of them reads a
//! clock, spawns or owns sockets. Every input carries `now`, every output is
//! plain data the core applies.
//!
//! * [`score`] — a decayed per-peer score (gossipsub v1.1 in spirit) with its
//!   components exposed, and [`rtt`] — the RTT-derived per-peer send timeout.
//! * [`cooling`] — per (peer, topic) suppression after repeated timeouts,
//!   single-probe recovery with capped exponential backoff, GRAFT backoff.
//! * [`budget`] — a per-peer outbound window shared by EAGER, IHAVE, IWANT and
//!   anti-entropy, so one blocked peer can hold only its window in flight.
//! * [`cleanup`] — the adaptive cadence (10–120 s) of cooling cleanup.
//! * [`mesh`] — scored eager-set maintenance within `[D_low, D_high]`.
//! * [`snapshot`] — a consistent, cheaply cloned diagnostics snapshot and the
//!   copy-on-write cell that publishes it.
//! * [`PeerHealth`] — all of the above behind one small API, for the core.
//!
//! The model, parameters and their reasons are in
//! `docs/adr/0045-peer-health.md` and `docs/gossip-health.md`.

pub mod budget;
pub mod cleanup;
pub mod cooling;
pub mod mesh;
pub mod rtt;
pub mod score;
pub mod snapshot;

mod facade;

pub use facade::{HealthParams, PeerHealth, SendDecision, SendTicket};

use std::time::Duration;

/// The outcome of one send, reported by the driver (maps one-to-one from the
/// core's `proto::SendOutcome`: `Delivered`, `TimedOut`, `Failed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// The send completed after `latency`.
    Ok {
        /// Time from start of send to completion.
        latency: Duration,
    },
    /// The send hit its RTT-derived timeout.
    Timeout,
    /// The peer was unreachable (connection refused or closed). Membership
    /// deals with that; it is not evidence of slowness, so it neither cools
    /// nor changes the window, except that a failed probe is a failed probe.
    Failed,
}

/// Proof that a peer just did something whose signature verified.
///
/// Only verified inbound activity may reset cooling or earn the recency
/// bonus. This token is the only way to tell [`cooling::CoolingTable`] and
/// [`PeerHealth`] about it, and it can only be built inside this crate —
/// by the core, in the code path that handles a Valid verdict. A handler of
/// an unsigned frame (IHAVE, IWANT, control) has no way to produce one, and
/// code outside the crate cannot forge one:
///
/// ```compile_fail
/// use libgossip::proto::health::VerifiedActivity;
/// let _forged: VerifiedActivity<u32, u32> = VerifiedActivity::after_valid_verdict(1, 2);
/// ```
///
/// It is neither `Clone` nor `Copy`: one verdict, one token.
#[derive(Debug, PartialEq, Eq)]
pub struct VerifiedActivity<P, T> {
    peer: P,
    topic: T,
}

impl<P: Copy, T: Copy> VerifiedActivity<P, T> {
    /// Build the token for `peer` (the neighbour that sent us the message)
    /// on `topic`. Call only where a Valid signature verdict is handled.
    #[allow(dead_code)] // The core's verdict path is the (only) caller.
    pub(crate) fn after_valid_verdict(peer: P, topic: T) -> Self {
        Self { peer, topic }
    }

    /// The peer whose activity verified.
    pub fn peer(&self) -> P {
        self.peer
    }

    /// The topic it verified on.
    pub fn topic(&self) -> T {
        self.topic
    }
}
