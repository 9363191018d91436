//! Slow peer (2 s send delay): cooling, latency recovery and single-probe
//! re-admission. Proves G4 (RTT-derived send timeouts), G5 (cooling and
//! EAGER→LAZY demotion), G7 (one probe per cooldown).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

mod common;
use common::{run, scenario};

#[test]
fn slow_peer_is_cooled_and_readmitted() {
    let sc = scenario("s100-slow");
    for seed in sc.seeds.clone() {
        let r = run(&sc, seed);
        // Baseline: the same run with the peer not slow at all.
        let mut base_sc = sc.clone();
        if let Some(s) = base_sc.slow.as_mut() {
            s.delay_ms = 0;
        }
        let base = run(&base_sc, seed);
        let s = r.slow.clone().expect("slow report");
        let b = base.slow.clone().expect("baseline report");
        eprintln!("slow {s:?}\nbaseline {b:?}\nmissed {:?}", r.missed_sample);
        assert!(
            s.neighbours >= 3,
            "slow peer had neighbours: {}",
            s.neighbours
        );
        assert!(
            s.cooled_within_30s * 10 >= s.neighbours * 9,
            "≥ 90 % of neighbours cooled it within 30 s: {}/{}",
            s.cooled_within_30s,
            s.neighbours
        );
        assert!(
            s.slowed_p99_ms <= b.slowed_p99_ms * 1.1,
            "others' p99 {:.1} ms within 10 % of baseline {:.1} ms",
            s.slowed_p99_ms,
            b.slowed_p99_ms
        );
        assert!(s.recovered_neighbours >= 1, "re-admitted after recovery");
        assert!(
            s.max_probes_after_recovery <= 1,
            "one probe per neighbour and topic: {}",
            s.max_probes_after_recovery
        );
        assert!(
            s.recovered_delivery,
            "the recovered peer receives later messages"
        );
        assert_eq!(r.forged_delivered, 0);
    }
}
