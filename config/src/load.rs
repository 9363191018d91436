//! Loading: defaults, then the file, then `TERN_*` variables, then flags;
//! each later source wins, and every value remembers where it came from.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::{Table, Value};

use crate::check::{Problem, check};
use crate::keys::{self, KEYS, Key, SECTIONS, ValueKind};
use crate::paths::NodePaths;
use crate::sections::NodeConfig;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Nobody set it.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag (`--set` or a daemon's own flag).
    Flag,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "env {v}"),
            Origin::Flag => f.write_str("flag"),
        }
    }
}

/// A value refused by the range checks, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError {
    /// What is wrong.
    pub problem: Problem,
    /// Where the value came from.
    pub origin: Origin,
}

/// Loading or checking a config failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key or a value of
    /// the wrong type (the message has the line and column).
    #[error("config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// An override names no setting.
    #[error("unknown setting {name} ({origin}); every setting is listed in docs/config.md")]
    UnknownKey {
        /// The key or variable as given.
        name: String,
        /// Where it was given.
        origin: Origin,
    },
    /// An override's value is not of the setting's type.
    #[error("{key} = {value:?} ({origin}): {message}")]
    BadValue {
        /// `section.key`.
        key: String,
        /// The value as given.
        value: String,
        /// Where it was given.
        origin: Origin,
        /// What is wrong.
        message: String,
    },
    /// A `--set` argument is not `SECTION.KEY=VALUE`.
    #[error("--set expects SECTION.KEY=VALUE, got {0:?}")]
    BadSetArg(String),
    /// Values outside their valid ranges (all of them, one per line).
    #[error("invalid config:{}", list(.0))]
    OutOfRange(Vec<RangeError>),
}

fn list(errors: &[RangeError]) -> String {
    let mut s = String::new();
    for e in errors {
        let _ = write!(s, "\n  {} (from {})", e.problem, e.origin);
    }
    s
}

/// Collects the sources of a config, then [`Self::load`]s it.
#[derive(Debug, Default)]
pub struct Loader {
    file: Option<PathBuf>,
    /// `(key, raw value, origin)` in the order they apply.
    overrides: Vec<(&'static Key, String, Origin)>,
    /// Problems found while collecting overrides, reported by `load`.
    early_err: Vec<ConfigError>,
}

impl Loader {
    /// Defaults only.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads `path` as the config file.
    #[must_use]
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Applies `TERN_<SECTION>_<KEY>` variables from `vars`. Variables in
    /// a section's namespace that name no setting are errors (a typo would
    /// otherwise leave a default silently in force); other `TERN_*`
    /// variables (e.g. `TERN_RUNTIME_DIR`) are left to whoever reads them.
    #[must_use]
    pub fn env_vars(mut self, vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let mut found: Vec<(String, OsString)> = vars
            .into_iter()
            .filter_map(|(k, v)| k.into_string().ok().map(|k| (k, v)))
            .filter(|(k, _)| keys::in_section_namespace(k))
            .collect();
        found.sort();
        for (var, value) in found {
            let origin = Origin::Env(var.clone());
            let Some(key) = keys::find_env(&var) else {
                self.early_err
                    .push(ConfigError::UnknownKey { name: var, origin });
                continue;
            };
            match value.into_string() {
                Ok(v) => self.overrides.push((key, v, origin)),
                Err(raw) => self.early_err.push(ConfigError::BadValue {
                    key: key.path(),
                    value: raw.to_string_lossy().into_owned(),
                    origin,
                    message: "not valid UTF-8".to_owned(),
                }),
            }
        }
        self
    }

    /// Applies the process's `TERN_*` environment.
    #[must_use]
    pub fn process_env(self) -> Self {
        self.env_vars(std::env::vars_os())
    }

    /// A flag override of `section.key` (wins over the file and the
    /// environment). Daemons map their own typed flags onto this.
    #[must_use]
    pub fn set(mut self, path: &str, value: &str) -> Self {
        match keys::find(path) {
            Some(key) => self.overrides.push((key, value.to_owned(), Origin::Flag)),
            None => self.early_err.push(ConfigError::UnknownKey {
                name: path.to_owned(),
                origin: Origin::Flag,
            }),
        }
        self
    }

    /// A `--set SECTION.KEY=VALUE` argument.
    #[must_use]
    pub fn set_arg(self, arg: &str) -> Self {
        match arg.split_once('=') {
            Some((k, v)) => self.set(k.trim(), v),
            None => {
                let mut s = self;
                s.early_err.push(ConfigError::BadSetArg(arg.to_owned()));
                s
            }
        }
    }

