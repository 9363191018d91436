//! Deterministic discrete-event simulator (feature `sim`).
//!
//! Virtual time (a fixed `Instant` base plus offsets), one seeded ChaCha RNG,
//! per-pair latency fixed from a seeded hash (uniform in a range) plus
//! optional jitter, loss, crashes, partitions, slow peers, churn and forged
//! copies. Each node is a real [`crate::proto::Node`]; the simulator plays the
//! transport (delivering transmits and reporting send outcomes) and `verifyd`
//! (answering verify requests with [`SimCrypto`]). The same scenario and seed
//! always give the same report (wall time aside).

mod crypto;
mod engine;
mod metrics;
mod queue;
mod scenario;
pub mod soak;

pub use crypto::{SimCrypto, StubCrypto};
pub use engine::Sim;
pub use metrics::{Dist, Report, RoundMeans, RoundReport, SlowReport};
pub use scenario::{Churn, Crash, Forge, Partition, Scenario, ScenarioError, Senders, Slow};

/// Runs every seed of `scenario` with the stub signatures.
pub fn run_scenario(scenario: &Scenario) -> Vec<Report> {
    scenario
        .seeds
        .iter()
        .map(|seed| {
            Sim::new(
                scenario.clone(),
                *seed,
                Box::new(StubCrypto { seed: *seed }),
            )
            .run()
        })
        .collect()
}
