//! The application API socket (`tern.client`, `wire/schema/client.fbs`,
//! `docs/protocols/client.md`) on server-core. Capabilities: A1 (the
//! application API), D1–D3 (DMs with receipts naming the path), P3 (DMs
//! are acknowledged by the application before relayd forgets them), R3
//! (retries idempotent by `ClientId`).
//!
//! Each connection is one task reading requests in order (`conn.rs`); a
//! `SendDm` runs on a task of its own (its receipt may take the whole
//! budget) so later requests are not held behind it. Answers and stream
//! items go out through the connection's `FrameSender` (bounded backlog,
//! never blocking). Stream items — deliveries and incoming DMs — are
//! dropped and counted when more than [`STREAM_BACKLOG`] bytes wait for
//! the client beyond what its socket took: a slow application loses its
//! own deliveries (reported in the next `Delivery.dropped_before`), never
//! stalls gossip. A dropped incoming DM is not lost: it stays
//! unacknowledged and relayd keeps it.
//!
//! Shared by every connection: the `ClientId` table (`client_ids.rs`)
//! and the per-topic join counts (`topics.rs`). Per connection: at most
//! [`MAX_TOPICS`] joined topics, [`MAX_STREAMS`] open streams and
//! [`MAX_DMS_IN_FLIGHT`] DMs awaiting their receipt; beyond, requests are
//! refused (`LimitReached`, `Busy`) and counted in [`ApiStats`].

mod client_ids;
mod conn;
mod encode;
mod topics;

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use libgossip::proto::PeerId;
use libgossip::runtime::Gossip;
use server_core::{Budget, Limits, Listener};

use crate::RelayLink;
use crate::inbox::Inbox;

pub use client_ids::{ClientIdLimits, DEFAULT_CAPACITY, DEFAULT_TTL};

/// The protocol name in the hello.
pub const PROTOCOL: &str = "tern.client";

/// Bytes queued toward a client (beyond what its socket buffer took)
/// before stream items are dropped for it (answers are still queued, up to
/// server-core's backlog).
pub const STREAM_BACKLOG: usize = 256;

/// Longest topic name, bytes.
pub const MAX_TOPIC: usize = 255;

/// Topics one connection may have joined at once.
pub const MAX_TOPICS: usize = 256;

/// Streams (subscriptions and the DM stream) one connection may have open.
pub const MAX_STREAMS: usize = 64;

/// `SendDm`s one connection may have awaiting their receipt (including
/// retries waiting for a first attempt's).
pub const MAX_DMS_IN_FLIGHT: usize = 256;

/// Read buffers of all application connections together, bytes.
pub const READ_BUDGET: usize = 64 << 20;

/// Answers queued toward all application connections together, bytes.
pub const RESPONSE_BUDGET: usize = 64 << 20;

/// Counters of the API socket.
#[derive(Debug, Default)]
pub struct ApiStats {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Frames that were no valid request (answered `InvalidRequest`).
    pub invalid: AtomicU64,
    /// Deliveries dropped because the client's backlog was full.
    pub deliveries_dropped: AtomicU64,
    /// Incoming DMs not offered because the client's backlog was full
    /// (still held: relayd re-sends them to the next gossipd).
    pub dms_dropped: AtomicU64,
    /// DMs the applications acknowledged.
    pub dms_acked: AtomicU64,
    /// `Publish`/`SendDm` answered with an earlier request's outcome
    /// (`replayed = true`), waits included.
    pub client_ids_replayed: AtomicU64,
    /// Retries that waited for their first attempt still in flight.
    pub client_ids_waited: AtomicU64,
    /// `Publish`/`SendDm` answered `Conflict` (client id reused for other
    /// content).
    pub client_ids_conflicts: AtomicU64,
    /// `Publish`/`SendDm` answered `Busy`: every client-id slot was in
    /// flight.
    pub client_ids_full: AtomicU64,
    /// Finished outcomes dropped before their ttl to make room.
    pub client_ids_evicted: AtomicU64,
    /// Finished outcomes dropped at their ttl.
    pub client_ids_expired: AtomicU64,
    /// `Join`, `Subscribe` or `SubscribeDms` answered `LimitReached`
    /// ([`MAX_TOPICS`], [`MAX_STREAMS`], one DM stream).
    pub limits_refused: AtomicU64,
    /// `SendDm` answered `Busy`: the connection had [`MAX_DMS_IN_FLIGHT`]
    /// awaiting their receipt.
    pub dms_in_flight_refused: AtomicU64,
    /// Streams ended with `StreamEnded` (`Unsubscribe`, `Leave`, shutdown).
    pub streams_ended: AtomicU64,
}

