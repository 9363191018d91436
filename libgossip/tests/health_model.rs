//! Seeded random operation sequences against the health tables, checked
//! against simple reference models (the state-machine fuzzing of STYLE.md
//! item 9, run deterministically in CI).
#![allow(clippy::disallowed_methods)] // Tests own the clock: `Instant::now()` is only an origin.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libgossip::proto::health::SendOutcome;
use libgossip::proto::health::budget::{BudgetParams, Budgets, SendKind};
use libgossip::proto::health::cooling::{CoolingDecision, CoolingParams, CoolingTable, SendGate};
use libgossip::proto::store::{Retained, RetentionParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// G9: under any interleaving of acquire / release / forget over a few
/// peers, in-flight equals the number of live tickets (model), an acquisition
/// never takes the peer past its current window, and nothing ever exceeds
/// the ceiling (a timeout may shrink the window below what is already in
/// flight; those sends drain without new ones being admitted).
#[test]
fn budget_matches_model() {
    for seed in 0..10u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let params = BudgetParams {
            max_peers: 4,
            ..BudgetParams::default()
        };
        let ceiling = params.ceiling;
        let mut b: Budgets<u8> = Budgets::new(params);
        let mut live: Vec<(u8, u64, _)> = Vec::new();
        let mut epoch: HashMap<u8, u64> = HashMap::new();
        for _ in 0..5_000 {
            let peer = rng.random_range(0..6u8);
            match rng.random_range(0..10) {
                0..=4 => {
                    let kind = SendKind::ALL[rng.random_range(0..5)];
                    if let Ok(t) = b.try_acquire(peer, kind) {
                        assert!(b.in_flight(&peer) <= b.limit_of(&peer), "seed {seed}");
                        live.push((peer, *epoch.entry(peer).or_default(), t));
                    }
                }
                5..=8 if !live.is_empty() => {
                    let i = rng.random_range(0..live.len());
                    let (_, _, t) = live.swap_remove(i);
                    let outcome = match rng.random_range(0..3) {
                        0 => SendOutcome::Timeout,
                        1 => SendOutcome::Failed,
                        _ => SendOutcome::Ok {
                            latency: Duration::from_millis(5),
                        },
                    };
                    b.release(t, outcome);
                }
                _ => {
                    // Forgetting only an idle peer keeps the model simple;
                    // stale tickets are covered by a unit test.
                    if b.in_flight(&peer) == 0 {
                        b.forget(peer);
                        *epoch.entry(peer).or_default() += 1;
                    }
                }
            }
            for p in 0..6u8 {
                let model = live.iter().filter(|(q, _, _)| *q == p).count() as u32;
                assert_eq!(b.in_flight(&p), model, "seed {seed} peer {p}");
                assert!(f64::from(b.in_flight(&p)) <= ceiling, "seed {seed}");
            }
            assert!(b.len() <= 4);
        }
        for (_, _, t) in live {
            b.release(t, SendOutcome::Failed);
        }
    }
}

