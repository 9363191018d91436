//! Where a node's sockets and identity key live.
//!
//! Each node gets its own socket directory, `<runtime>/<name>`, so several
//! nodes run on one host without sharing a socket. `<runtime>` is
//! `[node] runtime_dir` if set, else what [`wire::uds::runtime_dir_from`]
//! resolves (`$TERN_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/tern`, else
//! `/run/tern`). A path set explicitly in the config wins over the derived
//! one. The identity key is state, not runtime data (runtime directories
//! are emptied at logout or boot), so its default lives under the state
//! directory instead.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::sections::NodeConfig;

/// Every path a node's daemons use, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// `<runtime>/<name>`: the node's socket directory.
    pub dir: PathBuf,
    /// The identity key file.
    pub identity_key: PathBuf,
    /// relayd's IPC socket (gossipd connects to it).
    pub relayd_socket: PathBuf,
    /// relayd's admin socket.
    pub relayd_admin: PathBuf,
    /// gossipd's application API socket.
    pub gossipd_socket: PathBuf,
    /// gossipd's admin socket.
    pub gossipd_admin: PathBuf,
    /// The verifyd sockets gossipd balances over.
    pub gossipd_verifyd: Vec<PathBuf>,
    /// verifyd's verify socket.
    pub verifyd_socket: PathBuf,
    /// verifyd's admin socket.
    pub verifyd_admin: PathBuf,
}

fn state_dir(env: &impl Fn(&str) -> Option<OsString>) -> PathBuf {
    if let Some(d) = env("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("tern");
    }
    if let Some(h) = env("HOME").filter(|h| !h.is_empty() && h != "/") {
        return PathBuf::from(h).join(".local/state/tern");
    }
    PathBuf::from("/var/lib/tern")
}

impl NodePaths {
    /// Resolves the paths of `cfg` with an injected environment lookup.
    pub fn resolve_from(cfg: &NodeConfig, env: impl Fn(&str) -> Option<OsString>) -> Self {
        let base = cfg
            .node
            .runtime_dir
            .clone()
            .unwrap_or_else(|| wire::uds::runtime_dir_from(&env));
        let dir = base.join(&cfg.node.name);
        let at = |explicit: &Option<PathBuf>, file: &str| {
            explicit.clone().unwrap_or_else(|| dir.join(file))
        };
        let verifyd_socket = at(&cfg.verifyd.socket, "verifyd.sock");
        let gossipd_verifyd = if cfg.gossipd.verifyd_sockets.is_empty() {
            vec![verifyd_socket.clone()]
        } else {
            cfg.gossipd.verifyd_sockets.clone()
        };
        Self {
            identity_key: cfg
                .node
                .identity_key
                .clone()
                .unwrap_or_else(|| state_dir(&env).join(&cfg.node.name).join("identity.key")),
            relayd_socket: at(&cfg.relayd.socket, "relayd.sock"),
            relayd_admin: at(&cfg.relayd.admin_socket, "relayd-admin.sock"),
            gossipd_socket: at(&cfg.gossipd.socket, "gossipd.sock"),
            gossipd_admin: at(&cfg.gossipd.admin_socket, "gossipd-admin.sock"),
            gossipd_verifyd,
            verifyd_admin: at(&cfg.verifyd.admin_socket, "verifyd-admin.sock"),
            verifyd_socket,
            dir,
        }
    }

    /// Resolves the paths of `cfg` from the process environment.
    #[must_use]
    pub fn resolve(cfg: &NodeConfig) -> Self {
        Self::resolve_from(cfg, |k| std::env::var_os(k))
    }

    /// `(label, path)` pairs, for `--check` output.
    #[must_use]
    pub fn list(&self) -> Vec<(&'static str, &PathBuf)> {
        let mut out = vec![
            ("socket directory", &self.dir),
            ("identity key", &self.identity_key),
            ("relayd socket", &self.relayd_socket),
            ("relayd admin", &self.relayd_admin),
            ("gossipd socket", &self.gossipd_socket),
            ("gossipd admin", &self.gossipd_admin),
            ("verifyd socket", &self.verifyd_socket),
            ("verifyd admin", &self.verifyd_admin),
        ];
        for p in &self.gossipd_verifyd {
            out.push(("gossipd uses verifyd", p));
        }
        out
    }
}