/// How [`Api::new`] sets the API up.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Deliveries queued per subscription in the runtime; default 1,024.
    pub subscriber_queue: usize,
    /// The socket's limits; default server-core's.
    pub limits: Limits,
    /// DMs held until an application acknowledges them; default relayd's
    /// retention (`IntakeConfig::default().max_pending`, 16,384).
    pub inbox: usize,
    /// The `ClientId` table's bounds.
    pub client_ids: ClientIdLimits,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            subscriber_queue: 1024,
            limits: Limits::default(),
            inbox: wire::relay::IntakeConfig::default().max_pending,
            client_ids: ClientIdLimits::default(),
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub struct Api {
    /// The gossip runtime.
    pub gossip: Gossip,
    /// The relay link (DM acknowledgements, transport state).
    pub link: Arc<RelayLink>,
    /// This node's id.
    pub me: PeerId,
    /// Topics joined by any connection (rejoined after a relayd restart).
    pub topics: Arc<Mutex<BTreeSet<[u8; 32]>>>,
    /// Deliveries queued per subscription in the runtime.
    pub subscriber_queue: usize,
    /// Counters.
    pub stats: ApiStats,
    /// Read buffers of all connections.
    pub reads: Arc<Budget>,
    /// Queued answers of all connections.
    pub responses: Arc<Budget>,
    /// The socket's limits.
    pub limits: Limits,
    /// Node start, for `uptime_ms`.
    pub started: std::time::Instant,
    /// DMs held until an application acknowledges them.
    pub inbox: Arc<Inbox>,
    client_ids: client_ids::ClientIds<conn::Outcome>,
    joins: topics::Joins,
}

impl Api {
    /// The API of the node running `gossip` over `link`; `topics` is the
    /// set the daemon rejoins after a relayd restart (kept to the topics
    /// some connection joined).
    // The API server is a driver: it owns the clock of `uptime_ms`.
    #[allow(clippy::disallowed_methods)]
    #[must_use]
    pub fn new(
        gossip: Gossip,
        link: Arc<RelayLink>,
        topics: Arc<Mutex<BTreeSet<[u8; 32]>>>,
        cfg: ApiConfig,
    ) -> Api {
        Api {
            me: gossip.id(),
            gossip,
            link,
            topics,
            subscriber_queue: cfg.subscriber_queue,
            stats: ApiStats::default(),
            reads: Budget::new("client_read_buffers", READ_BUDGET),
            responses: Budget::new("client_responses", RESPONSE_BUDGET),
            limits: cfg.limits,
            started: std::time::Instant::now(),
            inbox: Arc::new(Inbox::new(cfg.inbox)),
            client_ids: client_ids::ClientIds::new(cfg.client_ids),
            joins: topics::Joins::default(),
        }
    }

    /// Client ids remembered now (in flight and done).
    #[must_use]
    pub fn client_ids_held(&self) -> usize {
        self.client_ids.len()
    }
}

/// Moves every DM `sub` delivers into the inbox until the runtime stops.
/// The daemon subscribes before the link opens, so no DM reaches the
/// runtime before there is a subscriber (it drops DMs nobody subscribed
/// to).
pub async fn collect_dms(api: Arc<Api>, mut sub: libgossip::runtime::DmSubscription) {
    while let Some(d) = sub.recv().await {
        let redelivered = api.link.dm_redelivered(&d.id.0);
        api.inbox.push(d, redelivered);
    }
}

/// Accepts application connections until `stop` resolves.
pub async fn serve(
    api: Arc<Api>,
    listener: Listener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    listener
        .serve_until(stop, |conn| {
            tokio::spawn(conn::run(api.clone(), conn));
        })
        .await;
}
