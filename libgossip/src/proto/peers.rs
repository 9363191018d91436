//! Per-peer failure detection for membership.
//!
//! Timeouts and their RTT-derived limits, scores and cooling live in
//! [`super::health`]; this table only decides when a peer is *gone* (connection
//! failed, or a long run of timeouts) so HyParView replaces it from the
//! passive view. A slow-but-alive peer is cooled long before it counts as dead.

use super::output::SendOutcome;
use super::types::PeerId;
use std::collections::HashMap;
use std::time::Instant;

/// Timeouts in a row after which a peer counts as failed for membership.
pub(crate) const FAIL_AFTER_TIMEOUTS: u32 = 8;

#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    /// Consecutive timeouts per peer (bounded by the views: see `retain`).
    map: HashMap<PeerId, u32>,
    /// Send outcomes seen, by result.
    pub ok: u64,
    pub timeouts: u64,
    pub failures: u64,
}

/// What a send outcome means for membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LinkVerdict {
    Fine,
    Slow,
    Dead,
}

impl PeerTable {
    pub(crate) fn on_outcome(&mut self, p: PeerId, o: SendOutcome, _now: Instant) -> LinkVerdict {
        match o {
            SendOutcome::Delivered { .. } => {
                self.ok += 1;
                self.map.remove(&p);
                LinkVerdict::Fine
            }
            SendOutcome::TimedOut => {
                self.timeouts += 1;
                let c = self.map.entry(p).or_insert(0);
                *c += 1;
                if *c >= FAIL_AFTER_TIMEOUTS {
                    LinkVerdict::Dead
                } else {
                    LinkVerdict::Slow
                }
            }
            SendOutcome::Failed => {
                self.failures += 1;
                self.map.remove(&p);
                LinkVerdict::Dead
            }
        }
    }

    /// Forgets peers `keep` rejects (bounds the table by the views).
    pub(crate) fn retain(&mut self, keep: impl Fn(&PeerId) -> bool) {
        self.map.retain(|p, _| keep(p));
    }
}
