//! What every daemon binary does the same way around its sockets: the
//! command line's config handling and exit codes ([`main`]), log setup
//! ([`init_logs`]), the hello instance number ([`instance`]) and socket
//! files that are removed on a failed start as on shutdown
//! ([`SocketFiles`]). Shared so relayd and gossipd (and the daemons after
//! them) cannot drift apart on these operator-visible behaviours
//! (capability R1).

use std::io::IsTerminal as _;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tern_config::{ConfigArgs, Loaded, LogFormat, NodePaths};

/// Runs a daemon's `main`: loads the config (exit 2 with the message on a
/// bad value), prints it with `--check` (exit 0), sets up logs, then runs
/// `start`; an error is logged and printed as `<name>: <error:#>`, exit 1.
pub fn main<E: std::fmt::Display>(
    name: &str,
    args: &ConfigArgs,
    start: impl FnOnce(&Loaded, &NodePaths) -> Result<(), E>,
) -> ExitCode {
    let loaded = match args.load() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let paths = loaded.paths();
    if args.check {
        print!("{}", loaded.render(&paths));
        return ExitCode::SUCCESS;
    }
    init_logs(name, &loaded);
    match start(&loaded, &paths) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{name} failed");
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Human log lines on stderr at the config's level; `RUST_LOG` wins over
/// the config's level, as in every Tern daemon.
pub fn init_logs(name: &str, loaded: &Loaded) {
    let node = &loaded.config.node;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&node.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if node.log_format == LogFormat::Json {
        // The workspace builds tracing-subscriber without its JSON layer.
        tracing::warn!(
            "node.log_format = \"json\" is not built into {name} yet; logging human lines"
        );
    }
}

/// A per-process instance number for hellos (peers tell restarts apart by
/// it): pid and wall clock, never 0.
#[must_use]
#[allow(clippy::disallowed_methods)] // a start-time value, not a clock the logic runs on
pub fn instance() -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ((u64::from(std::process::id()) << 32) ^ (wall.as_nanos() as u64)) | 1
}

/// Socket files a daemon bound; removed when dropped, so a failed start
/// leaves none behind, just as a clean shutdown does.
#[derive(Debug, Default)]
pub struct SocketFiles(Vec<PathBuf>);

impl SocketFiles {
    /// Binds `path` (`wire::uds::bind`: refuses a live socket, replaces a
    /// stale one) and remembers it for removal.
    ///
    /// # Errors
    /// The bind's error.
    pub fn bind(&mut self, path: &Path) -> Result<UnixListener, wire::WireError> {
        let l = wire::uds::bind(path)?;
        self.0.push(path.to_owned());
        Ok(l)
    }
}

impl Drop for SocketFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Creates the directory `file` lives in (and its parents), mode 0700:
/// where the node's private files (the identity key) go.
///
/// # Errors
/// The directory could not be created.
pub fn create_private_parent(file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    match file.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        None => Ok(()),
    }
}

/// The peer policy of every node-local daemon socket: the daemon's own
/// user, and root (operators' tools).
#[must_use]
pub fn local_policy() -> wire::uds::PeerPolicy {
    wire::uds::PeerPolicy::same_user().allow_uid(0)
}

/// The daemons' small tokio runtime: two workers named `name` (their
/// sockets and tasks; blocking work goes to tokio's blocking pool).
///
/// # Errors
/// The runtime could not be started.
pub fn runtime(name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
}
