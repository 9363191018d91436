//! Decayed per-peer score, in the spirit of gossipsub v1.1.
//!
//! # Model
//!
//! Each peer carries a handful of *decayed counters*, one per kind of
//! evidence, and a score that is their weighted sum plus a recency bonus:
//!
//! | component | evidence | weight | cap | half-life |
//! |---|---|---|---|---|
//! | `send_ok` | a send completed within its timeout | +1 | 20 | 60 s |
//! | `send_timeout` | a send hit its RTT-derived timeout | −8 | 1000 | 5 min |
//! | `cooling` | the peer was suppressed or failed a probe | −20 | 1000 | 10 min |
//! | `iwant_fulfilled` | it answered our IWANT with a valid message | +2 | 10 | 2 min |
//! | `iwant_broken` | it advertised (IHAVE) but did not deliver | −4 | 1000 | 5 min |
//! | `budget_exhausted` | work for it was skipped/coalesced over budget | −1 | 1000 | 60 s |
//! | recency | last *verified* inbound activity | +10 falling linearly to 0 over 60 s | — | — |
//!
//! Why these numbers: positive evidence is capped (as gossipsub caps P2
//! first-deliveries) so a peer cannot bank credit while healthy and then spend
//! it being slow; the best reachable score is +20 +20 +10 = +50. A timeout
//! costs eight successes because it holds a dispatch worker for a full timeout,
//! which is many RTTs of useful sends. A cooling event is worth more than the
//! timeouts that caused it so a peer that was suppressed stays below healthy
//! peers for minutes after it returns ("recover gradually, not immediate
//! full trust"). Negative evidence decays more slowly than positive evidence
//! for the same reason. Recency rewards only verified inbound activity: an
//! unverified frame (an unsigned IHAVE) can be produced for free by anyone.
//!
//! A new peer scores 0. Mesh maintenance promotes only peers with a score at
//! or above its threshold (default 0) and prefers higher scores.
//!
//! # Decay
//!
//! A counter stores `(value, at)` and is read as `value · 2^(−(now − at) /
//! half_life)`. Decay is therefore a function of elapsed time only: calling
//! into the book once a second or once a minute gives the same score at the
//! same instant (tested), unlike per-tick multiplication whose effect depends
//! on the tick rate. Timestamps earlier than the last update (an input out of
//! order) decay by zero rather than growing the value.
//!
//! # Bounds
//!
//! The book holds at most `max_peers` entries. Entries are kept after a
//! disconnect (so reconnecting does not wash a bad score) until they are both
//! disconnected and neutral (all counters decayed below `1e-3` and no recency)
//! — [`ScoreBook::prune`] removes those — or until capacity forces out the
//! least recently touched entry, counted in [`ScoreCounters::evicted_capacity`].

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::rtt::{RttEstimator, RttParams};

/// A value that halves every `half_life` of elapsed time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Decayed {
    value: f64,
    at: Option<Instant>,
}

impl Decayed {
    /// Value at `now`.
    pub fn value(&self, now: Instant, half_life: Duration) -> f64 {
        match self.at {
            None => 0.0,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                let hl = half_life.as_secs_f64().max(1e-9);
                self.value * (-dt / hl).exp2()
            }
        }
    }

    /// Add `amount` at `now`, saturating at `cap`.
    pub fn add(&mut self, now: Instant, amount: f64, half_life: Duration, cap: f64) {
        let current = self.value(now, half_life);
        // Keep the later timestamp so an out-of-order input cannot re-inflate.
        let at = match self.at {
            Some(prev) if prev > now => prev,
            _ => now,
        };
        self.value = (current + amount).min(cap);
        self.at = Some(at);
    }
}

/// One weighted, capped, decayed component.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComponentParams {
    /// Score contribution per unit of counter (negative for penalties).
    pub weight: f64,
    /// Counter cap.
    pub cap: f64,
    /// Counter half-life.
    pub half_life: Duration,
}

impl ComponentParams {
    const fn new(weight: f64, cap: f64, half_life_s: u64) -> Self {
        Self {
            weight,
            cap,
            half_life: Duration::from_secs(half_life_s),
        }
    }
}

