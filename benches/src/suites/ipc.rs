//! The `ipc` suite.

use crate::{Outcome, SuiteOpts};

/// Runs the suite.
pub fn run(_opts: &SuiteOpts) -> anyhow::Result<Outcome> {
    anyhow::bail!("the ipc suite is not built yet")
}
