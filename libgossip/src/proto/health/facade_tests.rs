//! Tests of [`super::PeerHealth`]: the pieces wired together.

use super::*;
use crate::proto::health::cooling::{ProbeState, SuppressReason};

type Health = PeerHealth<u32, u8>;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A tiny virtual-time driver: sends complete after the peer's delay, or
/// time out at the ticket's timeout.
struct Driver {
    now: Instant,
    pending: Vec<(Instant, SendTicket<u32, u8>, SendOutcome)>,
    sent: HashMap<u32, u64>,
    max_in_flight: HashMap<u32, u32>,
    decisions: Vec<(Instant, CoolingDecision<u32, u8>)>,
}

use std::collections::HashMap;

impl Driver {
    fn new() -> Self {
        Self {
            now: Instant::now(),
            pending: Vec::new(),
            sent: HashMap::new(),
            max_in_flight: HashMap::new(),
            decisions: Vec::new(),
        }
    }

    fn send(&mut self, h: &mut Health, peer: u32, kind: SendKind, delay: Duration) {
        if let SendDecision::Send { ticket, timeout } = h.begin_send(peer, 0, kind, self.now) {
            *self.sent.entry(peer).or_default() += 1;
            let (at, outcome) = if delay <= timeout {
                (self.now + delay, SendOutcome::Ok { latency: delay })
            } else {
                (self.now + timeout, SendOutcome::Timeout)
            };
            self.pending.push((at, ticket, outcome));
            let inf = h.budgets().in_flight(&peer);
            let m = self.max_in_flight.entry(peer).or_default();
            *m = (*m).max(inf);
        }
    }

    fn advance(&mut self, h: &mut Health, dt: Duration) {
        self.now += dt;
        let now = self.now;
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.pending = keep;
        for (at, ticket, outcome) in done {
            if let Some(d) = h.on_send_outcome(ticket, outcome, at) {
                self.decisions.push((at, d));
            }
        }
        for d in h.handle_timeout(now) {
            self.decisions.push((now, d));
        }
    }
}

/// G4, G5, G6, G7, G9: a peer with a 2 s send delay next to a healthy one,
/// 20 messages/s each: the slow one is suppressed within seconds, never
/// holds more than its budget, gets one probe per cooldown while slow,
/// scores below the healthy one, and after it heals is re-admitted through
/// a single probe, LAZY first (GRAFT refused during probation).
#[test]
fn slow_peer_cooled_then_readmitted_by_one_probe() {
    let mut h = Health::new(HealthParams::default());
    let mut d = Driver::new();
    let t0 = d.now;
    let mut slow_delay = Duration::from_secs(2);
    let mut healed_at = None;
    for step in 0..(180 * 20) {
        if step == 120 * 20 {
            slow_delay = ms(30); // the slow peer recovers at t = 120 s
            healed_at = Some(d.now);
        }
        d.send(&mut h, 1, SendKind::Eager, ms(20));
        d.send(&mut h, 2, SendKind::Eager, slow_delay);
        d.send(&mut h, 2, SendKind::IHave, slow_delay);
        d.advance(&mut h, ms(50));
        assert!(h.budgets().in_flight(&2) <= h.budgets().limit_of(&2).max(4));
    }
    let first = d
        .decisions
        .iter()
        .find(|(_, x)| matches!(x, CoolingDecision::Suppress { peer: 2, .. }))
        .map(|(at, _)| *at - t0)
        .unwrap();
    assert!(
        first <= Duration::from_secs(5),
        "suppressed after {first:?}"
    );
    assert!(
        !d.decisions
            .iter()
            .any(|(_, x)| matches!(x, CoolingDecision::Suppress { peer: 1, .. })),
        "the healthy peer is never cooled"
    );
    // Never more than the initial window (4) in flight to the slow peer.
    assert!(d.max_in_flight[&2] <= 4, "{:?}", d.max_in_flight);
    // While slow: probes every cooldown, each failing, backoff doubling.
    let healed_at = healed_at.unwrap();
    let failed: Vec<_> = d
        .decisions
        .iter()
        .filter(|(at, x)| {
            *at < healed_at
                && matches!(
                    x,
                    CoolingDecision::Suppress {
                        reason: SuppressReason::ProbeFailed,
                        ..
                    }
                )
        })
        .collect();
    assert!((2..=5).contains(&failed.len()), "{failed:?}");
    // Sends to the slow peer while slow: the ones before suppression plus the probes.
    let recovered = d
        .decisions
        .iter()
        .find(|(_, x)| matches!(x, CoolingDecision::Recovered { peer: 2, .. }))
        .map(|(at, x)| (*at, *x))
        .expect("re-admitted after healing");
    assert!(recovered.0 >= healed_at);
    assert_eq!(
        d.decisions
            .iter()
            .filter(|(_, x)| matches!(x, CoolingDecision::Recovered { .. }))
            .count(),
        1,
        "one recovery"
    );
    let now = d.now;
    // After recovery it sends again and its score climbs, but it has not
    // caught up with the peer that never failed.
    assert!(h.score(&2, now) < h.score(&1, now));
    assert!(h.send_timeout(&1) < ms(200));
    // Re-admitted within one (capped) backoff of healing.
    assert!(recovered.0 - healed_at <= CoolingParams::default().max_cooldown);
    let snap = h.snapshot(now);
    assert!(snap.suppressed.is_empty());
    assert!(snap.cooling.probes >= 3);
}

