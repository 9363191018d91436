//! The flags every daemon shares, for `clap` derive: `--config`, `--set`
//! and `--check`. A daemon flattens [`ConfigArgs`] into its own parser and
//! maps its typed flags onto [`Loader::set`].

use std::path::PathBuf;

use crate::load::{ConfigError, Loader};

/// `--config FILE`, `--set SECTION.KEY=VALUE` (repeatable), `--check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ConfigArgs {
    /// Node config file (TOML; see docs/config.md).
    #[arg(long, env = "TERN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one setting, e.g. `--set verifyd.threads=4` (repeatable;
    /// wins over the file and TERN_* variables).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub set: Vec<String>,
    /// Validate the config, print the effective values and where each came
    /// from, and exit (status 0 when valid).
    #[arg(long)]
    pub check: bool,
}

impl ConfigArgs {
    /// A loader with the file, the process's `TERN_*` environment and the
    /// `--set` flags, in that order of precedence (last wins).
    #[must_use]
    pub fn loader(&self) -> Loader {
        let mut l = Loader::new();
        if let Some(f) = &self.config {
            l = l.file(f);
        }
        l = l.process_env();
        for s in &self.set {
            l = l.set_arg(s);
        }
        l
    }

    /// Loads and checks the config.
    pub fn load(&self) -> Result<crate::Loaded, ConfigError> {
        self.loader().load()
    }
}
