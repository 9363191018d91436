//! `stagebench`: measure one stage of Tern in seconds and print a table, or
//! with `--json` one JSON object per measured case (one per line).
//!
//! ```text
//! cargo run --release -p benches --bin stagebench -- ipc [--json] [--quick]
//! cargo run --release -p benches --bin stagebench -- gossip libgossip/simulations/s100.toml
//! ```

use anyhow::Result;
use benches::{Outcome, SuiteOpts, suites};
use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Suite {
    /// Unix-socket frames and shared-memory rings between processes.
    Ipc,
    /// ML-DSA-65 verification in-process and through verifyd.
    Verify,
    /// libtransport QUIC side by side with quinn.
    Transport,
    /// Gossip simulator scenarios.
    Gossip,
}

#[derive(Debug, Parser)]
#[command(about = "Per-stage throughput and latency for Tern")]
struct Cli {
    /// Which stage to measure.
    suite: Suite,
    /// Print one JSON object per measured case instead of tables.
    #[arg(long)]
    json: bool,
    /// Shorter runs, for smoke tests.
    #[arg(long)]
    quick: bool,
    /// Suite-specific arguments (e.g. scenario files for `gossip`).
    args: Vec<String>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let opts = SuiteOpts {
        quick: cli.quick,
        args: cli.args,
    };
    let outcome = run(cli.suite, &opts)?;
    if cli.json {
        for obj in &outcome.json {
            println!("{}", serde_json::to_string(obj)?);
        }
    } else {
        for table in &outcome.tables {
            println!("{table}");
        }
    }
    Ok(())
}

fn run(suite: Suite, opts: &SuiteOpts) -> Result<Outcome> {
    match suite {
        #[cfg(feature = "ipc")]
        Suite::Ipc => suites::ipc::run(opts),
        #[cfg(feature = "verify")]
        Suite::Verify => suites::verify::run(opts),
        #[cfg(feature = "transport")]
        Suite::Transport => suites::transport::run(opts),
        #[cfg(feature = "gossip")]
        Suite::Gossip => suites::gossip::run(opts),
        #[allow(unreachable_patterns)]
        other => anyhow::bail!("suite {other:?} was not compiled in (enable its cargo feature)"),
    }
}
