//! Stuck-connection detection: a connection that still looks live (open,
//! no idle timeout) but answers no receive-ACK request, as when one
//! direction of the path is black-holed while the other still carries the
//! peer's packets (so QUIC's own liveness checks stay happy).
//!
//! Every ACK response of any outcome proves both directions work and resets
//! the count; `threshold` consecutive ACK timeouts on the same connection
//! yield one [`Reconnect`] decision (latched: one per connection).

use std::time::Instant;

use super::config::StuckConfig;
use crate::identity::PeerId;

/// Why a connection should be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum ReconnectReason {
    /// Consecutive receive-ACK timeouts on a connection that looked live.
    AckTimeouts {
        /// Timeouts in a row.
        consecutive: u32,
    },
}

/// A decision to reconnect: close this connection and dial the peer again.
/// Also the payload of the lifecycle event that reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reconnect {
    /// The peer.
    pub peer: PeerId,
    /// Generation of the stuck connection.
    pub generation: u64,
    /// Why.
    pub reason: ReconnectReason,
    /// Time from the first of the timeouts to the decision, in ms.
    pub stuck_for_ms: u64,
}

/// Per-connection detector.
#[derive(Clone, Debug)]
pub struct StuckDetector {
    cfg: StuckConfig,
    peer: PeerId,
    generation: u64,
    consecutive: u32,
    first: Option<Instant>,
    fired: bool,
}

impl StuckDetector {
    /// A detector for the connection `generation` to `peer`.
    #[must_use]
    pub fn new(cfg: StuckConfig, peer: PeerId, generation: u64) -> Self {
        Self {
            cfg,
            peer,
            generation,
            consecutive: 0,
            first: None,
            fired: false,
        }
    }

    /// A receive-ACK response arrived on this connection (any outcome).
    pub fn on_response(&mut self) {
        self.consecutive = 0;
        self.first = None;
    }

    /// A receive-ACK attempt on this connection timed out. `looks_live`:
    /// the connection is open and not draining. Returns the reconnect
    /// decision the first time the threshold is reached.
    pub fn on_ack_timeout(&mut self, looks_live: bool, now: Instant) -> Option<Reconnect> {
        if !looks_live || self.fired {
            return None;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let first = *self.first.get_or_insert(now);
        if self.consecutive < self.cfg.threshold.max(1) {
            return None;
        }
        self.fired = true;
        tracing::warn!(peer = %self.peer.short(), generation = self.generation,
            consecutive = self.consecutive, "receive-ACK: connection looks live but is stuck");
        Some(Reconnect {
            peer: self.peer,
            generation: self.generation,
            reason: ReconnectReason::AckTimeouts {
                consecutive: self.consecutive,
            },
            stuck_for_ms: u64::try_from(now.duration_since(first).as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Timeouts in a row so far.
    #[must_use]
    pub fn consecutive(&self) -> u32 {
        self.consecutive
    }

    /// Whether this connection already got its reconnect decision.
    #[must_use]
    pub fn fired(&self) -> bool {
        self.fired
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own the clock
mod tests {
    use super::*;
    use std::time::Duration;

    /// R6: N consecutive timeouts on a live connection give exactly one
    /// reconnect decision with its reason; a response in between resets the
    /// count; timeouts on a connection that no longer looks live do not count.
    #[test]
    fn consecutive_timeouts_force_one_reconnect() {
        let t0 = Instant::now();
        let mut d = StuckDetector::new(StuckConfig { threshold: 3 }, PeerId([4; 32]), 7);
        assert_eq!(d.on_ack_timeout(true, t0), None);
        assert_eq!(d.on_ack_timeout(true, t0), None);
        d.on_response();
        assert_eq!(d.consecutive(), 0);
        assert_eq!(d.on_ack_timeout(false, t0), None, "closing connection");
        assert_eq!(d.consecutive(), 0);
        assert_eq!(d.on_ack_timeout(true, t0), None);
        assert_eq!(d.on_ack_timeout(true, t0 + Duration::from_secs(1)), None);
        let r = d.on_ack_timeout(true, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(
            r,
            Reconnect {
                peer: PeerId([4; 32]),
                generation: 7,
                reason: ReconnectReason::AckTimeouts { consecutive: 3 },
                stuck_for_ms: 2000,
            }
        );
        assert!(d.fired());
        assert_eq!(d.on_ack_timeout(true, t0 + Duration::from_secs(3)), None);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"AckTimeouts\""), "{json}");
    }
}