/// G7: GRAFT is refused while suppressed and during probation after the
/// recovery probe, and the mesh candidates reflect it.
#[test]
fn graft_respects_backoff() {
    let mut h = Health::new(HealthParams::default());
    let t0 = Instant::now();
    for i in 0..3 {
        let SendDecision::Send { ticket, .. } = h.begin_send(7, 0, SendKind::Eager, t0 + ms(i))
        else {
            panic!()
        };
        h.on_send_outcome(ticket, SendOutcome::Timeout, t0 + ms(i + 1));
    }
    let cands = h.mesh_candidates(
        0,
        [(7, LinkState::Eager), (8, LinkState::Lazy)],
        t0 + ms(10),
    );
    assert!(!cands[0].graft_allowed && cands[1].graft_allowed);
    assert!(matches!(
        h.graft_gate(7, 0, t0 + ms(10)),
        GraftGate::Backoff { .. }
    ));
    let until = t0 + ms(3) + CoolingParams::default().base_cooldown;
    let SendDecision::Send { ticket, .. } = h.begin_send(7, 0, SendKind::Eager, until) else {
        panic!("probe expected")
    };
    assert!(ticket.is_probe());
    let r = h.on_send_outcome(ticket, SendOutcome::Ok { latency: ms(20) }, until + ms(20));
    let Some(CoolingDecision::Recovered { graft_after, .. }) = r else {
        panic!("{r:?}")
    };
    assert!(matches!(
        h.graft_gate(7, 0, until + ms(30)),
        GraftGate::Backoff { .. }
    ));
    assert_eq!(h.graft_gate(7, 0, graft_after), GraftGate::Allowed);
}

