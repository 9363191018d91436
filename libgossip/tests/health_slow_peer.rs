//! Peer health end to end through the public API: `PeerHealth` (score, RTT
//! timeouts, cooling, budgets) driving `MeshMaintainer` for one topic, with a
//! virtual clock and a simple send model. The core wires the same pieces into
//! PlumTree; the simulator proves the network-wide version.
#![allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libgossip::proto::health::budget::SendKind;
use libgossip::proto::health::cooling::CoolingDecision;
use libgossip::proto::health::mesh::{LinkState, MeshMaintainer, MeshParams};
use libgossip::proto::health::{HealthParams, PeerHealth, SendDecision, SendOutcome, SendTicket};

const TOPIC: u8 = 1;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

struct World {
    now: Instant,
    health: PeerHealth<u32, u8>,
    mesh: MeshMaintainer,
    links: HashMap<u32, LinkState>,
    delay: HashMap<u32, Duration>,
    pending: Vec<(Instant, SendTicket<u32, u8>, SendOutcome)>,
    sends: HashMap<u32, u64>,
    max_in_flight: HashMap<u32, u32>,
    eager_history: Vec<usize>,
    suppressions: Vec<(Instant, u32)>,
    recoveries: Vec<(Instant, u32)>,
}

impl World {
    fn new(peers: u32) -> Self {
        let mut links = HashMap::new();
        let mut delay = HashMap::new();
        for p in 0..peers {
            links.insert(p, LinkState::New);
            // 10–50 ms, like the simulator's latency range.
            delay.insert(p, ms(10 + u64::from(p * 7 % 41)));
        }
        Self {
            now: Instant::now(),
            health: PeerHealth::new(HealthParams::default()),
            mesh: MeshMaintainer::new(MeshParams::default()),
            links,
            delay,
            pending: Vec::new(),
            sends: HashMap::new(),
            max_in_flight: HashMap::new(),
            eager_history: Vec::new(),
            suppressions: Vec::new(),
            recoveries: Vec::new(),
        }
    }

    fn apply(&mut self, d: CoolingDecision<u32, u8>, at: Instant) {
        match d {
            CoolingDecision::Suppress { peer, .. } => {
                self.suppressions.push((at, peer));
                // Demote EAGER→LAZY, as the core does.
                if self.links.get(&peer) == Some(&LinkState::Eager) {
                    self.links.insert(peer, LinkState::Lazy);
                }
            }
            CoolingDecision::Recovered { peer, .. } => self.recoveries.push((at, peer)),
        }
    }

    /// Publish one message: EAGER to eager peers, IHAVE to lazy ones.
    fn publish(&mut self) {
        let mut peers: Vec<_> = self.links.iter().map(|(p, l)| (*p, *l)).collect();
        peers.sort_by_key(|(p, _)| *p);
        for (p, link) in peers {
            let kind = match link {
                LinkState::Eager => SendKind::Eager,
                LinkState::Lazy => SendKind::IHave,
                LinkState::New => continue,
            };
            let decision = self.health.begin_send(p, TOPIC, kind, self.now);
            if decision == SendDecision::OverBudget {
                // This model keeps no queue: refused work is dropped.
                self.health.on_budget_overflow(p, self.now);
            }
            if let SendDecision::Send { ticket, timeout } = decision {
                *self.sends.entry(p).or_default() += 1;
                let delay = self.delay[&p];
                let (at, outcome) = if delay <= timeout {
                    (self.now + delay, SendOutcome::Ok { latency: delay })
                } else {
                    (self.now + timeout, SendOutcome::Timeout)
                };
                self.pending.push((at, ticket, outcome));
                let inf = self.health.budgets().in_flight(&p);
                let m = self.max_in_flight.entry(p).or_default();
                *m = (*m).max(inf);
            }
        }
    }

    fn step(&mut self, dt: Duration, maintain: bool) {
        self.now += dt;
        let now = self.now;
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.pending = keep;
        for (at, ticket, outcome) in done {
            if let Some(d) = self.health.on_send_outcome(ticket, outcome, at) {
                self.apply(d, at);
            }
        }
        for d in self.health.handle_timeout(now) {
            self.apply(d, now);
        }
        if maintain {
            let view: Vec<_> = self.links.iter().map(|(p, l)| (*p, *l)).collect();
            let cands = self.health.mesh_candidates(TOPIC, view, now);
            let plan = self.mesh.on_round(&cands, now);
            for p in plan.admit_lazy {
                self.links.insert(p, LinkState::Lazy);
            }
            for (p, _) in plan.demote {
                self.links.insert(p, LinkState::Lazy);
            }
            for (p, _) in plan.promote {
                self.links.insert(p, LinkState::Eager);
            }
            let eager = self
                .links
                .values()
                .filter(|l| **l == LinkState::Eager)
                .count();
            self.eager_history.push(eager);
        }
    }
}

