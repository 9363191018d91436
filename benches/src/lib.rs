//! Benchmark support shared by the criterion benches and `stagebench`.
//!
//! `stagebench` is the quick runner benchmark rigs use to measure per-stage
//! throughput in seconds rather than minutes. Each stage has a suite in
//! [`suites`], behind a cargo feature of the same name; a suite measures,
//! then returns [`Outcome`]: human tables and machine-readable JSON objects.
//! Criterion benches in `benches/benches/` measure the same paths with
//! statistics, for changes that need them.
//!
//! Measuring code owns the clock, so `Instant::now` is allowed here.
#![allow(clippy::disallowed_methods)]

pub mod meta;
pub mod stats;
pub mod suites;
pub mod table;

pub use table::Table;

/// Options every suite understands, parsed by `stagebench`.
#[derive(Debug, Clone, Default)]
pub struct SuiteOpts {
    /// Shorter runs (CI smoke tests): fewer items, fewer repetitions.
    pub quick: bool,
    /// Suite-specific arguments after the suite name (e.g. a scenario file).
    pub args: Vec<String>,
}

/// What a suite measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Tables for humans, printed in order.
    pub tables: Vec<Table>,
    /// One JSON object per measured case; `--json` prints one per line.
    pub json: Vec<serde_json::Value>,
}
