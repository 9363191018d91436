//! Every setting, once: its section, name, value type, environment
//! variable and one line of documentation.
//!
//! The loader uses this table to turn `TERN_*` variables and `--set` flags
//! into typed values, `--check` prints the effective config in this order,
//! and a test checks that `docs/config.md` documents every entry.

/// How an override's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A non-negative integer (underscores allowed: `4_194_304`).
    Int,
    /// Text (names, paths, addresses, enum values).
    Str,
    /// A list of text values, comma-separated in overrides.
    List,
}

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Section (`node`, `relayd`, `gossipd`, `verifyd`).
    pub section: &'static str,
    /// Key within the section.
    pub name: &'static str,
    /// Value type.
    pub kind: ValueKind,
    /// What it sets, and its default.
    pub doc: &'static str,
}

impl Key {
    /// `section.name`, as used by `--set` and in error messages.
    #[must_use]
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }

    /// The environment variable overriding it: `TERN_<SECTION>_<NAME>`.
    #[must_use]
    pub fn env(&self) -> String {
        format!("TERN_{}_{}", self.section, self.name).to_ascii_uppercase()
    }
}

/// The sections, in file order.
pub const SECTIONS: [&str; 4] = ["node", "relayd", "gossipd", "verifyd"];

const fn key(section: &'static str, name: &'static str, kind: ValueKind, doc: &'static str) -> Key {
    Key {
        section,
        name,
        kind,
        doc,
    }
}

use ValueKind::{Int, List, Str};

/// Every setting, in file order.
pub const KEYS: &[Key] = &[
    key(
        "node",
        "name",
        Str,
        "node name: sockets live in <runtime>/<name> (default \"default\")",
    ),
    key(
        "node",
        "runtime_dir",
        Str,
        "base of the per-node socket directory (default $TERN_RUNTIME_DIR, else $XDG_RUNTIME_DIR/tern, else /run/tern)",
    ),
    key(
        "node",
        "identity_key",
        Str,
        "ML-DSA-65 identity key file, mode 0600 (default $XDG_STATE_HOME/tern/<name>/identity.key, else ~/.local/state/..., else /var/lib/tern/<name>/identity.key)",
    ),
    key("node", "log_format", Str, "human or json (default human)"),
    key(
        "node",
        "log_level",
        Str,
        "tracing filter: a level or target=level list (default info)",
    ),
    key(
        "relayd",
        "listen",
        List,
        "UDP addresses for QUIC (default 0.0.0.0:4433)",
    ),
    key(
        "relayd",
        "socket",
        Str,
        "relay IPC socket gossipd connects to (default <node dir>/relayd.sock)",
    ),
    key(
        "relayd",
        "admin_socket",
        Str,
        "admin socket (default <node dir>/relayd-admin.sock)",
    ),
    key(
        "relayd",
        "metrics_listen",
        Str,
        "loopback address for Prometheus text (default unset: off)",
    ),
    key(
        "relayd",
        "ring_capacity",
        Int,
        "bytes per direction of the rings to gossipd, a power of two (default 4194304)",
    ),
    key(
        "relayd",
        "pump_bytes",
        Int,
        "bytes the recv pump queues, all kinds (default 33554432)",
    ),
    key(
        "relayd",
        "retain_records",
        Int,
        "accepted DMs kept until gossipd consumed them (default 16384)",
    ),
    key(
        "relayd",
        "retain_bytes",
        Int,
        "bytes of accepted DMs kept until consumed (default 33554432)",
    ),
    key(
        "relayd",
        "peers",
        List,
        "peers dialled at start and redialled when lost, <peer id hex>@<ip:port> (default none)",
    ),
    key(
        "gossipd",
        "socket",
        Str,
        "application API socket (default <node dir>/gossipd.sock)",
    ),
    key(
        "gossipd",
        "admin_socket",
        Str,
        "admin socket (default <node dir>/gossipd-admin.sock)",
    ),
    key(
        "gossipd",
        "metrics_listen",
        Str,
        "loopback address for Prometheus text (default unset: off)",
    ),
    key(
        "gossipd",
        "verifyd_sockets",
        List,
        "verifyd instances to balance over (default <node dir>/verifyd.sock)",
    ),
    key(
        "gossipd",
        "max_clients",
        Int,
        "application connections at once (default 64)",
    ),
    key(
        "gossipd",
        "subscriber_queue",
        Int,
        "deliveries queued per subscription, drop-oldest (default 1024)",
    ),
    key(
        "verifyd",
        "socket",
        Str,
        "verify socket (default <node dir>/verifyd.sock)",
    ),
    key(
        "verifyd",
        "admin_socket",
        Str,
        "admin socket (default <node dir>/verifyd-admin.sock)",
    ),
    key(
        "verifyd",
        "metrics_listen",
        Str,
        "loopback address for Prometheus text (default unset: off)",
    ),
    key(
        "verifyd",
        "threads",
        Int,
        "worker threads (default unset: one per core)",
    ),
    key(
        "verifyd",
        "backend",
        Str,
        "aws-lc, rustcrypto, libcrux or pqcrypto (default aws-lc)",
    ),
    key(
        "verifyd",
        "key_capacity",
        Int,
        "decoded public keys cached (default 65536)",
    ),
    key(
        "verifyd",
        "max_in_flight",
        Int,
        "ceiling of the adaptive admission limit, items (default 65536)",
    ),
    key(
        "verifyd",
        "ring_capacity",
        Int,
        "ring bytes per direction offered to clients; 0 = frames only (default 4194304)",
    ),
    key(
        "verifyd",
        "drain_deadline_s",
        Int,
        "seconds a drain may take on SIGTERM (default 10)",
    ),
];

/// The setting at `section.name`, if there is one.
#[must_use]
pub fn find(path: &str) -> Option<&'static Key> {
    let (section, name) = path.split_once('.')?;
    KEYS.iter().find(|k| k.section == section && k.name == name)
}

/// The setting an environment variable names, if it names one.
#[must_use]
pub fn find_env(var: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.env() == var)
}

/// True when `var` is in a section's `TERN_<SECTION>_` namespace, so a
/// name that matches no key there is a typo worth refusing.
#[must_use]
pub fn in_section_namespace(var: &str) -> bool {
    SECTIONS
        .iter()
        .any(|s| var.starts_with(&format!("TERN_{}_", s.to_ascii_uppercase())))
}
