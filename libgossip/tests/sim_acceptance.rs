//! PlumTree/HyParView acceptance at 20 and 100 nodes (10–50 ms per-pair
//! latency, 30 rounds, seeds 1–3), mirroring the bounds iroh-gossip's
//! simulator asserts. One test per (scenario, seed) so nextest runs them in
//! parallel. Proves G1, G2, G3 (every delivery went through a Valid verdict),
//! G8 (p99 eager degree within [D_low, D_high], D_high below the active
//! view), G18 (sends per publish bounded by the view).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

mod common;
use common::{run, scenario};

fn check(name: &str, seed: u64, max_rmr: f64, max_ldh: u16) {
    let sc = scenario(name);
    assert!(
        sc.seeds.contains(&seed),
        "seed {seed} not listed in {name}.toml"
    );
    let r = run(&sc, seed);
    assert_eq!(r.missed, 0, "{name}/{seed}: missed deliveries");
    assert_eq!(r.delivery_ratio, 1.0);
    assert!(r.rmr < max_rmr, "{name}/{seed}: rmr {} ≥ {max_rmr}", r.rmr);
    assert!(r.ldh < max_ldh, "{name}/{seed}: ldh {} ≥ {max_ldh}", r.ldh);
    assert!(
        r.view_bound_ok(),
        "{name}/{seed}: {} sends per publish > bound {}",
        r.sends_per_publish_max,
        r.view_bound
    );
    assert_eq!(r.forged_delivered, 0, "no double or forged delivery");
    // A D_high equal to the active view would bound nothing. Below ~50
    // nodes p99 is the maximum, which a publisher may hold (it keeps its
    // links: they are its tree's first hop).
    let d = libgossip::proto::Config::default();
    assert!(d.d_high < d.active_view, "D_high {} vacuous", d.d_high);
    if sc.nodes >= 100 {
        assert!(
            r.eager_degree.p99 >= d.d_low as f64 && r.eager_degree.p99 <= d.d_high as f64,
            "{name}/{seed}: eager degree {:?} outside [{}, {}]",
            r.eager_degree,
            d.d_low,
            d.d_high
        );
    }
    // Every live node publishes once per round under `senders = all`, one
    // node per round otherwise; these scenarios have no crash or churn, so
    // every node is live in every round.
    let published_per_round = match sc.senders {
        libgossip::sim::Senders::All => sc.nodes,
        _ => 1,
    };
    assert_eq!(
        r.messages,
        sc.rounds * published_per_round,
        "{name}/{seed}: messages published"
    );
}

macro_rules! acc {
    ($($t:ident: $name:literal, $seed:literal, $rmr:literal, $ldh:literal;)*) => {
        $(#[test] fn $t() { check($name, $seed, $rmr, $ldh); })*
    };
}

acc! {
    s20_one_1: "s20-one", 1, 0.2, 15;
    s20_one_2: "s20-one", 2, 0.2, 15;
    s20_one_3: "s20-one", 3, 0.2, 15;
    s20_random_1: "s20-random", 1, 1.0, 18;
    s20_random_2: "s20-random", 2, 1.0, 18;
    s20_random_3: "s20-random", 3, 1.0, 18;
    s20_all_1: "s20-all", 1, 3.0, 30;
    s20_all_2: "s20-all", 2, 3.0, 30;
    s20_all_3: "s20-all", 3, 3.0, 30;
    s100_one_1: "s100-one", 1, 0.2, 15;
    s100_one_2: "s100-one", 2, 0.2, 15;
    s100_one_3: "s100-one", 3, 0.2, 15;
    s100_random_1: "s100-random", 1, 1.0, 18;
    s100_random_2: "s100-random", 2, 1.0, 18;
    s100_random_3: "s100-random", 3, 1.0, 18;
    // All-send at 100 nodes is 3,000 messages and ~2.5 M events per seed;
    // the root Cargo.toml optimises libgossip in test builds for these.
    s100_all_1: "s100-all", 1, 3.0, 30;
    s100_all_2: "s100-all", 2, 3.0, 30;
    s100_all_3: "s100-all", 3, 3.0, 30;
}

/// The simulator's byte counts are real encoded sizes: every PRUNE (a
/// topic header and nothing else) is counted at exactly the bytes
/// `Message::emit` writes for it, and every kind that was sent has bytes.
#[test]
fn byte_counts_are_encoded_sizes() {
    use libgossip::proto::{Body, Message, TopicId};
    let sc = scenario("s20-random");
    let r = run(&sc, sc.seeds[0]);
    let count = |v: &[(&str, u64)], k: &str| v.iter().find(|(n, _)| *n == k).map_or(0, |(_, x)| *x);
    let prune = Message {
        topic: TopicId::from_name("t"),
        body: Body::Prune,
    };
    let mut buf = vec![0u8; 256];
    let prune_len = prune.emit(&mut buf).unwrap() as u64;
    let prunes = count(&r.sent_by_kind, "prune");
    assert!(prunes > 0, "scenario sent no PRUNE: {:?}", r.sent_by_kind);
    assert_eq!(count(&r.sent_bytes_by_kind, "prune"), prunes * prune_len);
    for (kind, n) in &r.sent_by_kind {
        let bytes = count(&r.sent_bytes_by_kind, kind);
        assert_eq!(*n > 0, bytes > 0, "{kind}: {n} frames, {bytes} bytes");
        assert!(
            bytes >= n * prune_len,
            "{kind}: {bytes} bytes for {n} frames"
        );
    }
}