/// G4–G9: 8 neighbours, 20 messages/s. Neighbour 3 becomes slow (2 s send
/// delay) at t = 30 s and heals at t = 150 s.
///
/// * within 30 s of becoming slow it is suppressed and is no longer EAGER;
/// * it never has more than its budget in flight;
/// * while slow it gets one probe per cooldown (backoff doubling), and the
///   eager degree stays within [D_low, D_high] throughout;
/// * after healing it is re-admitted through a single probe, stays LAZY
///   during probation, and the mesh never bulk re-promotes.
#[test]
fn slow_neighbour_is_cooled_demoted_and_readmitted() {
    let mut w = World::new(8);
    let p = MeshParams::default();
    let slow = 3;
    let t0 = w.now;
    // 20 messages/s in 50 ms steps; maintenance every 500 ms.
    for step in 0..(240 * 20u32) {
        let t = step / 20;
        if step == 30 * 20 {
            w.delay.insert(slow, Duration::from_secs(2));
        }
        if step == 150 * 20 {
            w.delay.insert(slow, ms(25));
        }
        w.publish();
        w.step(ms(50), step % 10 == 0);
        if t >= 5 {
            let e = *w.eager_history.last().unwrap();
            assert!((p.d_low..=p.d_high).contains(&e), "t={t}: eager {e}");
        }
        if (31..150).contains(&t) && step % 20 == 0 && t >= 60 {
            assert_ne!(w.links[&slow], LinkState::Eager, "t={t}: slow peer eager");
        }
    }
    let slow_since = t0 + Duration::from_secs(30);
    let first = w
        .suppressions
        .iter()
        .find(|(at, p)| *p == slow && *at >= slow_since)
        .map(|(at, _)| *at - slow_since)
        .expect("slow peer suppressed");
    assert!(first <= Duration::from_secs(30), "cooled after {first:?}");
    assert!(w.max_in_flight[&slow] <= 4, "{:?}", w.max_in_flight);
    // Nobody else was ever cooled.
    assert!(w.suppressions.iter().all(|(_, p)| *p == slow));
    // One recovery, after healing.
    let healed = t0 + Duration::from_secs(150);
    let rec: Vec<_> = w.recoveries.iter().filter(|(_, p)| *p == slow).collect();
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert!(rec[0].0 >= healed);
    // Probes while slow: one per cooldown, 10+20+40+... s within 120 s.
    let probes_while_slow = w
        .suppressions
        .iter()
        .filter(|(at, p)| *p == slow && *at > slow_since && *at < healed)
        .count();
    assert!((2..=5).contains(&probes_while_slow), "{probes_while_slow}");
    // Never bulk re-promotion: no maintenance round changed the eager degree
    // by more than the per-round promotion cap.
    let jumps = w
        .eager_history
        .windows(2)
        .map(|x| x[1].abs_diff(x[0]))
        .max()
        .unwrap();
    assert!(jumps <= p.max_promotions, "{jumps}");
    let snap = w.health.snapshot(w.now);
    assert!(snap.suppressed.is_empty(), "{:?}", snap.suppressed);
    assert!(snap.peers.len() == 8);
}

/// G9: a fanout storm with one blocked neighbour among 50: the blocked one
/// never holds more than its window, the others keep their full throughput,
/// and the refused work is counted by kind.
#[test]
fn blocked_neighbour_in_a_fanout_storm() {
    let mut w = World::new(50);
    for p in 0..50 {
        w.links.insert(
            p,
            if p % 5 == 0 {
                LinkState::Eager
            } else {
                LinkState::Lazy
            },
        );
    }
    // Neighbour 10 (eager) accepts nothing: every send would sit until its
    // timeout (we make its delay huge).
    w.delay.insert(10, Duration::from_secs(3600));
    for _ in 0..2_000 {
        // 200 publishes/s for 10 s: each healthy peer's window must grow
        // past its bandwidth-delay product (up to 10 sends in flight).
        w.publish();
        w.step(ms(5), false);
    }
    assert!(w.max_in_flight[&10] <= 4);
    let c = w.health.budgets().counters();
    assert!(c.refused(SendKind::Eager) > 0);
    // Healthy peers got (almost) every message: only the first window's
    // growth costs a few.
    for p in (0..50).filter(|p| *p != 10) {
        assert!(w.sends[&p] >= 1_900, "peer {p}: {}", w.sends[&p]);
    }
    assert!(w.sends[&10] <= 4, "blocked peer: {}", w.sends[&10]);
    // The blocked peer's score reflects the exhaustion.
    let comp = w.health.scores().components(&10, w.now).unwrap();
    assert!(comp.budget_exhausted < 0.0 && comp.total < 0.0, "{comp:?}");
}
