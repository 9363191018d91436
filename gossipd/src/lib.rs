//! gossipd: the node's gossip daemon.
//!
//! relayd owns the UDP sockets, the QUIC connections and the node
//! identity; gossipd runs the libgossip runtime (pubsub and direct
//! messages) over relayd's relay session (`docs/protocols/relay.md`,
//! ADR 0060) and verifies signatures through a verifyd pool. This library
//! holds the parts the binary (`src/main.rs`) and tests share:
//!
//! * [`link::RelayLink`] — the runtime's `Link` over the relay session:
//!   frames out as relay sends, inbound ring records as link events,
//!   receive-ACKed DM sends answered by relayd's `SendResult`, signature
//!   batches through `verifyd::client::Pool`. It attaches in the
//!   background, retrying with backoff while relayd is not up, and
//!   reattaches when relayd restarts. Capabilities: P2, P3, D1–D3, R3.
//! * [`api`] — the application API socket (`tern.client`): join/leave,
//!   publish → message id, subscription streams, DMs with receipts naming
//!   the path, the incoming-DM stream with acknowledgements, peers per
//!   topic, node status. Capabilities: P1, D1–D3, P3.
//! * [`inbox`] — DMs held from their arrival until an application
//!   acknowledges them, offered to every DM stream until then. P3.
//! * [`keys`] — peers' key records kept across restarts, so DMs relayd
//!   re-sends to a restarted gossipd verify at once. P3, R3.
//! * [`metrics`] — the daemon's counters and levels in one table: the
//!   admin socket's `diagnostics` sections and the Prometheus endpoint
//!   (`gossipd.metrics_listen`) are both read from it. R1.
//! * [`client`] — a small blocking Rust client of that API (tests use it).
#![forbid(unsafe_code)]

pub mod api;
pub mod client;
pub mod inbox;
pub mod keys;
pub mod link;
pub mod metrics;

pub(crate) use link::lock;
pub use link::{RelayLink, RelayLinkConfig};
