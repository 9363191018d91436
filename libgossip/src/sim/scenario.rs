//! Scenario descriptions (TOML files under `libgossip/simulations/`).

use serde::Deserialize;
use std::path::Path;

/// Who publishes each round.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Senders {
    /// Node 0 publishes every round.
    One,
    /// A random live node per round.
    RandomPerRound,
    /// Every live node, every round.
    All,
}

/// Crash a fraction of nodes at a round.
#[derive(Clone, Debug, Deserialize)]
pub struct Crash {
    /// Fraction of nodes (never the sender of `one`).
    pub fraction: f64,
    /// Round at whose start they crash.
    pub at_round: usize,
}

/// Cut a fraction of nodes off from the rest for a while.
#[derive(Clone, Debug, Deserialize)]
pub struct Partition {
    /// Fraction on the small side.
    pub fraction: f64,
    /// Round at whose start the cut happens.
    pub from_round: usize,
    /// Round at whose start it heals.
    pub heal_round: usize,
}

/// Make one node slow to accept sends.
#[derive(Clone, Debug, Deserialize)]
pub struct Slow {
    /// The slow node's index.
    pub node: usize,
    /// Extra delay before it accepts a message, ms.
    pub delay_ms: u64,
    /// Round at whose start it becomes slow.
    pub from_round: usize,
    /// Round at whose start it recovers (never if absent).
    pub until_round: Option<usize>,
}

/// Inject forged copies ahead of genuine ones.
#[derive(Clone, Debug, Deserialize)]
pub struct Forge {
    /// Nodes that receive a forged copy of each published message, just
    /// before the genuine one can arrive.
    pub targets: usize,
}

/// Join / leave churn during the rounds.
#[derive(Clone, Debug, Deserialize)]
pub struct Churn {
    /// Nodes that leave gracefully per round.
    pub leave_per_round: usize,
    /// Fresh nodes that join per round.
    pub join_per_round: usize,
}

fn d_latency_min() -> u64 {
    10
}
fn d_latency_max() -> u64 {
    50
}
fn d_round() -> u64 {
    1000
}
fn d_warmup() -> u64 {
    5000
}
fn d_settle() -> u64 {
    5000
}
fn d_bootstrap() -> usize {
    2
}
fn d_payload() -> usize {
    64
}
fn d_join_spacing() -> u64 {
    5
}
fn d_verify() -> u64 {
    1
}

/// One simulation run.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name for tables.
    pub name: String,
    /// Nodes at start.
    pub nodes: usize,
    /// Publishing rounds.
    pub rounds: usize,
    /// Who publishes.
    pub senders: Senders,
    /// Seeds to run (one report each).
    pub seeds: Vec<u64>,
    /// Per-pair latency lower bound, ms (fixed per pair).
    #[serde(default = "d_latency_min")]
    pub latency_min_ms: u64,
    /// Per-pair latency upper bound, ms.
    #[serde(default = "d_latency_max")]
    pub latency_max_ms: u64,
    /// Extra random delay per message, ms.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Probability a message is lost.
    #[serde(default)]
    pub loss: f64,
    /// Time between rounds, ms.
    #[serde(default = "d_round")]
    pub round_ms: u64,
    /// Time after the last join before round 0, ms.
    #[serde(default = "d_warmup")]
    pub warmup_ms: u64,
    /// Time after the last round before measuring, ms.
    #[serde(default = "d_settle")]
    pub settle_ms: u64,
    /// Gap between joins, ms.
    #[serde(default = "d_join_spacing")]
    pub join_spacing_ms: u64,
    /// Bootstrap contacts per joining node.
    #[serde(default = "d_bootstrap")]
    pub bootstrap: usize,
    /// Payload bytes.
    #[serde(default = "d_payload")]
    pub payload: usize,
    /// Simulated signature check time, ms.
    #[serde(default = "d_verify")]
    pub verify_ms: u64,
    /// Negative control: every node gets every other as a neighbour.
    #[serde(default)]
    pub full_view: bool,
    /// Crash fault.
    pub crash: Option<Crash>,
    /// Partition fault.
    pub partition: Option<Partition>,
    /// Slow peer.
    pub slow: Option<Slow>,
    /// Forged copies.
    pub forge: Option<Forge>,
    /// Churn.
    pub churn: Option<Churn>,
    /// Long run: skipped by CI tests, run by stagebench.
    #[serde(default)]
    pub long: bool,
}

/// Scenario file errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// Could not read the file.
    #[error("reading {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad TOML or fields.
    #[error("parsing {path}: {source}")]
    Parse {
        /// File.
        path: String,
        /// Cause.
        source: toml::de::Error,
    },
}

impl Scenario {
    /// Parses TOML text.
    pub fn parse(text: &str, path: &str) -> Result<Self, ScenarioError> {
        toml::from_str(text).map_err(|source| ScenarioError::Parse {
            path: path.into(),
            source,
        })
    }

    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }
}
