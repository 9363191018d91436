//! Run metrics.

use std::time::Duration;

/// Percentiles of a sample set.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dist {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
    /// Minimum.
    pub min: f64,
    /// Mean.
    pub mean: f64,
}

impl Dist {
    /// Percentiles of `v` (sorted in place).
    pub fn of(v: &mut [f64]) -> Self {
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[(((v.len() - 1) as f64) * q).round() as usize];
        Self {
            p50: at(0.5),
            p99: at(0.99),
            max: v[v.len() - 1],
            min: v[0],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// Metrics of one round (messages published in it).
#[derive(Clone, Debug, Default)]
pub struct RoundReport {
    /// Round index.
    pub round: usize,
    /// Messages published.
    pub messages: usize,
    /// Deliveries made / expected.
    pub delivery_ratio: f64,
    /// Expected deliveries that did not happen.
    pub missed: u64,
    /// Relative message redundancy: payload receptions / needed − 1.
    pub rmr: f64,
    /// Last delivery hop (max).
    pub ldh: u16,
    /// Deliveries made (first copies to nodes other than the origin).
    pub deliveries: u64,
    /// Payload copies (EAGER frames, incl. IWANT answers) received by any
    /// node, the origin included, for this round's messages.
    pub receptions: u64,
}

/// What one published message amounted to at the end of a run.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MessageTally {
    /// Round it was published in.
    pub round: usize,
    /// Nodes expected to deliver it (alive at the end, joined before it).
    pub expected: u64,
    /// Of those, how many did.
    pub got: u64,
    /// First copies delivered to any node other than the origin (also by
    /// nodes that later crashed or left).
    pub deliveries: u64,
    /// Payload copies received by any node.
    pub receptions: u64,
    /// Largest hop count at delivery (Tern's count: a direct neighbour is 1).
    pub ldh: u16,
}

impl RoundReport {
    /// Per-round figures of a run with `rounds` rounds from its messages.
    pub(crate) fn tally(rounds: usize, msgs: &[MessageTally]) -> Vec<RoundReport> {
        let mut out: Vec<RoundReport> = (0..rounds)
            .map(|round| RoundReport {
                round,
                ..Default::default()
            })
            .collect();
        let mut expected = vec![(0u64, 0u64); rounds];
        for m in msgs {
            let (Some(rr), Some(e)) = (out.get_mut(m.round), expected.get_mut(m.round)) else {
                continue;
            };
            rr.messages += 1;
            rr.ldh = rr.ldh.max(m.ldh);
            rr.deliveries += m.deliveries;
            rr.receptions += m.receptions;
            e.0 += m.expected;
            e.1 += m.got;
        }
        for (rr, (e, g)) in out.iter_mut().zip(expected) {
            rr.delivery_ratio = if e == 0 { 1.0 } else { g as f64 / e as f64 };
            rr.missed = e - g;
            rr.rmr = if rr.deliveries == 0 {
                0.0
            } else {
                rr.receptions as f64 / rr.deliveries as f64 - 1.0
            };
        }
        out
    }

    /// This round's RMR as iroh-gossip's simulator computes it
    /// (`Simulator::report_gossip_round`): payload copies received ÷
    /// (deliveries − 1) − 1. `None` with fewer than two deliveries, where
    /// that formula divides by zero.
    pub fn rmr_iroh(&self) -> Option<f64> {
        (self.deliveries >= 2).then(|| self.receptions as f64 / (self.deliveries - 1) as f64 - 1.0)
    }

    /// This round's LDH as iroh-gossip's simulator computes it: the largest
    /// hop count a node saw on a first copy, where the origin's own push
    /// carries 0 (iroh's `Round(0)`). Tern counts the hop on receipt (a
    /// direct neighbour delivers at 1), so this is [`RoundReport::ldh`] − 1.
    /// `None` when nothing was delivered.
    pub fn ldh_iroh(&self) -> Option<f64> {
        (self.deliveries > 0).then(|| f64::from(self.ldh.saturating_sub(1)))
    }
}

/// Means over rounds of the per-round RMR and LDH, as iroh-gossip's
/// simulator reports a run (`RoundStats::mean`): each round's figure first,
/// then the plain mean over rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoundMeans {
    /// Mean of [`RoundReport::rmr_iroh`] over the measured rounds.
    pub rmr: f64,
    /// Mean of [`RoundReport::ldh_iroh`] over the measured rounds.
    pub ldh: f64,
    /// Rounds that entered the means (a round without a publish or with
    /// fewer than two deliveries has no defined RMR and is left out).
    pub rounds: usize,
}

impl RoundMeans {
    /// The means over `rounds`.
    pub fn of(rounds: &[RoundReport]) -> Self {
        let mut m = Self::default();
        for (rmr, ldh) in rounds
            .iter()
            .filter_map(|r| Some((r.rmr_iroh()?, r.ldh_iroh()?)))
        {
            m.rmr += rmr;
            m.ldh += ldh;
            m.rounds += 1;
        }
        if m.rounds > 0 {
            m.rmr /= m.rounds as f64;
            m.ldh /= m.rounds as f64;
        }
        m
    }
}

/// Metrics of one run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Nodes at start.
    pub nodes: usize,
    /// Messages published.
    pub messages: usize,
    /// Deliveries made / expected (expected: every node alive at the end
    /// that had joined before the publish).
    pub delivery_ratio: f64,
    /// Expected deliveries that did not happen.
    pub missed: u64,
    /// Relative message redundancy.
    pub rmr: f64,
    /// Last delivery hop (max over messages).
    pub ldh: u16,
    /// Per-round RMR and LDH means, iroh-gossip's definitions.
    pub round_means: RoundMeans,
    /// Delivery latency, ms.
    pub latency_ms: Dist,
    /// Payload copies received that were duplicates.
    pub duplicates: u64,
    /// Per-node sends per publish (EAGER pushes + IHAVE entries + IWANT
    /// answers for that message): max and p99 over (node, message).
    pub sends_per_publish_max: u64,
    /// See `sends_per_publish_max`.
    pub sends_per_publish_p99: u64,
    /// EAGER pushes per (node, message): max.
    pub eager_per_publish_max: u64,
    /// IHAVE entries per (node, message): max.
    pub ihave_per_publish_max: u64,
    /// Eager degree over live nodes at the end.
    pub eager_degree: Dist,
    /// Lazy degree over live nodes at the end.
    pub lazy_degree: Dist,
    /// Active view size over live nodes at the end.
    pub active_view: Dist,
    /// Bytes of state per topic per node.
    pub state_bytes: Dist,
    /// Frames sent by kind over the run (name, count).
    pub sent_by_kind: Vec<(&'static str, u64)>,
    /// Bytes sent by kind over the run (name, bytes), each frame counted at
    /// its exact encoded size ([`crate::proto::Message::encoded_len`]).
    pub sent_bytes_by_kind: Vec<(&'static str, u64)>,
    /// Forged copies delivered (must be 0).
    pub forged_delivered: u64,
    /// Sends refused by outbound budget windows over all nodes (then queued,
    /// or for IHAVE coalesced into the next batch).
    pub over_budget: u64,
    /// Sends that waited in a per-peer queue behind a full window.
    pub queued: u64,
    /// Queued work dropped: queue full, waited too long, or peer cooled/gone.
    pub queue_dropped: u64,
    /// Sends withheld by cooling over all nodes.
    pub gated: u64,
    /// Timeouts reported over all nodes.
    pub timeouts: u64,
    /// IWANT timers that fired (→ GRAFT), over all nodes.
    pub iwant_timeouts: u64,
    /// Grafts by the PlumTree optimisation threshold, over all nodes.
    pub optimisation_grafts: u64,
    /// Messages asked for through anti-entropy digests, over all nodes.
    pub anti_entropy_requested: u64,
    /// Digest entries not asked for because the sender stored the message
    /// before the receiver joined, over all nodes.
    pub anti_entropy_before_join: u64,
    /// Deliveries of messages published before the receiving node joined
    /// (history a joiner is not owed; must be 0).
    pub delivered_before_join: u64,
    /// Invalid verdicts over all nodes.
    pub invalid_verdicts: u64,
    /// Verify requests over all nodes.
    pub verify_requests: u64,
    /// Simulated time.
    pub sim_time: Duration,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// Events processed.
    pub events: u64,
    /// First missed deliveries as (node, round), at most 20 (for debugging).
    pub missed_sample: Vec<(u32, usize)>,
    /// Per-round metrics.
    pub rounds: Vec<RoundReport>,
    /// The O(view) bound checked by [`Report::view_bound_ok`].
    pub view_bound: u64,
    /// Messages published during a partition that every live node got.
    pub partition_recovered: Option<(usize, usize)>,
    /// Slow-peer observations, if the scenario had one.
    pub slow: Option<SlowReport>,
}

/// What happened around a slow peer.
#[derive(Clone, Debug, Default)]
pub struct SlowReport {
    /// Neighbours that had the slow peer in their active view when it slowed.
    pub neighbours: usize,
    /// Of those, how many stopped sending to it eagerly within 30 s.
    pub cooled_within_30s: usize,
    /// p99 delivery latency (ms) to other nodes before the slowdown.
    pub baseline_p99_ms: f64,
    /// p99 delivery latency (ms) to other nodes over the five rounds ending
    /// 30 s after the slowdown began.
    pub slowed_p99_ms: f64,
    /// Whether, after recovery, the slow node received every later message.
    pub recovered_delivery: bool,
    /// Neighbours whose link to it was EAGER when it slowed.
    pub eager_links_at_start: usize,
    /// Neighbours that re-admitted it (probe succeeded).
    pub recovered_neighbours: usize,
    /// Most probes one neighbour sent it after it recovered (1 expected).
    pub max_probes_after_recovery: u32,
}

impl Report {
    /// Per-node sends per publish stay within a multiple of the view size.
    pub fn view_bound_ok(&self) -> bool {
        self.sends_per_publish_max <= self.view_bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(round: usize, deliveries: u64, receptions: u64, ldh: u16) -> MessageTally {
        MessageTally {
            round,
            expected: deliveries,
            got: deliveries,
            deliveries,
            receptions,
            ldh,
        }
    }

    /// A hand-built 20-node trace. Round 0: one message, 19 deliveries, 21
    /// copies, deepest delivery at Tern hop 4. Round 1: a perfect tree, 19
    /// copies, depth 2. Round 2: nobody published. Round 3 (all send): two
    /// messages, 19 deliveries each, 20 + 22 copies, depths 3 and 5.
    ///
    /// iroh-gossip's per-round figures: RMR = copies / (deliveries − 1) − 1,
    /// LDH = deepest hop − 1:
    /// * round 0: 21/18 − 1 = 1/6, LDH 3;
    /// * round 1: 19/18 − 1 = 1/18, LDH 1;
    /// * round 3: 42/37 − 1 = 5/37, LDH 4;
    /// * round 2 has no deliveries and is left out.
    ///
    /// Means over the three rounds: RMR (1/6 + 1/18 + 5/37) / 3, LDH 8/3.
    #[test]
    fn round_means_follow_iroh_definitions() {
        let trace = [
            msg(0, 19, 21, 4),
            msg(1, 19, 19, 2),
            msg(3, 19, 20, 3),
            msg(3, 19, 22, 5),
        ];
        let rounds = RoundReport::tally(4, &trace);
        assert_eq!(rounds.len(), 4);
        assert_eq!(rounds[3].messages, 2);
        assert_eq!((rounds[3].deliveries, rounds[3].receptions), (38, 42));
        assert_eq!(rounds[3].ldh, 5);
        assert_eq!(rounds[2].rmr_iroh(), None);
        assert_eq!(rounds[2].ldh_iroh(), None);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(rounds[0].rmr_iroh().unwrap(), 1.0 / 6.0));
        assert!(close(rounds[1].rmr_iroh().unwrap(), 1.0 / 18.0));
        assert!(close(rounds[3].rmr_iroh().unwrap(), 5.0 / 37.0));
        assert_eq!(rounds[0].ldh_iroh(), Some(3.0));
        assert_eq!(rounds[1].ldh_iroh(), Some(1.0));
        assert_eq!(rounds[3].ldh_iroh(), Some(4.0));
        let m = RoundMeans::of(&rounds);
        assert_eq!(m.rounds, 3);
        assert!(close(m.rmr, (1.0 / 6.0 + 1.0 / 18.0 + 5.0 / 37.0) / 3.0));
        assert!(close(m.ldh, 8.0 / 3.0));
        // Whole-run figures differ: RMR pooled over all copies (82 / 76 − 1)
        // and the maximum depth.
        let pooled: u64 = rounds.iter().map(|r| r.receptions).sum();
        let delivered: u64 = rounds.iter().map(|r| r.deliveries).sum();
        assert!(close(pooled as f64 / delivered as f64 - 1.0, 6.0 / 76.0));
    }

    /// One delivery cannot give an RMR under iroh's formula (it divides by
    /// deliveries − 1): such a round is left out rather than reported as
    /// infinite, and the means stay 0 when no round qualifies.
    #[test]
    fn degenerate_rounds_are_left_out() {
        let rounds = RoundReport::tally(2, &[msg(0, 1, 1, 1), msg(5, 19, 19, 2)]);
        assert_eq!(rounds[0].rmr_iroh(), None);
        assert_eq!(rounds[0].ldh_iroh(), Some(0.0));
        assert_eq!(
            rounds[1].messages, 0,
            "a message of an unknown round is ignored"
        );
        assert_eq!(RoundMeans::of(&rounds), RoundMeans::default());
    }

    /// Missed deliveries show in the round's ratio, not in its RMR basis.
    #[test]
    fn missed_deliveries_per_round() {
        let mut m = msg(0, 17, 18, 3);
        m.expected = 19;
        let rounds = RoundReport::tally(1, &[m]);
        assert_eq!(rounds[0].missed, 2);
        assert!((rounds[0].delivery_ratio - 17.0 / 19.0).abs() < 1e-12);
        assert!((rounds[0].rmr_iroh().unwrap() - (18.0 / 16.0 - 1.0)).abs() < 1e-12);
    }
}
