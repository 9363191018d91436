//! The `gossip` suite: runs simulator scenario files and reports delivery,
//! redundancy (RMR), last delivery hop (LDH), latency, per-node sends per
//! publish and wall time.
//!
//! RMR and LDH come twice: over the whole run (`rmr`: all copies ÷ all
//! deliveries − 1; `ldh`: the deepest delivery, a direct neighbour at hop 1)
//! and as iroh-gossip's simulator reports them (`rmr_round_mean`,
//! `ldh_round_mean`: each round's RMR = copies ÷ (deliveries − 1) − 1 and
//! LDH = deepest hop with the origin's push at 0, then the mean over
//! rounds), so the two simulators' figures compare directly.
//!
//! `stagebench gossip [FILE.toml ...]` — default: the 100-node scenarios.
//! `--quick` runs only the first seed of each file.
//!
//! `stagebench gossip soak [MESSAGES]` — one node under sustained load with
//! the default config, reporting process memory at checkpoints (see [`soak`]).
//!
//! `stagebench gossip codec` — bytes, emit and parse nanoseconds of the wire
//! codec for one frame of every kind (see [`codec`]).
//!
//! `stagebench gossip live [MESSAGES]` — the runtime over real libtransport
//! connections, 5 nodes on loopback, real ML-DSA-65: publishes/s delivered
//! to all and delivery latency (see [`live`]).

use crate::{Outcome, SuiteOpts, Table};
use libgossip::sim::{Report, Scenario, Sim, StubCrypto};
use std::path::{Path, PathBuf};

pub mod codec;
pub mod live;
pub mod soak;

fn default_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../libgossip/simulations");
    ["s100-one", "s100-random", "s100-all"]
        .iter()
        .map(|n| dir.join(format!("{n}.toml")))
        .collect()
}

/// Runs the suite.
pub fn run(opts: &SuiteOpts) -> anyhow::Result<Outcome> {
    if opts.args.first().is_some_and(|a| a == "soak") {
        return soak::run(opts);
    }
    if opts.args.first().is_some_and(|a| a == "codec") {
        return codec::run(opts);
    }
    if opts.args.first().is_some_and(|a| a == "live") {
        return live::run(opts);
    }
    let files: Vec<PathBuf> = if opts.args.is_empty() {
        default_files()
    } else {
        opts.args.iter().map(PathBuf::from).collect()
    };
    let mut table = Table::new(
        "gossip simulation (virtual time; stub signatures)",
        &[
            "scenario",
            "nodes",
            "seed",
            "msgs",
            "delivered",
            "missed",
            "rmr",
            "ldh",
            "rmr round mean",
            "ldh round mean",
            "lat p50 ms",
            "lat p99 ms",
            "lat max ms",
            "dups",
            "sends/pub max",
            "sends/pub p99",
            "eager p50/p99/max",
            "state B p50",
            "wall s",
        ],
    );
    let mut json = Vec::new();
    for f in files {
        let sc = Scenario::load(&f)?;
        let seeds: Vec<u64> = if opts.quick {
            sc.seeds.iter().take(1).copied().collect()
        } else {
            sc.seeds.clone()
        };
        for seed in seeds {
            let r = Sim::new(sc.clone(), seed, Box::new(StubCrypto { seed })).run();
            row(&mut table, &r);
            json.push(to_json(&sc, &r));
        }
    }
    Ok(Outcome {
        tables: vec![table],
        json,
    })
}

fn row(t: &mut Table, r: &Report) {
    t.row([
        r.scenario.clone(),
        r.nodes.to_string(),
        r.seed.to_string(),
        r.messages.to_string(),
        format!("{:.5}", r.delivery_ratio),
        r.missed.to_string(),
        format!("{:.3}", r.rmr),
        r.ldh.to_string(),
        format!("{:.3}", r.round_means.rmr),
        format!("{:.2}", r.round_means.ldh),
        format!("{:.0}", r.latency_ms.p50),
        format!("{:.0}", r.latency_ms.p99),
        format!("{:.0}", r.latency_ms.max),
        r.duplicates.to_string(),
        r.sends_per_publish_max.to_string(),
        r.sends_per_publish_p99.to_string(),
        format!(
            "{}/{}/{}",
            r.eager_degree.p50, r.eager_degree.p99, r.eager_degree.max
        ),
        format!("{:.0}", r.state_bytes.p50),
        format!("{:.2}", r.wall.as_secs_f64()),
    ]);
}

fn to_json(sc: &Scenario, r: &Report) -> serde_json::Value {
    let mut v = headline_json(sc, r);
    if let Some(o) = v.as_object_mut() {
        // Per round, iroh-gossip's definitions (null: no publish or fewer
        // than two deliveries that round).
        let rmr: Vec<_> = r.rounds.iter().map(|x| x.rmr_iroh()).collect();
        let ldh: Vec<_> = r.rounds.iter().map(|x| x.ldh_iroh()).collect();
        o.insert("rmr_by_round".into(), serde_json::json!(rmr));
        o.insert("ldh_by_round".into(), serde_json::json!(ldh));
        // Exact encoded bytes (`Message::encoded_len`), by kind.
        let bytes: serde_json::Map<_, _> = r
            .sent_bytes_by_kind
            .iter()
            .map(|(k, v)| ((*k).to_string(), serde_json::json!(v)))
            .collect();
        o.insert("sent_bytes_by_kind".into(), bytes.into());
    }
    v
}

fn headline_json(sc: &Scenario, r: &Report) -> serde_json::Value {
    serde_json::json!({
        "suite": "gossip",
        "scenario": r.scenario,
        "nodes": r.nodes,
        "seed": r.seed,
        "rounds": sc.rounds,
        "messages": r.messages,
        "delivery_ratio": r.delivery_ratio,
        "missed": r.missed,
        "rmr": r.rmr,
        "ldh": r.ldh,
        "rmr_round_mean": r.round_means.rmr,
        "ldh_round_mean": r.round_means.ldh,
        "rounds_measured": r.round_means.rounds,
        "latency_p50_ms": r.latency_ms.p50,
        "latency_p99_ms": r.latency_ms.p99,
        "latency_max_ms": r.latency_ms.max,
        "duplicates": r.duplicates,
        "max_sends_per_publish": r.sends_per_publish_max,
        "p99_sends_per_publish": r.sends_per_publish_p99,
        "max_eager_per_publish": r.eager_per_publish_max,
        "max_ihave_per_publish": r.ihave_per_publish_max,
        "view_bound": r.view_bound,
        "view_bound_ok": r.view_bound_ok(),
        "eager_degree_p50": r.eager_degree.p50,
        "eager_degree_p99": r.eager_degree.p99,
        "eager_degree_max": r.eager_degree.max,
        "lazy_degree_p50": r.lazy_degree.p50,
        "lazy_degree_p99": r.lazy_degree.p99,
        "state_bytes_p50": r.state_bytes.p50,
        "state_bytes_max": r.state_bytes.max,
        "forged_delivered": r.forged_delivered,
        "over_budget": r.over_budget,
        "queued": r.queued,
        "queue_dropped": r.queue_dropped,
        "iwant_timeouts": r.iwant_timeouts,
        "invalid_verdicts": r.invalid_verdicts,
        "partition_recovered": r.partition_recovered.map(|(n, ok)| serde_json::json!({"messages": n, "recovered": ok})),
        "sent_by_kind": r.sent_by_kind.iter().map(|(k, v)| ((*k).to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        "events": r.events,
        "sim_s": r.sim_time.as_secs_f64(),
        "wall_s": r.wall.as_secs_f64(),
    })
}
