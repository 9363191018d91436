//! Receive-ACK settings with documented defaults, and the optional
//! ACK-frequency transport tuning.
//!
//! The defaults relate to each other; change them together:
//!
//! * a manual responder gets [`ReceiverConfig::admission_timeout`]
//!   (100 ms) — well inside the sender's first-attempt timeout, whose
//!   [`AttemptTimeout::allowance`] (150 ms) covers admission plus the
//!   response write, so a slow admission ends as an explicit
//!   `Backpressured`, not as a sender timeout;
//! * the receiver remembers an admitted id for twice the retry window its
//!   sender announced (the sender's remaining budget), at least
//!   [`ReceiverConfig::dedupe_floor`] (1 s) and at most
//!   [`ReceiverConfig::dedupe_ttl`] (60 s, twice the longest budget a
//!   sender accepts, [`SenderConfig::max_budget`], 30 s): every retry of an
//!   admitted request finds its cache entry, so no retry is ever admitted
//!   twice, while a DM with a 2 s budget holds its entry for 4 s, not a
//!   minute, so one peer's 8,192-entry share allows about 2,000 such sends
//!   a second rather than 136.

use std::time::Duration;

use quinn_proto::{AckFrequencyConfig, TransportConfig, VarInt};

/// Receiver settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// Longest an admitted request id is remembered, whatever retry window
    /// its sender announced. Default 60 s (twice the sender's maximum
    /// budget).
    pub dedupe_ttl: Duration,
    /// Shortest an admitted request id is remembered (covers network delay
    /// of copies with a tiny window). Default 1 s.
    pub dedupe_floor: Duration,
    /// Dedupe entries (admitted plus in admission) across all peers.
    /// Default 65,536.
    pub dedupe_entries: usize,
    /// Accounted bytes of the dedupe cache; the entry cap is the smaller of
    /// `dedupe_entries` and `dedupe_bytes / ENTRY_BYTES`. Default 16 MiB.
    pub dedupe_bytes: usize,
    /// Dedupe entries one peer may hold, so one busy or hostile peer cannot
    /// fill the cache for everyone. Default 8,192.
    pub dedupe_per_peer: usize,
    /// Requests in admission at once (waiting for the queue or a manual
    /// responder). Default 4,096.
    pub max_pending: usize,
    /// Further copies of one request id parked while its first copy is in
    /// admission; beyond this a copy is answered `Duplicate`. Default 4
    /// (a retry plus re-issues after connection replacements).
    pub max_parked: usize,
    /// Time a manual responder has to answer before `Backpressured` is sent
    /// for it. Default 100 ms.
    pub admission_timeout: Duration,
    /// Time a response write (23 bytes and FIN) may take before the stream
    /// is reset and the failure counted. Default 2 s: one RTT on a live
    /// connection, several lost packets on a 300 ms path.
    pub response_write_timeout: Duration,
    /// Responses being written at once; beyond this a request stream is
    /// reset instead of answered (counted). Default 8,192.
    pub max_responses: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            dedupe_ttl: Duration::from_secs(60),
            dedupe_floor: Duration::from_secs(1),
            dedupe_entries: 65_536,
            dedupe_bytes: 16 << 20,
            dedupe_per_peer: 8_192,
            max_pending: 4_096,
            max_parked: 4,
            admission_timeout: Duration::from_millis(100),
            response_write_timeout: Duration::from_secs(2),
            max_responses: 8_192,
        }
    }
}

/// How the first attempt's timeout follows the connection's RTT:
/// `clamp(srtt + max(4 × rttvar, 1 ms) + allowance, floor, ceiling)`
/// (RFC 6298's retransmission timeout plus the receiver's admission time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttemptTimeout {
    /// Lower bound. Default 200 ms: below it a retry races the first copy's
    /// own admission for nothing.
    pub floor: Duration,
    /// Upper bound. Default 10 s.
    pub ceiling: Duration,
    /// Receiver-side time on top of the path RTT: admission plus response
    /// write. Default 150 ms (see the module docs).
    pub allowance: Duration,
}

impl Default for AttemptTimeout {
    fn default() -> Self {
        Self {
            floor: Duration::from_millis(200),
            ceiling: Duration::from_secs(10),
            allowance: Duration::from_millis(150),
        }
    }
}

