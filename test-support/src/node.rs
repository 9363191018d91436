//! One Tern node of spawned daemons for multi-process tests: a temp dir
//! holding the node's config, runtime directory (sockets) and state
//! (identity key), and helpers that start relayd, gossipd and verifyd on
//! it, each a [`Killed`] child so nothing outlives the test.
//!
//! UDP is on an ephemeral loopback port; [`Node::relayd_peer`] gives the
//! `peer_id@addr` another node lists in its `relayd.peers`. gossipd's
//! verifyd socket is the node's `verifyd.sock`, which [`Node::verifyd`]
//! serves (until it does, gossipd verifies in-process, counted).
// Test helpers: a broken test environment is a panic with its reason, and
// the waits own the clock.
#![allow(clippy::expect_used, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::{Killed, PATIENCE, admin_request, wait_for, workspace_bin};

/// The node name every test node uses (its sockets are under
/// `<dir>/run/<NAME>/`).
const NAME: &str = "t";

/// One node's directory and config file.
#[derive(Debug)]
pub struct Node {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    /// A node with the default config (no peers).
    pub fn new() -> Node {
        Node::with_relayd("")
    }

    /// A node whose `[relayd]` section also has the TOML lines `extra`.
    pub fn with_relayd(extra: &str) -> Node {
        Node::with_sections(extra, "")
    }

    /// A node whose `[relayd]` and `[gossipd]` sections also have the TOML
    /// lines `relayd` and `gossipd`.
    ///
    /// # Panics
    /// When the temp dir or the config file cannot be written.
    pub fn with_sections(relayd: &str, gossipd: &str) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("node.toml");
        let text = format!(
            "[node]\nname = \"{NAME}\"\nruntime_dir = \"{run}\"\nidentity_key = \"{key}\"\n\n\
             [relayd]\nlisten = [\"127.0.0.1:0\"]\n{relayd}\n\n\
             [gossipd]\nverifyd_sockets = [\"{run}/{NAME}/verifyd.sock\"]\n{gossipd}\n",
            run = dir.path().join("run").display(),
            key = dir.path().join("state/identity.key").display(),
        );
        std::fs::write(&config, text).expect("writing node.toml");
        Node { dir, config }
    }

    /// A node that dials the relayd of each of `peers` at start.
    pub fn peering(peers: &[&Node]) -> Node {
        let list: Vec<String> = peers
            .iter()
            .map(|p| format!("\"{}\"", p.relayd_peer()))
            .collect();
        Node::with_relayd(&format!("peers = [{}]", list.join(", ")))
    }

    /// The node's config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The node's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The socket `name` in the node's runtime directory (`relayd.sock`,
    /// `relayd-admin.sock`, `gossipd.sock`, `gossipd-admin.sock`,
    /// `verifyd.sock`, `verifyd-admin.sock`).
    pub fn sock(&self, name: &str) -> PathBuf {
        self.dir.path().join("run").join(NAME).join(name)
    }

    /// Spawns `bin --config <node.toml> args…` with stderr inherited.
    ///
    /// # Panics
    /// When the spawn fails.
    pub fn spawn(&self, bin: &Path, args: &[&str]) -> Killed {
        Killed(
            Command::new(bin)
                .arg("--config")
                .arg(&self.config)
                .args(args)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawning a daemon"),
        )
    }

    /// relayd, once its admin socket answers.
    pub fn relayd(&self) -> Killed {
        let d = self.spawn(&workspace_bin("relayd", "relayd"), &[]);
        self.wait("relayd", "relayd up", |_| true);
        d
    }

    /// gossipd, once its admin socket answers (it attaches to relayd in the
    /// background).
    pub fn gossipd(&self) -> Killed {
        let d = self.spawn(&workspace_bin("gossipd", "gossipd"), &[]);
        self.wait("gossipd", "gossipd up", |_| true);
        d
    }

    /// verifyd (one worker, no calibration) on the node's verify socket,
    /// once its admin socket answers. It takes flags, not the node config.
    pub fn verifyd(&self) -> Killed {
        self.verifyd_with(&[])
    }

    /// [`Node::verifyd`] with more flags (e.g. `--metrics-listen ADDR`).
    ///
    /// # Panics
    /// When the spawn fails.
    pub fn verifyd_with(&self, args: &[&str]) -> Killed {
        let d = Killed(
            Command::new(workspace_bin("verifyd", "verifyd"))
                .arg("--socket")
                .arg(self.sock("verifyd.sock"))
                .arg("--admin-socket")
                .arg(self.sock("verifyd-admin.sock"))
                .args(["--no-calibrate", "--threads", "1"])
                .args(args)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawning verifyd"),
        );
        self.wait("verifyd", "verifyd up", |_| true);
        d
    }

    /// Polls `daemon`'s diagnostics until `ok` holds (within [`PATIENCE`]).
    pub fn wait(
        &self,
        daemon: &str,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(
            &self.sock(&format!("{daemon}-admin.sock")),
            daemon,
            what,
            ok,
        )
    }

    /// `daemon`'s diagnostics now.
    ///
    /// # Panics
    /// When the daemon does not answer.
    pub fn diag(&self, daemon: &str) -> serde_json::Value {
        admin_request(&self.sock(&format!("{daemon}-admin.sock")), daemon, false)
            .expect("admin diagnostics")
    }

    /// relayd's `peer_id@udp_addr` from its `status`.
    ///
    /// # Panics
    /// When relayd does not answer.
    pub fn relayd_peer(&self) -> String {
        let s =
            admin_request(&self.sock("relayd-admin.sock"), "relayd", true).expect("relayd status");
        format!(
            "{}@{}",
            s["peer_id"].as_str().expect("peer_id"),
            s["listen"].as_str().expect("listen")
        )
    }
}

/// Polls `f` every 20 ms until it holds; panics naming `what` after
/// [`PATIENCE`].
///
/// # Panics
/// When `f` never holds.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