/// G5, G7: under random sends, outcomes, probe losses and cleanups, the
/// cooling gate never allows a send to a pair that is suppressed, never has
/// two probes in flight for one pair, and every Suppress is followed by
/// nothing but `Suppressed` answers until its `until`.
#[test]
fn cooling_gate_invariants() {
    for seed in 0..10u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Room for all 8 pairs: capacity eviction (which may legitimately
        // forget a suppression, counted) is covered by a unit test.
        let mut c: CoolingTable<u8, u8> = CoolingTable::new(CoolingParams::default());
        let t0 = Instant::now();
        let mut now = t0;
        // (peer, topic) → suppressed-until per the last decision.
        let mut until: HashMap<(u8, u8), Instant> = HashMap::new();
        let mut probe_out: HashMap<(u8, u8), bool> = HashMap::new();
        let mut inflight: Vec<((u8, u8), bool, Instant)> = Vec::new();
        for _ in 0..20_000 {
            now += Duration::from_millis(rng.random_range(0..400));
            let key = (rng.random_range(0..4u8), rng.random_range(0..2u8));
            match c.gate(key.0, key.1, now) {
                SendGate::Allowed => {
                    if let Some(u) = until.get(&key) {
                        assert!(now >= *u, "seed {seed}: allowed while suppressed");
                    }
                    inflight.push((
                        key,
                        false,
                        now + Duration::from_millis(rng.random_range(1..2000)),
                    ));
                }
                SendGate::Probe => {
                    assert!(
                        !probe_out.get(&key).copied().unwrap_or(false),
                        "seed {seed}: 2 probes"
                    );
                    probe_out.insert(key, true);
                    if rng.random_bool(0.8) {
                        inflight.push((
                            key,
                            true,
                            now + Duration::from_millis(rng.random_range(1..2000)),
                        ));
                    } // else: the outcome is lost; the deadline must fail it
                }
                SendGate::Suppressed { .. } => {}
            }
            let mut i = 0;
            while i < inflight.len() {
                if inflight[i].2 <= now {
                    let (k, probe, _) = inflight.swap_remove(i);
                    let outcome = if rng.random_bool(0.4) {
                        SendOutcome::Timeout
                    } else {
                        SendOutcome::Ok {
                            latency: Duration::from_millis(30),
                        }
                    };
                    if probe {
                        probe_out.insert(k, false);
                    }
                    match c.on_send_outcome(k.0, k.1, outcome, probe, now) {
                        Some(CoolingDecision::Suppress { until: u, .. }) => {
                            until.insert(k, u);
                        }
                        Some(CoolingDecision::Recovered { .. }) => {
                            until.remove(&k);
                        }
                        None => {}
                    }
                } else {
                    i += 1;
                }
            }
            for d in c.handle_timeout(now) {
                if let CoolingDecision::Suppress {
                    peer,
                    topic,
                    until: u,
                    ..
                } = d
                {
                    until.insert((peer, topic), u);
                    probe_out.insert((peer, topic), false);
                }
            }
            if rng.random_range(0..50) == 0 {
                c.cleanup(now);
            }
            assert!(c.len() <= 8);
            for s in c.suppressed(now) {
                assert!(s.backoff <= CoolingParams::default().max_cooldown);
            }
        }
        let k = c.counters();
        assert!(
            k.suppressed_timeouts > 0 && k.probe_failed > 0 && k.probe_lost > 0,
            "{k:?}"
        );
        assert!(k.recovered > 0, "{k:?}");
    }
}

/// G16: random inserts, removals and expiry keep the store within its byte
/// budget, and every insert is accounted for by exactly one exit or is live.
#[test]
fn store_accounting_matches() {
    for seed in 0..10u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut r: Retained<u16, u32> = Retained::new(RetentionParams {
            max_bytes: 50_000,
            ttl_floor: Duration::from_secs(1),
            ttl_ceiling: Duration::from_secs(60),
            fill: 0.8,
            rate_tau: Duration::from_secs(5),
            entry_overhead: 64,
        });
        let t0 = Instant::now();
        let mut now = t0;
        for _ in 0..20_000 {
            now += Duration::from_millis(rng.random_range(0..50));
            let k = rng.random_range(0..2_000u16);
            match rng.random_range(0..10) {
                0..=6 => {
                    r.insert(k, u32::from(k), rng.random_range(0..2_000), now);
                }
                7 => {
                    r.remove(&k);
                }
                8 => {
                    r.handle_timeout(now);
                }
                _ => {
                    if let Some(v) = r.get(&k) {
                        assert_eq!(*v, u32::from(k));
                    }
                }
            }
            assert!(r.bytes() <= 50_000);
        }
        let s = r.stats(now);
        assert_eq!(
            s.inserted,
            s.evicted_ttl + s.evicted_bytes + s.removed + s.len as u64,
            "seed {seed}: {s:?}"
        );
    }
}