/// Sender settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderConfig {
    /// First-attempt timeout policy.
    pub attempt: AttemptTimeout,
    /// Longest budget a send may have; longer budgets are cut to this.
    /// Default 30 s (half the receiver's default dedupe TTL).
    pub max_budget: Duration,
    /// Re-issues on a new connection (after `Replaced` or a reconnect) per
    /// send. Default 3, so a flapping peer cannot loop a send.
    pub max_reissues: u8,
}

impl Default for SenderConfig {
    fn default() -> Self {
        Self {
            attempt: AttemptTimeout::default(),
            max_budget: Duration::from_secs(30),
            max_reissues: 3,
        }
    }
}

/// Stuck-connection detection settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StuckConfig {
    /// Consecutive ACK timeouts (no response of any kind in between) that
    /// make a live-looking connection "stuck". Default 3.
    pub threshold: u32,
}

impl Default for StuckConfig {
    fn default() -> Self {
        Self { threshold: 3 }
    }
}

/// IETF ACK-frequency tuning (draft-ietf-quic-ack-frequency) for the QUIC
/// connection. Transport-level only: it changes when QUIC acknowledges
/// packets, never what a receive-ACK `Accepted` means. Off unless set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckFrequency {
    /// Ack-eliciting packets the peer may receive before it must ACK; 0
    /// asks for an ACK on every ack-eliciting packet (immediate ACK).
    pub ack_eliciting_threshold: u32,
    /// Largest ACK delay requested from the peer; `None` keeps the peer's
    /// own `max_ack_delay` transport parameter.
    pub max_ack_delay: Option<Duration>,
    /// Out-of-order packets that trigger an immediate ACK; 0 disables.
    pub reordering_threshold: u32,
}

impl AckFrequency {
    /// ACK every ack-eliciting packet at once: the lowest ACK latency, at
    /// the cost of one ACK datagram per packet from the peer.
    pub const IMMEDIATE: Self = Self {
        ack_eliciting_threshold: 0,
        max_ack_delay: None,
        reordering_threshold: 1,
    };

    /// The quinn-proto config for this tuning.
    #[must_use]
    pub fn quinn_config(&self) -> AckFrequencyConfig {
        let mut c = AckFrequencyConfig::default();
        c.ack_eliciting_threshold(VarInt::from_u32(self.ack_eliciting_threshold))
            .max_ack_delay(self.max_ack_delay)
            .reordering_threshold(VarInt::from_u32(self.reordering_threshold));
        c
    }

    /// Applies `tuning` to a transport config: `None` leaves it untouched
    /// (ACK-frequency off, quinn-proto's default).
    pub fn apply(tuning: Option<&Self>, transport: &mut TransportConfig) {
        if let Some(t) = tuning {
            transport.ack_frequency_config(Some(t.quinn_config()));
        }
    }
}

/// All receive-ACK settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckConfig {
    /// Receiver side.
    pub receiver: ReceiverConfig,
    /// Sender side.
    pub sender: SenderConfig,
    /// Stuck-connection detection.
    pub stuck: StuckConfig,
    /// Optional ACK-frequency tuning; `None` by default.
    pub ack_frequency: Option<AckFrequency>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R3, R4: the defaults keep every retry inside the dedupe window and a
    /// manual admission inside the sender's first attempt.
    #[test]
    fn defaults_are_consistent() {
        let c = AckConfig::default();
        assert!(c.sender.max_budget < c.receiver.dedupe_ttl);
        assert!(c.receiver.admission_timeout < c.sender.attempt.allowance);
        assert!(c.sender.attempt.allowance < c.sender.attempt.floor);
        assert!(c.receiver.max_parked > usize::from(c.sender.max_reissues));
    }

    /// R8: ACK-frequency is off by default and, when set, lands in the
    /// transport config (quinn-proto exposes no getter, so the Debug output
    /// is compared).
    #[test]
    fn ack_frequency_off_by_default_and_applies() {
        assert_eq!(AckConfig::default().ack_frequency, None);
        let base = format!("{:?}", TransportConfig::default());
        let mut t = TransportConfig::default();
        AckFrequency::apply(None, &mut t);
        assert_eq!(format!("{t:?}"), base);
        AckFrequency::apply(Some(&AckFrequency::IMMEDIATE), &mut t);
        let tuned = format!("{t:?}");
        assert_ne!(tuned, base);
        assert!(tuned.contains("ack_frequency_config: Some("), "{tuned}");
        assert!(tuned.contains("ack_eliciting_threshold: 0"), "{tuned}");
    }
}