/// G9: a full budget refuses the send without consuming the probe: the
/// cooled pair's probe stays due through every over-budget refusal, and the
/// first send after the window frees is that probe (and only one).
#[test]
fn over_budget_does_not_consume_probe() {
    let mut h = Health::new(HealthParams::default());
    let t0 = Instant::now();
    // Cool the pair (3, topic 0) through timeouts.
    for i in 0..3 {
        let SendDecision::Send { ticket, .. } = h.begin_send(3, 0, SendKind::Eager, t0 + ms(i))
        else {
            panic!("send {i} refused before cooling")
        };
        h.on_send_outcome(ticket, SendOutcome::Timeout, t0 + ms(i));
    }
    let due = t0 + ms(2) + CoolingParams::default().base_cooldown;
    // Before the cooldown ends the pair is suppressed, not probing.
    assert!(matches!(
        h.begin_send(3, 0, SendKind::Eager, due - ms(1)),
        SendDecision::Suppressed { .. }
    ));
    // Saturate peer 3's window with another topic (allowed there).
    let mut tickets = Vec::new();
    while let SendDecision::Send { ticket, .. } = h.begin_send(3, 1, SendKind::IHave, due) {
        tickets.push(ticket);
    }
    assert!(!tickets.is_empty(), "topic 1 was never cooled");
    assert_eq!(h.snapshot(due).suppressed[0].probe, ProbeState::Due);
    // Refused again and again while the window is full; the core drops the
    // work (its queue is full, say) and says so.
    for _ in 0..5 {
        assert_eq!(
            h.begin_send(3, 0, SendKind::Eager, due),
            SendDecision::OverBudget
        );
        h.on_budget_overflow(3, due);
    }
    let snap = h.snapshot(due);
    assert_eq!(snap.suppressed.len(), 1);
    assert_eq!(
        snap.suppressed[0].probe,
        ProbeState::Due,
        "probe not consumed"
    );
    assert!(
        snap.peers[0].score.budget_exhausted < 0.0,
        "dropped work feeds the score"
    );
    for t in tickets {
        h.on_send_outcome(t, SendOutcome::Ok { latency: ms(5) }, due);
    }
    let SendDecision::Send { ticket, .. } = h.begin_send(3, 0, SendKind::Eager, due) else {
        panic!("probe refused once the window freed")
    };
    assert!(
        ticket.is_probe(),
        "the first send after the window frees is the probe"
    );
    // One probe at a time: the next send waits for the probe's outcome.
    assert!(matches!(
        h.begin_send(3, 0, SendKind::Eager, due),
        SendDecision::Suppressed { .. }
    ));
    drop(ticket);
}

/// G10 (hostile), facade level: a peer whose sends all time out and which
/// floods unsigned IHAVEs stays cooled and earns no recency.
#[test]
fn unsigned_ihave_flood_earns_nothing() {
    let mut h = Health::new(HealthParams::default());
    let mut d = Driver::new();
    for _ in 0..(600 * 10) {
        for _ in 0..10 {
            h.on_unverified_activity(5, 0, d.now);
        }
        d.send(&mut h, 5, SendKind::Eager, Duration::from_secs(10));
        d.advance(&mut h, ms(100));
    }
    let now = d.now;
    let c = h.scores().components(&5, now).unwrap();
    assert_eq!(c.recency, 0.0);
    assert!(c.total < -20.0, "{c:?}");
    assert_eq!(h.cooling().counters().recovered, 0);
    assert!(h.cooling().counters().unverified_ignored >= 60_000);
    // Only the first 3 sends plus one probe per cooldown ever went out.
    assert!(d.sent[&5] < 30, "sent {}", d.sent[&5]);
}

/// G11, G15: the cleanup cadence runs from `handle_timeout`, tightens while
/// suppressions grow, and snapshots are complete values.
#[test]
fn cleanup_cadence_tightens_under_growth_and_snapshot_is_complete() {
    let mut h = Health::new(HealthParams::default());
    let mut d = Driver::new();
    let t0 = d.now;
    h.handle_timeout(t0);
    assert_eq!(h.poll_timeout(), Some(t0 + Duration::from_secs(120)));
    // Every 10 s another 10 peers go bad.
    let mut bad: Vec<u32> = Vec::new();
    for step in 0..(400 * 10) {
        if step % 100 == 0 {
            let base = bad.len() as u32;
            bad.extend(base..base + 10);
        }
        for &p in &bad {
            d.send(&mut h, p, SendKind::Eager, Duration::from_secs(5));
        }
        d.advance(&mut h, ms(100));
    }
    let snap = h.snapshot(d.now);
    // First run at 120 s (no history), then 240 s (60), 300 (30), 330 (15),
    // 345 (10), then every 10 s.
    assert!(snap.cleanup_runs >= 8, "{}", snap.cleanup_runs);
    assert_eq!(snap.cleanup_interval, Duration::from_secs(10));
    assert!(!snap.peers.is_empty() && !snap.suppressed.is_empty());
    assert!(
        snap.suppressed
            .iter()
            .all(|s| s.backoff >= Duration::from_secs(10))
    );
}
