//! Helpers shared by the simulator tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap (STYLE.md)

use libgossip::sim::{Report, Scenario, Sim, StubCrypto};
use std::path::Path;

/// Loads `libgossip/simulations/<name>.toml`.
pub fn scenario(name: &str) -> Scenario {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("simulations")
        .join(format!("{name}.toml"));
    Scenario::load(&p).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs one seed of a scenario with stub signatures.
pub fn run(sc: &Scenario, seed: u64) -> Report {
    let r = Sim::new(sc.clone(), seed, Box::new(StubCrypto { seed })).run();
    eprintln!(
        "{} seed {}: delivered {:.5} missed {} rmr {:.3} ldh {} p99 {:.0} ms sends/publish max {} eager {:?} wall {:?}",
        r.scenario,
        r.seed,
        r.delivery_ratio,
        r.missed,
        r.rmr,
        r.ldh,
        r.latency_ms.p99,
        r.sends_per_publish_max,
        r.eager_degree,
        r.wall
    );
    r
}
