//! Receive-ACK telemetry: lifecycle counters for both sides and per-stage
//! latency histograms (HdrHistogram, 1 µs to 60 s at two significant
//! digits, about 20 KiB each), reported as p50/p95/p99 in a serde snapshot.
//!
//! Stages: the sender's `open` (stream opened), `write` (request written),
//! `finish` (FIN sent) and `response_read` (FIN sent → response read); the
//! receiver's `admission` (request decoded → admitted or refused) and
//! `response_write` (response queued → written and finished).

use std::hash::Hash;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::receiver::Receiver;

use super::sender::{AckError, Cause, Step};
use super::wire::Outcome;

/// Largest latency a histogram records exactly (larger ones saturate).
const MAX_US: u64 = 60_000_000;

/// One latency distribution.
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Constant, valid bounds (low ≥ 1, high ≥ 2 × low, 2 significant
        // digits ≤ 5): construction cannot fail.
        #[allow(clippy::expect_used)]
        let h = Histogram::new_with_bounds(1, MAX_US, 2).expect("valid constant histogram bounds");
        Self(h)
    }
}

impl Latency {
    /// Records one sample (µs resolution, saturating at 60 s).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        self.0.saturating_record(us.min(MAX_US));
    }

    /// Summary.
    #[must_use]
    pub fn snapshot(&self) -> StageSnapshot {
        let q = |p: f64| {
            if self.0.is_empty() {
                0
            } else {
                self.0.value_at_quantile(p)
            }
        };
        StageSnapshot {
            count: self.0.len(),
            p50_us: q(0.50),
            p95_us: q(0.95),
            p99_us: q(0.99),
            max_us: if self.0.is_empty() { 0 } else { self.0.max() },
        }
    }
}

/// Quantiles of one stage, in µs (HdrHistogram bucket values: within 1 %).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StageSnapshot {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

/// Sender lifecycle counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SenderCounters {
    /// Sends started.
    pub registered: u64,
    /// Sends that ended `Accepted`.
    pub accepted: u64,
    /// Of those, answered from the receiver's dedupe cache (an earlier copy
    /// had been admitted).
    pub accepted_replayed: u64,
    /// Sends that ended with a receiver rejection (`Backpressured`,
    /// `ConsumerGone`, `Conflict`, `Duplicate`).
    pub rejected: u64,
    /// Of those, `Backpressured`.
    pub rejected_backpressured: u64,
    /// Sends with no outcome within their budget.
    pub timed_out: u64,
    /// Sends that ended without a connection (lost, none to re-issue on).
    pub closed: u64,
    /// Sends that ended on a malformed or mismatched response or a reset.
    pub failed: u64,
    /// Duplicate-safe retries after a first-attempt timeout.
    pub retries: u64,
    /// Re-issues on a new connection.
    pub reissues: u64,
    /// Stuck-connection reconnect decisions.
    pub stuck_reconnects: u64,
}

/// Receiver lifecycle counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReceiverCounters {
    /// Requests decoded.
    pub decoded: u64,
    /// Requests refused as malformed before decoding finished.
    pub malformed: u64,
    /// Requests admitted (each payload once).
    pub admitted: u64,
    /// Copies answered with anything but `Accepted`.
    pub rejected: u64,
    /// Requests refused `Backpressured`: the queue was full, admission
    /// expired, or one of the two limits below.
    pub backpressured: u64,
    /// Requests refused `ConsumerGone`.
    pub consumer_gone: u64,
    /// Copies answered `Conflict` (same id, other payload).
    pub conflicts: u64,
    /// Copies beyond the parking limit, answered `Duplicate`.
    pub duplicates_dropped: u64,
    /// Requests refused because the dedupe cache or the peer's share of it
    /// was full.
    pub dedupe_full: u64,
    /// Requests refused because too many were in admission.
    pub pending_full: u64,
    /// Manual admissions that missed their deadline (answered
    /// `Backpressured`).
    pub admission_expired: u64,
    /// Retries answered `Accepted` from the dedupe cache (not re-admitted).
    pub replayed: u64,
    /// Copies parked behind a copy in admission.
    pub parked: u64,
    /// Responses written and finished.
    pub response_written: u64,
    /// Responses whose write failed (stream reset, connection gone).
    pub response_failed: u64,
    /// Responses reset for missing their write deadline (also in
    /// `response_failed`).
    pub response_timed_out: u64,
    /// Dedupe entries expired.
    pub dedupe_expired: u64,
}

/// Sender-side statistics: the driver owns one per endpoint and feeds it
/// every [`Step`] its sends produce.
#[derive(Clone, Debug, Default)]
pub struct SenderStats {
    /// Counters.
    pub counters: SenderCounters,
    /// Stream open latency.
    pub open: Latency,
    /// Request write latency.
    pub write: Latency,
    /// Finish latency.
    pub finish: Latency,
    /// FIN sent → response read.
    pub response_read: Latency,
}

impl SenderStats {
    /// A send started.
    pub fn on_registered(&mut self) {
        self.counters.registered += 1;
    }