/// Score parameters; see the module docs for the defaults and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreParams {
    /// Successful sends.
    pub send_ok: ComponentParams,
    /// Send timeouts.
    pub send_timeout: ComponentParams,
    /// Cooling events (suppressions and failed probes).
    pub cooling: ComponentParams,
    /// IWANTs answered with a valid message.
    pub iwant_fulfilled: ComponentParams,
    /// IHAVE promises not kept (IWANT unanswered or answered invalid).
    pub iwant_broken: ComponentParams,
    /// Sends skipped or coalesced because the peer's budget was exhausted.
    pub budget_exhausted: ComponentParams,
    /// Bonus for verified inbound activity just now.
    pub recency_weight: f64,
    /// Bonus falls linearly to zero over this window.
    pub recency_window: Duration,
    /// Maximum number of peers tracked.
    pub max_peers: usize,
    /// RTT estimator bounds.
    pub rtt: RttParams,
}

impl Default for ScoreParams {
    fn default() -> Self {
        Self {
            send_ok: ComponentParams::new(1.0, 20.0, 60),
            send_timeout: ComponentParams::new(-8.0, 1000.0, 300),
            cooling: ComponentParams::new(-20.0, 1000.0, 600),
            iwant_fulfilled: ComponentParams::new(2.0, 10.0, 120),
            iwant_broken: ComponentParams::new(-4.0, 1000.0, 300),
            budget_exhausted: ComponentParams::new(-1.0, 1000.0, 60),
            recency_weight: 10.0,
            recency_window: Duration::from_secs(60),
            max_peers: 4096,
            rtt: RttParams::default(),
        }
    }
}

/// Per-peer evidence.
#[derive(Debug, Clone, Default)]
pub struct PeerScore {
    send_ok: Decayed,
    send_timeout: Decayed,
    cooling: Decayed,
    iwant_fulfilled: Decayed,
    iwant_broken: Decayed,
    budget_exhausted: Decayed,
    last_verified: Option<Instant>,
    last_touched: Option<Instant>,
    connected: bool,
    rtt: RttEstimator,
}

/// A peer's score broken into its weighted contributions, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreComponents {
    /// Contribution of successful sends.
    pub send_ok: f64,
    /// Contribution of send timeouts (≤ 0).
    pub send_timeout: f64,
    /// Contribution of cooling events (≤ 0).
    pub cooling: f64,
    /// Contribution of fulfilled IWANTs.
    pub iwant_fulfilled: f64,
    /// Contribution of broken IHAVE promises (≤ 0).
    pub iwant_broken: f64,
    /// Contribution of budget exhaustion (≤ 0).
    pub budget_exhausted: f64,
    /// Recency bonus.
    pub recency: f64,
    /// Sum of the above.
    pub total: f64,
    /// Smoothed RTT in milliseconds, if measured.
    pub srtt_ms: Option<f64>,
    /// Current RTT-derived send timeout in milliseconds.
    pub send_timeout_ms: f64,
}

impl PeerScore {
    /// Weighted components at `now`.
    pub fn components(&self, now: Instant, p: &ScoreParams) -> ScoreComponents {
        let c = |d: &Decayed, cp: &ComponentParams| d.value(now, cp.half_life) * cp.weight;
        let recency = match self.last_verified {
            Some(t) => {
                let age = now.saturating_duration_since(t).as_secs_f64();
                let w = p.recency_window.as_secs_f64().max(1e-9);
                p.recency_weight * (1.0 - age / w).max(0.0)
            }
            None => 0.0,
        };
        let send_ok = c(&self.send_ok, &p.send_ok);
        let send_timeout = c(&self.send_timeout, &p.send_timeout);
        let cooling = c(&self.cooling, &p.cooling);
        let iwant_fulfilled = c(&self.iwant_fulfilled, &p.iwant_fulfilled);
        let iwant_broken = c(&self.iwant_broken, &p.iwant_broken);
        let budget_exhausted = c(&self.budget_exhausted, &p.budget_exhausted);
        ScoreComponents {
            send_ok,
            send_timeout,
            cooling,
            iwant_fulfilled,
            iwant_broken,
            budget_exhausted,
            recency,
            total: send_ok
                + send_timeout
                + cooling
                + iwant_fulfilled
                + iwant_broken
                + budget_exhausted
                + recency,
            srtt_ms: self.rtt.srtt().map(|d| d.as_secs_f64() * 1e3),
            send_timeout_ms: self.rtt.timeout(&p.rtt).as_secs_f64() * 1e3,
        }
    }

    /// The RTT estimator for this peer.
    pub fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    fn is_neutral(&self, now: Instant, p: &ScoreParams) -> bool {
        let c = self.components(now, p);
        !self.connected
            && c.recency == 0.0
            && [
                c.send_ok,
                c.send_timeout,
                c.cooling,
                c.iwant_fulfilled,
                c.iwant_broken,
                c.budget_exhausted,
            ]
            .iter()
            .all(|v| v.abs() < 1e-3)
    }
}

