//! The typed sections of a node config, with their defaults.
//!
//! Every field has a default (documented in `docs/config.md` and in
//! [`crate::keys::KEYS`]); an empty file is a valid config. Unknown keys
//! are errors, so a typo never silently leaves a default in force.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole file: one section per daemon plus `[node]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Settings every daemon of the node shares.
    pub node: NodeSection,
    /// The transport/relay daemon.
    pub relayd: RelaydSection,
    /// The gossip/DM daemon and application API.
    pub gossipd: GossipdSection,
    /// The verification daemon.
    pub verifyd: VerifydSection,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// Node name; the node's sockets live in `<runtime_dir>/<name>`.
    pub name: String,
    /// Base directory of the per-node socket directories.
    pub runtime_dir: Option<PathBuf>,
    /// The node identity key file (0600), loaded by relayd and gossipd.
    pub identity_key: Option<PathBuf>,
    /// Log output format.
    pub log_format: LogFormat,
    /// `tracing` filter directive.
    pub log_level: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            runtime_dir: None,
            identity_key: None,
            log_format: LogFormat::Human,
            log_level: "info".to_owned(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event (no colour unless stderr is a
    /// terminal).
    Human,
    /// One JSON object per line.
    Json,
}

/// `[relayd]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaydSection {
    /// UDP addresses the QUIC endpoint binds.
    pub listen: Vec<SocketAddr>,
    /// The relay IPC socket gossipd connects to.
    pub socket: Option<PathBuf>,
    /// The admin socket.
    pub admin_socket: Option<PathBuf>,
    /// Loopback address for Prometheus text; unset = off.
    pub metrics_listen: Option<SocketAddr>,
    /// Bytes per direction of the shared-memory rings to gossipd.
    pub ring_capacity: u64,
    /// Bytes the recv pump may queue over all stream kinds.
    pub pump_bytes: u64,
    /// Accepted-but-unconsumed DM records kept for a reconnecting gossipd.
    pub retain_records: u64,
    /// Bytes of accepted-but-unconsumed DM records kept.
    pub retain_bytes: u64,
    /// Peers to dial, `<peer id hex>@<ip:port>`.
    pub peers: Vec<String>,
}

impl Default for RelaydSection {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 4433))],
            socket: None,
            admin_socket: None,
            metrics_listen: None,
            ring_capacity: 4 << 20,
            pump_bytes: 32 << 20,
            retain_records: 16_384,
            retain_bytes: 32 << 20,
            peers: Vec::new(),
        }
    }
}

/// `[gossipd]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GossipdSection {
    /// The application API socket.
    pub socket: Option<PathBuf>,
    /// The admin socket.
    pub admin_socket: Option<PathBuf>,
    /// Loopback address for Prometheus text; unset = off.
    pub metrics_listen: Option<SocketAddr>,
    /// verifyd sockets to balance over; empty = the node's own verifyd.
    pub verifyd_sockets: Vec<PathBuf>,
    /// Application connections served at once.
    pub max_clients: u64,
    /// Deliveries queued per subscription before the oldest is dropped.
    pub subscriber_queue: u64,
}

impl Default for GossipdSection {
    fn default() -> Self {
        Self {
            socket: None,
            admin_socket: None,
            metrics_listen: None,
            verifyd_sockets: Vec::new(),
            max_clients: 64,
            subscriber_queue: 1024,
        }
    }
}

/// `[verifyd]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VerifydSection {
    /// The verify socket.
    pub socket: Option<PathBuf>,
    /// The admin socket.
    pub admin_socket: Option<PathBuf>,
    /// Loopback address for Prometheus text; unset = off.
    pub metrics_listen: Option<SocketAddr>,
    /// Worker threads; unset = one per core.
    pub threads: Option<u64>,
    /// ML-DSA-65 implementation.
    pub backend: String,
    /// Decoded public keys cached.
    pub key_capacity: u64,
    /// Ceiling of the adaptive admission limit, in items.
    pub max_in_flight: u64,
    /// Ring bytes per direction offered to clients; 0 = frames only.
    pub ring_capacity: u64,
    /// Seconds a drain may take before the daemon stops anyway.
    pub drain_deadline_s: u64,
}

impl Default for VerifydSection {
    fn default() -> Self {
        Self {
            socket: None,
            admin_socket: None,
            metrics_listen: None,
            threads: None,
            backend: "aws-lc".to_owned(),
            key_capacity: 65_536,
            max_in_flight: 65_536,
            ring_capacity: 4 << 20,
            drain_deadline_s: 10,
        }
    }
}
