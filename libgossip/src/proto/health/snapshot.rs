//! Diagnostics snapshot of peer health.
//!
//! A [`HealthSnapshot`] is built in full from the live tables on request and
//! becomes part of the node's [`Snapshot`](crate::proto::Snapshot); the
//! driver publishes that whole value (see [`DiagHandle`](crate::proto::DiagHandle)),
//! so readers never see a half-built table.

use std::time::{Duration, Instant};

use super::budget::{BudgetCounters, BudgetView};
use super::cooling::{CoolingCounters, SuppressedPeer};
use super::score::{ScoreComponents, ScoreCounters};

/// One peer's health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeerHealthView<P> {
    /// Peer.
    pub peer: P,
    /// Score and its components (incl. RTT and current send timeout).
    pub score: ScoreComponents,
    /// Outbound window and in-flight sends, if the peer has a budget entry.
    pub budget: Option<BudgetView>,
}

/// A complete picture of the health tables at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSnapshot<P, T> {
    /// When it was taken.
    pub at: Instant,
    /// Scored peers, sorted by peer id.
    pub peers: Vec<PeerHealthView<P>>,
    /// Suppressed / probing pairs, with reason, until, backoff and probe
    /// state, sorted by (peer, topic).
    pub suppressed: Vec<SuppressedPeer<P, T>>,
    /// Pairs held back right now (excludes those whose probe is due).
    pub suppressed_now: usize,
    /// Cooling counters.
    pub cooling: CoolingCounters,
    /// Budget counters by kind.
    pub budget: BudgetCounters,
    /// Score-book counters.
    pub score: ScoreCounters,
    /// Current cooling-cleanup interval.
    pub cleanup_interval: Duration,
    /// Cleanup runs so far.
    pub cleanup_runs: u64,
}
