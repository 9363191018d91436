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
