//! `tern-config`: one TOML file per node, with a section per daemon.
//!
//! ```toml
//! [node]
//! name = "alice"            # sockets in $XDG_RUNTIME_DIR/tern/alice/
//!
//! [relayd]
//! listen = ["0.0.0.0:4433"]
//!
//! [verifyd]
//! threads = 2
//! ```
//!
//! * [`NodeConfig`] — the typed sections ([`NodeSection`],
//!   [`RelaydSection`], [`GossipdSection`], [`VerifydSection`]); every field
//!   has a default, so an empty file is valid; unknown keys are errors.
//! * [`Loader`] — defaults < file < `TERN_<SECTION>_<KEY>` variables <
//!   flags; every value remembers its [`Origin`]. [`ConfigArgs`] gives a
//!   daemon `--config`, `--set` and `--check` through clap.
//! * [`check()`] — range checks; [`Loader::load`] refuses a config with
//!   any problem, listing each with its valid range and origin
//!   ([`ConfigError::OutOfRange`]).
//! * [`NodePaths`] — the node's socket directory `<runtime>/<name>`
//!   (reusing `wire::uds`'s runtime-dir resolution) and every socket and
//!   key path in it, so several nodes run on one host.
//! * [`Loaded::render`] — what `--check` prints: the effective config as
//!   TOML annotated with origins, then the resolved paths.
//!
//! Every key, its environment variable and its default are listed in
//! [`keys::KEYS`] and documented in `docs/config.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod args;
pub mod check;
pub mod keys;
mod load;
mod paths;
mod sections;

pub use args::ConfigArgs;
pub use check::{MIN_RELAY_RING, Problem, check, parse_peer};
pub use load::{ConfigError, Loaded, Loader, Origin, RangeError};
pub use paths::NodePaths;
pub use sections::{
    GossipdSection, LogFormat, NodeConfig, NodeSection, RelaydSection, VerifydSection,
};