    /// Reads, merges, type-checks and range-checks everything.
    pub fn load(mut self) -> Result<Loaded, ConfigError> {
        if let Some(e) = self.early_err.drain(..).next() {
            return Err(e);
        }
        let mut table = Table::new();
        let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let parse_err = |e: toml::de::Error| ConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            };
            // Typed first, for messages with line and column.
            toml::from_str::<NodeConfig>(&text).map_err(parse_err)?;
            table = toml::from_str::<Table>(&text).map_err(parse_err)?;
            for (section, body) in &table {
                if let Value::Table(t) = body {
                    for name in t.keys() {
                        origins.insert(format!("{section}.{name}"), Origin::File(path.clone()));
                    }
                }
            }
        }
        for (key, raw, origin) in &self.overrides {
            let value = to_value(key, raw).map_err(|message| ConfigError::BadValue {
                key: key.path(),
                value: raw.clone(),
                origin: origin.clone(),
                message,
            })?;
            // Type-check this one value alone, so an error names its source.
            let mut alone = Table::new();
            insert(&mut alone, key, value.clone());
            NodeConfig::deserialize(alone).map_err(|e| ConfigError::BadValue {
                key: key.path(),
                value: raw.clone(),
                origin: origin.clone(),
                message: e.message().to_owned(),
            })?;
            insert(&mut table, key, value);
            origins.insert(key.path(), origin.clone());
        }
        let config = NodeConfig::deserialize(table).map_err(|e| ConfigError::Parse {
            path: self.file.clone().unwrap_or_default(),
            message: e.to_string(),
        })?;
        let problems = check(&config);
        if !problems.is_empty() {
            return Err(ConfigError::OutOfRange(
                problems
                    .into_iter()
                    .map(|problem| RangeError {
                        origin: origins
                            .get(&problem.key)
                            .cloned()
                            .unwrap_or(Origin::Default),
                        problem,
                    })
                    .collect(),
            ));
        }
        Ok(Loaded {
            config,
            origins,
            file: self.file,
        })
    }
}

fn insert(table: &mut Table, key: &Key, value: Value) {
    let section = table
        .entry(key.section)
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(t) = section {
        t.insert(key.name.to_owned(), value);
    }
}

/// Turns an override's text into a value of the key's type.
fn to_value(key: &Key, raw: &str) -> Result<Value, String> {
    let text = raw.trim();
    Ok(match key.kind {
        ValueKind::Int => {
            let digits: String = text.chars().filter(|c| *c != '_').collect();
            let n: i64 = digits
                .parse()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| "expected a non-negative integer".to_owned())?;
            Value::Integer(n)
        }
        ValueKind::Str => Value::String(text.to_owned()),
        ValueKind::List => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
    })
}

/// A loaded, checked config and where each value came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective config.
    pub config: NodeConfig,
    origins: BTreeMap<String, Origin>,
    file: Option<PathBuf>,
}

impl Loaded {
    /// Where `section.key`'s value came from.
    #[must_use]
    pub fn origin(&self, path: &str) -> Origin {
        self.origins.get(path).cloned().unwrap_or(Origin::Default)
    }

    /// The file it was read from, if any.
    #[must_use]
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The resolved paths, from the process environment.
    #[must_use]
    pub fn paths(&self) -> NodePaths {
        NodePaths::resolve(&self.config)
    }

    /// The effective config as TOML, each value annotated with its origin,
    /// then the resolved paths: what `--check` prints.
    #[must_use]
    pub fn render(&self, paths: &NodePaths) -> String {
        let table = Table::try_from(&self.config).unwrap_or_default();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# effective tern node config (file: {})",
            self.file
                .as_deref()
                .map_or_else(|| "none".to_owned(), |p| p.display().to_string())
        );
        for section in SECTIONS {
            let _ = writeln!(out, "\n[{section}]");
            let body = table.get(section).and_then(Value::as_table);
            for key in KEYS.iter().filter(|k| k.section == section) {
                let origin = self.origin(&key.path());
                match body.and_then(|b| b.get(key.name)) {
                    Some(v) => {
                        let _ = writeln!(out, "{} = {v}  # {origin}", key.name);
                    }
                    None => {
                        let _ = writeln!(out, "# {} unset  # {origin}: {}", key.name, key.doc);
                    }
                }
            }
        }
        let _ = writeln!(out, "\n# resolved paths");
        for (label, path) in paths.list() {
            let _ = writeln!(out, "# {label}: {}", path.display());
        }
        out
    }
}
