//! The `transport` suite.

use crate::{Outcome, SuiteOpts};

/// Runs the suite.
pub fn run(_opts: &SuiteOpts) -> anyhow::Result<Outcome> {
    anyhow::bail!("the transport suite is not built yet")
}