/// Counters of the score book itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScoreCounters {
    /// Entries dropped because the book was full.
    pub evicted_capacity: u64,
    /// Entries removed by [`ScoreBook::prune`] as disconnected and neutral.
    pub pruned_neutral: u64,
}

/// Scores for all known peers.
///
/// Calling order: feed evidence with the `on_*` methods as it happens (each
/// takes `now`), read with [`ScoreBook::score`] / [`ScoreBook::send_timeout`]
/// when deciding, call [`ScoreBook::prune`] from the periodic cleanup.
#[derive(Debug, Clone)]
pub struct ScoreBook<P> {
    params: ScoreParams,
    peers: HashMap<P, PeerScore>,
    counters: ScoreCounters,
}

impl<P: Copy + Eq + Hash + Ord> ScoreBook<P> {
    /// Heap bytes of the per-peer table at its allocated capacity.
    pub fn footprint(&self) -> usize {
        crate::proto::store::map_heap::<P, PeerScore>(self.peers.capacity())
    }

    /// An empty book.
    pub fn new(params: ScoreParams) -> Self {
        Self {
            params,
            peers: HashMap::new(),
            counters: ScoreCounters::default(),
        }
    }

    /// Parameters in use.
    pub fn params(&self) -> &ScoreParams {
        &self.params
    }

    fn entry(&mut self, peer: P, now: Instant) -> &mut PeerScore {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.params.max_peers.max(1) {
            // Least recently touched goes; ties broken by peer id for determinism.
            let victim = self
                .peers
                .iter()
                .min_by_key(|(id, s)| (s.last_touched, **id))
                .map(|(id, _)| *id);
            if let Some(v) = victim {
                self.peers.remove(&v);
                self.counters.evicted_capacity += 1;
            }
        }
        let e = self.peers.entry(peer).or_default();
        e.last_touched = Some(e.last_touched.map_or(now, |t| t.max(now)));
        e
    }

    /// The peer is connected (it is kept even when neutral).
    pub fn on_connected(&mut self, peer: P, now: Instant) {
        self.entry(peer, now).connected = true;
    }

    /// The peer disconnected; its evidence is retained until it decays.
    pub fn on_disconnected(&mut self, peer: P, now: Instant) {
        if let Some(e) = self.peers.get_mut(&peer) {
            e.connected = false;
            e.last_touched = Some(now);
        }
    }

    /// A send completed after `latency`.
    pub fn on_send_ok(&mut self, peer: P, latency: Duration, now: Instant) {
        let cp = self.params.send_ok;
        let e = self.entry(peer, now);
        e.send_ok.add(now, 1.0, cp.half_life, cp.cap);
        e.rtt.on_sample(latency);
    }

    /// A send hit its timeout.
    pub fn on_send_timeout(&mut self, peer: P, now: Instant) {
        let cp = self.params.send_timeout;
        let e = self.entry(peer, now);
        e.send_timeout.add(now, 1.0, cp.half_life, cp.cap);
        e.rtt.on_timeout();
    }

    /// The peer was suppressed or failed a recovery probe.
    pub fn on_cooling(&mut self, peer: P, now: Instant) {
        let cp = self.params.cooling;
        self.entry(peer, now)
            .cooling
            .add(now, 1.0, cp.half_life, cp.cap);
    }

    /// The peer answered an IWANT with a message that verified.
    pub fn on_iwant_fulfilled(&mut self, peer: P, now: Instant) {
        let cp = self.params.iwant_fulfilled;
        self.entry(peer, now)
            .iwant_fulfilled
            .add(now, 1.0, cp.half_life, cp.cap);
    }

    /// The peer advertised a message and did not deliver a valid copy on IWANT.
    pub fn on_iwant_broken(&mut self, peer: P, now: Instant) {
        let cp = self.params.iwant_broken;
        self.entry(peer, now)
            .iwant_broken
            .add(now, 1.0, cp.half_life, cp.cap);
    }

    /// Work for the peer was skipped or coalesced because its budget was full.
    pub fn on_budget_exhausted(&mut self, peer: P, now: Instant) {
        let cp = self.params.budget_exhausted;
        self.entry(peer, now)
            .budget_exhausted
            .add(now, 1.0, cp.half_life, cp.cap);
    }

