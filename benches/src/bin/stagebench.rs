//! `stagebench`: measure one stage of Tern in seconds and print a table, or
//! with `--json` one JSON object per line: one per measured case and, for
//! suites that have one, a final `"case": "summary"` object holding the
//! suite's headline keys. Every object carries `suite` and `meta` (commit,
//! CPU model, cores, `quick`, UTC time) so a result file explains itself.
//!
//! ```text
//! cargo run --release -p benches --bin stagebench -- ipc [--json] [--quick]
//! cargo run --release -p benches --bin stagebench -- gossip libgossip/simulations/s100-one.toml
//! cargo run --release -p benches --bin stagebench -- transport --help
//! cargo run --release -p benches --bin stagebench -- node --quick
//! ```

use anyhow::Result;
use benches::{Outcome, SuiteOpts, meta, suites};
use clap::{Args, Parser, Subcommand};

/// Suite arguments are free-form words each suite parses itself; the help
/// text of each suite lists them.
#[derive(Debug, Args)]
struct SuiteArgs {
    /// Suite-specific arguments (see this suite's help).
    args: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Suite {
    /// Unix-socket frames and shared-memory rings between processes.
    #[command(after_help = "Arguments (any order):
  no-pin          leave thread placement to the scheduler (default: pin to CPUs 0 and 1)
  park-only       never spin on the ring; always park on the eventfd
  ceiling-us=N    ring spin ceiling in microseconds
  floor-us=N      ring spin floor in microseconds
  peer-wake-us=N  how long the peer's wake-up is assumed to take
  uds-sndbuf=N    Unix socket send buffer in bytes (0 = kernel default)")]
    Ipc(SuiteArgs),
    /// ML-DSA-65 verification in-process and through verifyd.
    #[command(
        after_help = "No arguments: every built-in backend in process, then through \
verifyd over frames and over the shared-memory ring, then the two-process scaling case."
    )]
    Verify(SuiteArgs),
    /// libtransport QUIC side by side with quinn 0.11 on loopback.
    #[command(after_help = "Arguments:
  (none)          every case, libtransport and quinn interleaved per repetition
  latency         only echo (both sides), receive-ACK round trip and rate,
                  and dm-under-load (DMs under a bulk transfer + probe flood)
  SIDE:CASE       one case alone, for profiling: SIDE is `ours` or `quinn`,
                  CASE is `bulk`, `bulk-nogso`, `msg1k`, `setup` or `echo`;
                  `ours:ack`, `ours:acked`, `ours:dm-under-load`
Build with `--features uring` to add the io_uring backend's bulk case.")]
    Transport(SuiteArgs),
    /// Gossip simulator scenarios and the one-node memory soak.
    #[command(after_help = "Arguments:
  FILE...         scenario files, e.g. libgossip/simulations/s1000-one.toml
                  (default: s100-one, s100-random and s100-all from
                  libgossip/simulations/; --quick runs only each file's first seed)
  soak [N]        the long-run memory soak of one node with N messages
                  (default 10,000,000; 1,000,000 with --quick)
  codec           bytes, emit and parse nanoseconds of the wire codec for
                  one frame of every kind
  live [N]        the runtime over real libtransport connections, 5 nodes
                  on loopback (default 2,000 messages; 200 with --quick)")]
    Gossip(SuiteArgs),
    /// One whole node (spawned relayd, verifyd, gossipd) against the same
    /// stages in one process.
    #[command(after_help = "Arguments:
  [N]             messages through the node in all; the memory figure is
                  after these (default 1,000,000; 20,000 with --quick)
Needs the release daemons next to stagebench:
  cargo build --release -p relayd -p gossipd -p verifyd")]
    Node(SuiteArgs),
}

impl Suite {
    fn name(&self) -> &'static str {
        match self {
            Suite::Ipc(_) => "ipc",
            Suite::Verify(_) => "verify",
            Suite::Transport(_) => "transport",
            Suite::Gossip(_) => "gossip",
            Suite::Node(_) => "node",
        }
    }

    fn args(&self) -> &[String] {
        match self {
            Suite::Ipc(a)
            | Suite::Verify(a)
            | Suite::Transport(a)
            | Suite::Gossip(a)
            | Suite::Node(a) => &a.args,
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "Per-stage throughput and latency for Tern")]
struct Cli {
    /// Print one JSON object per line (each measured case, then the suite's
    /// summary) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Shorter runs, for smoke tests.
    #[arg(long, global = true)]
    quick: bool,
    /// Which stage to measure.
    #[command(subcommand)]
    suite: Suite,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let opts = SuiteOpts {
        quick: cli.quick,
        args: cli.suite.args().to_vec(),
    };
    let outcome = run(&cli.suite, &opts)?;
    if cli.json {
        let meta = meta::RunMeta::collect(cli.suite.name(), &opts);
        for obj in outcome.json {
            println!("{}", serde_json::to_string(&meta.stamp(obj))?);
        }
    } else {
        for table in &outcome.tables {
            println!("{table}");
        }
    }
    Ok(())
}

fn run(suite: &Suite, opts: &SuiteOpts) -> Result<Outcome> {
    match suite {
        #[cfg(feature = "ipc")]
        Suite::Ipc(_) => suites::ipc::run(opts),
        #[cfg(feature = "verify")]
        Suite::Verify(_) => suites::verify::run(opts),
        #[cfg(feature = "transport")]
        Suite::Transport(_) => suites::transport::run(opts),
        #[cfg(feature = "gossip")]
        Suite::Gossip(_) => suites::gossip::run(opts),
        #[cfg(feature = "node")]
        Suite::Node(_) => suites::node::run(opts),
        #[allow(unreachable_patterns)]
        other => anyhow::bail!(
            "suite {} was not compiled in (enable its cargo feature)",
            other.name()
        ),
    }
}
