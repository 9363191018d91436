//! End-of-run metrics: delivery, redundancy, latency, sends per publish,
//! degrees and state per node, and the slow-peer observations.

use super::Sim;
use crate::proto::Config;
use crate::sim::metrics::{Dist, MessageTally, Report, RoundMeans, RoundReport, SlowReport};
use std::time::Duration;

impl Sim {
    pub(super) fn report(&mut self, wall: Duration) -> Report {
        let live: Vec<u32> = self.live();
        let mut rep = Report {
            scenario: self.sc.name.clone(),
            seed: self.seed,
            nodes: self.sc.nodes,
            messages: self.msgs.len(),
            ..Report::default()
        };
        let mut expected = 0u64;
        let mut got = 0u64;
        let mut receptions = 0u64;
        let mut lat = Vec::new();
        let mut tallies = Vec::with_capacity(self.msgs.len());
        let mut part = (0usize, 0usize);
        for m in &self.msgs {
            let exp: Vec<u32> = live
                .iter()
                .copied()
                .filter(|i| {
                    *i as usize != m.origin
                        && self.nodes[*i as usize].joined.is_some_and(|j| j <= m.at)
                })
                .collect();
            let g = exp.iter().filter(|i| m.delivered[**i as usize]).count() as u64;
            for i in exp.iter().filter(|i| !m.delivered[**i as usize]) {
                if rep.missed_sample.len() < 20 {
                    rep.missed_sample.push((*i, m.round));
                }
            }
            expected += exp.len() as u64;
            got += g;
            receptions += m.receptions;
            lat.extend(m.latencies.iter().map(|(_, l)| *l));
            rep.ldh = rep.ldh.max(m.ldh);
            tallies.push(MessageTally {
                round: m.round,
                expected: exp.len() as u64,
                got: g,
                deliveries: m.latencies.len() as u64,
                receptions: m.receptions,
                ldh: m.ldh,
            });
            if m.in_partition {
                part.0 += 1;
                if g == exp.len() as u64 {
                    part.1 += 1;
                }
            }
        }
        let rounds = RoundReport::tally(self.sc.rounds, &tallies);
        rep.round_means = RoundMeans::of(&rounds);
        rep.rounds = rounds;
        rep.delivery_ratio = if expected == 0 {
            1.0
        } else {
            got as f64 / expected as f64
        };
        rep.missed = expected - got;
        let delivered_all: u64 = self.msgs.iter().map(|m| m.latencies.len() as u64).sum();
        rep.rmr = if delivered_all == 0 {
            0.0
        } else {
            receptions as f64 / delivered_all as f64 - 1.0
        };
        rep.duplicates = receptions.saturating_sub(delivered_all);
        rep.latency_ms = Dist::of(&mut lat);
        let mut totals: Vec<f64> = self.sends.values().map(|(e, h)| (*e + *h) as f64).collect();
        let d = Dist::of(&mut totals);
        rep.sends_per_publish_max = d.max as u64;
        rep.sends_per_publish_p99 = d.p99 as u64;
        rep.eager_per_publish_max = self
            .sends
            .values()
            .map(|(e, _)| *e as u64)
            .max()
            .unwrap_or(0);
        rep.ihave_per_publish_max = self
            .sends
            .values()
            .map(|(_, h)| *h as u64)
            .max()
            .unwrap_or(0);
        let (mut eg, mut lz, mut av, mut sb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut kinds = [0u64; 8];
        let mut kind_bytes = [0u64; 8];
        for i in &live {
            let n = &self.nodes[*i as usize].node;
            let view = n.active_view(&self.topic);
            let e = view.iter().filter(|(_, e)| *e).count();
            eg.push(e as f64);
            lz.push((view.len() - e) as f64);
            av.push(view.len() as f64);
            sb.push(n.topic_state_bytes(&self.topic) as f64);
            for (k, v) in kinds.iter_mut().zip(n.sent_by_kind()) {
                *k += v;
            }
            let s = n.snapshot(self.now);
            // The snapshot lists bytes in `Kind::ALL` order.
            for (k, (_, v)) in kind_bytes.iter_mut().zip(&s.sent_bytes_by_kind) {
                *k += v;
            }
            rep.invalid_verdicts += s.verify.invalid;
            rep.over_budget += s.over_budget_by_kind.iter().map(|(_, v)| v).sum::<u64>();
            let q = s.send_queue;
            rep.queued += q.queued.iter().sum::<u64>();
            rep.queue_dropped += q.dropped_full.iter().sum::<u64>() + q.expired + q.flushed;
            rep.gated += s.gated_by_kind.iter().map(|(_, v)| v).sum::<u64>();
            rep.timeouts += s.send_outcomes.1;
            for t in &s.topics {
                rep.iwant_timeouts += t.stats.iwant_timeouts;
                rep.optimisation_grafts += t.stats.optimisation_grafts;
                rep.anti_entropy_requested += t.stats.anti_entropy_requested;
                rep.anti_entropy_before_join += t.stats.anti_entropy_before_join;
            }
            rep.verify_requests += s.verify.requested;
        }
        rep.eager_degree = Dist::of(&mut eg);
        rep.lazy_degree = Dist::of(&mut lz);
        rep.active_view = Dist::of(&mut av);
        rep.state_bytes = Dist::of(&mut sb);
        rep.sent_by_kind = crate::proto::Kind::ALL
            .iter()
            .map(|k| (crate::proto::kind_label(*k), kinds[k.index()]))
            .collect();
        rep.sent_bytes_by_kind = crate::proto::Kind::ALL
            .iter()
            .map(|k| (crate::proto::kind_label(*k), kind_bytes[k.index()]))
            .collect();
        rep.forged_delivered = self.forged_delivered + self.double_delivered;
        rep.delivered_before_join = self.before_join;
        rep.sim_time = self.now.duration_since(self.base);
        rep.wall = wall;
        rep.events = self.events;
        // Eager pushes and IHAVEs go to active peers only; IWANT answers are
        // bounded by the same peers plus one anti-entropy partner per tick.
        rep.view_bound = 2 * Config::default().active_view as u64 + 2;
        if self.sc.partition.is_some() {
            rep.partition_recovered = Some(part);
        }
        if self.sc.slow.is_some() {
            rep.slow = Some(self.slow_report());
        }
        rep
    }

    fn slow_report(&self) -> SlowReport {
        let mut r = SlowReport::default();
        let Some(s) = &self.sc.slow else { return r };
        let Some((_, nb)) = &self.slow_eager_at else {
            return r;
        };
        r.neighbours = nb.len();
        let Some((from, _)) = &self.slow_eager_at else {
            return r;
        };
        r.cooled_within_30s = nb
            .iter()
            .filter(|i| {
                self.cooled
                    .get(i)
                    .is_some_and(|at| at.duration_since(*from) <= Duration::from_secs(30))
            })
            .count();
        r.recovered_neighbours = nb.iter().filter(|i| self.recovered.contains_key(i)).count();
        r.max_probes_after_recovery = self.probes_after.values().copied().max().unwrap_or(0);
        let p99_rounds = |lo: usize, hi: usize| {
            let mut v: Vec<f64> = self
                .msgs
                .iter()
                .filter(|m| m.round >= lo && m.round < hi)
                .flat_map(|m| {
                    m.latencies
                        .iter()
                        .filter(|(n, _)| *n as usize != s.node)
                        .map(|(_, l)| *l)
                })
                .collect();
            Dist::of(&mut v).p99
        };
        let until = s.until_round.unwrap_or(self.sc.rounds);
        r.baseline_p99_ms = p99_rounds(0, s.from_round);
        // The five rounds ending 30 s (at 1 s rounds) after the slowdown began.
        let hi = (s.from_round + 30).min(until);
        r.slowed_p99_ms = p99_rounds(hi.saturating_sub(5).max(s.from_round), hi);
        r.eager_links_at_start = self.slow_eager_links;
        r.recovered_delivery = self
            .msgs
            .iter()
            .filter(|m| m.round >= until + 2)
            .all(|m| m.delivered[s.node]);
        r
    }
}