    /// Counts what a send's step means.
    pub fn observe(&mut self, step: &Step) {
        let c = &mut self.counters;
        match step {
            Step::Issue(a) => match a.cause {
                Cause::First => {}
                Cause::TimedOut { .. } | Cause::AfterFailure => c.retries += 1,
                Cause::Reissue => c.reissues += 1,
            },
            Step::Done(Ok(d)) => {
                c.accepted += 1;
                c.accepted_replayed += u64::from(d.replayed);
            }
            Step::Done(Err(e)) => match e {
                AckError::Rejected { outcome, .. } => {
                    c.rejected += 1;
                    c.rejected_backpressured += u64::from(*outcome == Outcome::Backpressured);
                }
                AckError::TimedOut { .. } => c.timed_out += 1,
                AckError::ConnectionLost { .. } => c.closed += 1,
                AckError::Malformed(_) | AckError::WrongId | AckError::Reset { .. } => {
                    c.failed += 1;
                }
            },
            Step::Wait | Step::NeedConnection => {}
        }
    }

    /// A stuck-connection reconnect was decided.
    pub fn on_stuck(&mut self) {
        self.counters.stuck_reconnects += 1;
    }
}

/// Receiver-side statistics (owned by the [`Receiver`](super::Receiver)).
#[derive(Clone, Debug, Default)]
pub struct ReceiverStats {
    /// Counters.
    pub counters: ReceiverCounters,
    /// Decode → admission decision.
    pub admission: Latency,
    /// Response queued → written.
    pub response_write: Latency,
}

/// Per-stage quantiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StagesSnapshot {
    /// Sender: stream open.
    pub open: StageSnapshot,
    /// Sender: request write.
    pub write: StageSnapshot,
    /// Sender: finish.
    pub finish: StageSnapshot,
    /// Receiver: admission.
    pub admission: StageSnapshot,
    /// Receiver: response write.
    pub response_write: StageSnapshot,
    /// Sender: response read.
    pub response_read: StageSnapshot,
}

/// The receive-ACK part of the diagnostics snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AckSnapshot {
    /// Sender counters.
    pub sender: SenderCounters,
    /// Receiver counters.
    pub receiver: ReceiverCounters,
    /// Per-stage latency quantiles.
    pub stages: StagesSnapshot,
    /// Admitted ids remembered now.
    pub dedupe_entries: usize,
    /// Accounted bytes of the dedupe cache now.
    pub dedupe_bytes: usize,
    /// Requests in admission now.
    pub pending: usize,
}

impl AckSnapshot {
    /// Joins the sender's statistics with the receiver's, including its
    /// dedupe and admission occupancy.
    #[must_use]
    pub fn new<S: Copy + Eq + Hash>(sender: &SenderStats, rx: &Receiver<S>) -> Self {
        let receiver = rx.stats();
        Self {
            sender: sender.counters,
            receiver: receiver.counters,
            stages: StagesSnapshot {
                open: sender.open.snapshot(),
                write: sender.write.snapshot(),
                finish: sender.finish.snapshot(),
                admission: receiver.admission.snapshot(),
                response_write: receiver.response_write.snapshot(),
                response_read: sender.response_read.snapshot(),
            },
            dedupe_entries: rx.dedupe_len(),
            dedupe_bytes: rx.dedupe_bytes(),
            pending: rx.pending(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests own the clock
mod tests {
    use super::*;

    /// R7: quantiles come out of the histogram within its 1 % precision,
    /// empty stages report zeros, and the snapshot serialises with every
    /// stage by name.
    #[test]
    fn quantiles_and_snapshot() {
        let mut l = Latency::default();
        assert_eq!(l.snapshot(), StageSnapshot::default());
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.snapshot();
        assert_eq!(s.count, 1000);
        let near = |got: u64, want: u64| got.abs_diff(want) * 100 <= want;
        assert!(near(s.p50_us, 500), "{s:?}");
        assert!(near(s.p95_us, 950), "{s:?}");
        assert!(near(s.p99_us, 990), "{s:?}");
        assert!(near(s.max_us, 1000), "{s:?}");
        l.record(Duration::from_secs(3600));
        assert!(near(l.snapshot().max_us, MAX_US));

        let mut tx = SenderStats::default();
        tx.on_registered();
        tx.response_read.record(Duration::from_millis(3));
        let mut rx = Receiver::<u32>::new(super::super::ReceiverConfig::default());
        let req = super::super::Request::new(
            crate::Kind::DM,
            super::super::RequestId([1; 16]),
            b"x",
            false,
        )
        .unwrap();
        let now = std::time::Instant::now();
        let _ = rx.handle_request(crate::PeerId([1; 32]), 1, req.header(), now);
        let snap = AckSnapshot::new(&tx, &rx);
        assert_eq!(snap.sender.registered, 1);
        assert_eq!((snap.pending, snap.receiver.decoded), (1, 1));
        assert_eq!(
            snap.dedupe_bytes,
            crate::proto::ack::ENTRY_BYTES,
            "the reservation"
        );
        assert_eq!(snap.stages.response_read.count, 1);
        let json = serde_json::to_value(snap).unwrap();
        for stage in [
            "open",
            "write",
            "finish",
            "admission",
            "response_write",
            "response_read",
        ] {
            assert!(json["stages"][stage]["p99_us"].is_u64(), "{stage}");
        }
        assert!(json["receiver"]["response_failed"].is_u64());
    }
}
