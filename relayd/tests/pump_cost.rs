//! Cost of the recv pump per message (push + pop), measured, not asserted:
//! `cargo test -p relayd --release --test pump_cost -- --ignored --nocapture`.
//! Results go in docs/perf/relay.md. Capability: P4, H5.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The measurement owns the clock.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use relayd::{PumpConfig, Push, RecvPump, Stream};

/// Median ns per push+pop over 5 runs of 1 M messages: steady state (the
/// driver keeps up) and saturated pubsub (every push dropped). Capability: P4.
#[test]
#[ignore = "measurement; run by hand with --release (see the module docs)"]
fn push_pop_cost() {
    let kinds = [
        Stream::Pubsub,
        Stream::Pubsub,
        Stream::Pubsub,
        Stream::Dm,
        Stream::Membership,
    ];
    let n = 1_000_000u32;
    let mut steady = Vec::new();
    let mut dropped = Vec::new();
    for _ in 0..5 {
        let mut pump = RecvPump::new(PumpConfig::default()).unwrap();
        let t0 = Instant::now();
        for i in 0..n {
            let k = kinds[i as usize % kinds.len()];
            assert!(matches!(pump.push(k, 1100, i, t0), Push::Enqueued));
            if i % 8 == 7 {
                while pump.pop(t0).is_some() {}
            }
        }
        steady.push(t0.elapsed().as_nanos() as f64 / f64::from(n));
        let t1 = Instant::now();
        for i in 0..n {
            let _ = pump.push(Stream::Pubsub, 1100, i, t1);
        }
        dropped.push(t1.elapsed().as_nanos() as f64 / f64::from(n));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "pump_push_pop_ns {:.1}  pump_saturated_push_ns {:.1}",
        median(&mut steady),
        median(&mut dropped)
    );
}