    /// Verified inbound activity (see [`super::VerifiedActivity`]).
    pub fn on_verified_activity(&mut self, peer: P, now: Instant) {
        let e = self.entry(peer, now);
        e.last_verified = Some(e.last_verified.map_or(now, |t| t.max(now)));
    }

    /// Current score; 0 for an unknown peer.
    pub fn score(&self, peer: &P, now: Instant) -> f64 {
        self.peers
            .get(peer)
            .map_or(0.0, |e| e.components(now, &self.params).total)
    }

    /// Components of a peer's score, if known.
    pub fn components(&self, peer: &P, now: Instant) -> Option<ScoreComponents> {
        self.peers
            .get(peer)
            .map(|e| e.components(now, &self.params))
    }

    /// Timeout for the next send to `peer`, derived from its RTT.
    pub fn send_timeout(&self, peer: &P) -> Duration {
        self.peers.get(peer).map_or_else(
            || RttEstimator::new().timeout(&self.params.rtt),
            |e| e.rtt.timeout(&self.params.rtt),
        )
    }

    /// Smoothed RTT to `peer`, once a send to it has completed.
    pub fn srtt(&self, peer: &P) -> Option<Duration> {
        self.peers.get(peer).and_then(|e| e.rtt.srtt())
    }

    /// Remove disconnected entries whose evidence has decayed to nothing.
    pub fn prune(&mut self, now: Instant) -> usize {
        let params = self.params;
        let before = self.peers.len();
        self.peers.retain(|_, e| !e.is_neutral(now, &params));
        let removed = before - self.peers.len();
        self.counters.pruned_neutral += removed as u64;
        removed
    }

    /// Number of tracked peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Book counters.
    pub fn counters(&self) -> ScoreCounters {
        self.counters
    }

    /// All peers with their components, sorted by peer id (for snapshots).
    pub fn all_components(&self, now: Instant) -> Vec<(P, ScoreComponents)> {
        let mut v: Vec<_> = self
            .peers
            .iter()
            .map(|(p, e)| (*p, e.components(now, &self.params)))
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.
mod tests {
    use super::*;

    fn book() -> ScoreBook<u32> {
        ScoreBook::new(ScoreParams::default())
    }

    fn s(v: u64) -> Duration {
        Duration::from_secs(v)
    }

    /// G6: decay depends on elapsed time only, not on how often it is read.
    #[test]
    fn decay_is_independent_of_call_frequency() {
        let t0 = Instant::now();
        let hl = s(60);
        let mut a = Decayed::default();
        let mut b = Decayed::default();
        a.add(t0, 10.0, hl, 100.0);
        b.add(t0, 10.0, hl, 100.0);
        // `a` is read (and topped up by zero) every second, `b` never.
        for i in 1..=120 {
            a.add(t0 + s(i), 0.0, hl, 100.0);
        }
        let va = a.value(t0 + s(120), hl);
        let vb = b.value(t0 + s(120), hl);
        assert!((va - 2.5).abs() < 1e-9, "{va}");
        assert!((va - vb).abs() < 1e-9);
    }

    #[test]
    fn out_of_order_time_never_inflates() {
        let t0 = Instant::now();
        let hl = s(10);
        let mut d = Decayed::default();
        d.add(t0 + s(10), 8.0, hl, 100.0);
        d.add(t0, 0.0, hl, 100.0); // earlier input
        assert!(d.value(t0 + s(20), hl) <= 4.0 + 1e-9);
        assert!(d.value(t0, hl) <= 8.0 + 1e-9);
    }

    /// G6: table of evidence → sign and ordering of scores.
    #[test]
    fn evidence_table() {
        let t0 = Instant::now();
        type Feed = fn(&mut ScoreBook<u32>, Instant);
        let rows: &[(&str, Feed, f64, f64)] = &[
            ("nothing", |_, _| {}, 0.0, 0.0),
            (
                "5 sends ok",
                |b, t| {
                    for _ in 0..5 {
                        b.on_send_ok(1, Duration::from_millis(30), t);
                    }
                },
                4.9,
                5.1,
            ),
            (
                "100 sends ok is capped",
                |b, t| {
                    for _ in 0..100 {
                        b.on_send_ok(1, Duration::from_millis(30), t);
                    }
                },
                19.9,
                20.1,
            ),
            ("one timeout", |b, t| b.on_send_timeout(1, t), -8.1, -7.9),
            ("one cooling", |b, t| b.on_cooling(1, t), -20.1, -19.9),
            (
                "iwant fulfilled capped",
                |b, t| {
                    for _ in 0..50 {
                        b.on_iwant_fulfilled(1, t);
                    }
                },
                19.9,
                20.1,
            ),
            ("broken promise", |b, t| b.on_iwant_broken(1, t), -4.1, -3.9),
            ("budget", |b, t| b.on_budget_exhausted(1, t), -1.1, -0.9),
            (
                "verified now",
                |b, t| b.on_verified_activity(1, t),
                9.9,
                10.1,
            ),
        ];
        for (name, feed, lo, hi) in rows {
            let mut b = book();
            feed(&mut b, t0);
            let v = b.score(&1, t0);
            assert!(v >= *lo && v <= *hi, "{name}: {v}");
        }
    }

    /// G6: a slow peer ranks below a healthy one and recovers gradually.
    #[test]
    fn timeouts_rank_below_and_recover_gradually() {
        let t0 = Instant::now();
        let mut b = book();
        for i in 0..20 {
            b.on_send_ok(1, Duration::from_millis(20), t0 + s(i));
            b.on_send_ok(2, Duration::from_millis(20), t0 + s(i));
        }
        for i in 0..3 {
            b.on_send_timeout(2, t0 + s(20 + i));
        }
        b.on_cooling(2, t0 + s(23));
        let t = t0 + s(24);
        assert!(b.score(&2, t) < 0.0);
        assert!(b.score(&1, t) > b.score(&2, t));
        // After it recovers and sends well for 2 minutes it is still below a
        // peer that never failed, but climbing.
        let mut prev = b.score(&2, t);
        for i in 0..120 {
            let ti = t + s(i);
            b.on_send_ok(2, Duration::from_millis(20), ti);
            b.on_send_ok(1, Duration::from_millis(20), ti);
            if i % 30 == 29 {
                let now = b.score(&2, ti);
                assert!(now > prev, "climbing");
                prev = now;
            }
        }
        let t = t + s(120);
        assert!(b.score(&2, t) < b.score(&1, t));
        // Ten half-lives later the penalty is gone.
        let t = t + s(6000);
        assert!(b.score(&2, t).abs() < 0.1);
    }

    #[test]
    fn recency_falls_linearly() {
        let t0 = Instant::now();
        let mut b = book();
        b.on_verified_activity(1, t0);
        let half = b.score(&1, t0 + s(30));
        assert!((half - 5.0).abs() < 1e-6);
        assert_eq!(b.score(&1, t0 + s(61)), 0.0);
    }

    #[test]
    fn capacity_evicts_least_recent_and_counts() {
        let t0 = Instant::now();
        let mut b: ScoreBook<u32> = ScoreBook::new(ScoreParams {
            max_peers: 3,
            ..ScoreParams::default()
        });
        for p in 0..3 {
            b.on_send_ok(p, Duration::from_millis(10), t0 + s(u64::from(p)));
        }
        b.on_send_ok(9, Duration::from_millis(10), t0 + s(10));
        assert_eq!(b.len(), 3);
        assert!(b.components(&0, t0).is_none(), "oldest went");
        assert_eq!(b.counters().evicted_capacity, 1);
    }

    #[test]
    fn prune_keeps_connected_and_bad_peers() {
        let t0 = Instant::now();
        let mut b = book();
        b.on_connected(1, t0);
        b.on_send_ok(2, Duration::from_millis(10), t0);
        b.on_send_timeout(3, t0);
        b.on_disconnected(3, t0);
        let t = t0 + s(3600);
        // After an hour the success of peer 2 (60 s half-life) is gone; the
        // timeout of peer 3 (5 min half-life) is still 8·2^-12 ≈ 0.002.
        assert_eq!(b.prune(t), 1);
        assert!(b.components(&1, t).is_some());
        assert!(b.components(&3, t).is_some());
        assert_eq!(b.prune(t + s(36_000)), 1);
        assert_eq!(b.counters().pruned_neutral, 2);
    }

    #[test]
    fn send_timeout_is_per_peer() {
        let t0 = Instant::now();
        let mut b = book();
        for _ in 0..30 {
            b.on_send_ok(1, Duration::from_millis(15), t0);
            b.on_send_ok(2, Duration::from_millis(250), t0);
        }
        assert!(b.send_timeout(&1) < b.send_timeout(&2));
        assert_eq!(b.send_timeout(&7), RttParams::default().initial);
    }
}
