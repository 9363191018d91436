//! Async runtime: drives the sans-IO [`Node`] over a real [`Link`].
//!
//! ```text
//!   application                         runtime task (one per node)
//!  ┌───────────┐  Cmd (bounded mpsc)   ┌──────────────────────────────────┐
//!  │ Gossip    │ ────────────────────▶ │ Node (sans-IO core)              │
//!  │ join      │                       │  ├ poll_timeout → sleep_until    │
//!  │ publish   │                       │  ├ Transmit → dispatch queue ──┐ │
//!  │ subscribe │ ◀── Subscription ──── │  ├ Deliver → per-sub queues    │ │
//!  │ snapshot  │   (drop-oldest)       │  ├ Verify → batches ─────┐     │ │
//!  └───────────┘                       │  └ supervisor tick (G13) │     │ │
//!                                      └──────▲───────────────────┼─────┼─┘
//!                         Frame/Up/Down       │      verify tasks │     │ send tasks (≤ workers)
//!                                      ┌──────┴───────────────────▼─────▼─┐
//!                                      │ Link (TransportLink: libtransport │
//!                                      │ PUBSUB streams + ML-DSA-65)       │
//!                                      └───────────────────────────────────┘
//! ```
//!
//! **Who owns what.** The runtime task alone owns the [`Node`], the clock
//! (`Instant::now()` per step) and its timers; nothing else touches the core.
//! Each [`Transmit`](crate::proto::Transmit) becomes one send task, at most
//! `workers` at a time, each bounded by the transmit's own RTT-derived
//! timeout (G4) plus a small watchdog grace; every transmit's outcome is
//! reported to the core exactly once — delivered, timed out, failed, encode
//! error, dispatch queue full, or a panicked task (tracked by task id).
//! Verify requests are batched (up to `verify_batch`) and checked off the
//! task by [`Link::verify`]. Every `supervisor_interval` the dispatch
//! supervisor ([`crate::proto::supervisor::decide`], G13) gets the last
//! interval's queue depth, rates, dispatch time and timeouts and sets the
//! next worker count. Deliveries go to every subscription's own bounded
//! drop-oldest queue (G14): the task never waits on a reader.
//!
//! **Bounds and defaults** ([`RuntimeConfig`]): command queue 256, dispatch
//! queue 4,096 transmits (overflow reported as timed out, counted in
//! [`DispatchStats::rejected_full`]), workers start at 4 within the
//! supervisor's floor 1 / ceiling 16, verify batches of 64 with 4 batches in
//! flight and 4,096 waiting (overflow counted in
//! [`DispatchStats::verify_dropped`]), 1,024 deliveries per subscriber
//! (evictions in [`SubscriberStats::evicted`]), link events 1,024
//! ([`LINK_EVENT_QUEUE`]), supervisor interval 1 s.
//!
//! **Direct messages** are not wired yet: [`Gossip::send_dm`] and
//! [`Gossip::dms`] return [`RuntimeError::Unsupported`], and DM frames that
//! arrive are dropped and counted ([`DispatchStats::dm_unsupported`]). The
//! sans-IO DM engine plugs in at the task's `Received::Dm` arm and behind
//! these two methods.

mod link;
mod subscribe;
mod task;
mod transport;

pub use link::{BoxFuture, Link, LinkEvent, VerifyItem};
pub use subscribe::{SubscriberStats, Subscription};
pub use transport::{
    IdentitySigner, LINK_EVENT_QUEUE, TransportLink, from_transport, to_transport,
};

use crate::proto::supervisor::{SupervisorParams, SupervisorReason};
use crate::proto::{Config, MessageId, Node, PeerId, ProtoError, Signer, Snapshot, TopicId};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// Runtime bounds; see the module docs for the defaults.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The core's configuration.
    pub node: Config,
    /// Commands from [`Gossip`] handles waiting for the task.
    pub command_queue: usize,
    /// Transmits waiting for a send worker.
    pub dispatch_queue: usize,
    /// Send workers before the supervisor's first decision.
    pub initial_workers: usize,
    /// Supervisor thresholds (floor and ceiling of the worker count).
    pub supervisor: SupervisorParams,
    /// How often the supervisor runs (at least 1 ms).
    pub supervisor_interval: Duration,
    /// Signature checks per [`Link::verify`] call.
    pub verify_batch: usize,
    /// Verify batches in flight.
    pub verify_inflight: usize,
    /// Signature checks waiting for a batch slot.
    pub verify_queue: usize,
    /// Deliveries each subscription holds before evicting its oldest.
    pub subscriber_queue: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            node: Config::default(),
            command_queue: 256,
            dispatch_queue: 4096,
            initial_workers: 4,
            supervisor: SupervisorParams::default(),
            supervisor_interval: Duration::from_secs(1),
            verify_batch: 64,
            verify_inflight: 4,
            verify_queue: 4096,
            subscriber_queue: 1024,
        }
    }
}

/// Counters of the runtime task (in addition to the core's [`Snapshot`]).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct DispatchStats {
    /// Transmits waiting for a worker now.
    pub queued: usize,
    /// Dispatch queue capacity.
    pub capacity: usize,
    /// Send tasks running now.
    pub in_flight: usize,
    /// Current worker target (set by the supervisor).
    pub workers_target: usize,
    /// The supervisor's last reason.
    pub supervisor_reason: Option<SupervisorReason>,
    /// Supervisor decisions taken.
    pub supervisor_runs: u64,
    /// Send tasks started.
    pub dispatched: u64,
    /// Sends the link accepted.
    pub delivered: u64,
    /// Sends timed out (link timeout or watchdog).
    pub timed_out: u64,
    /// Of those, abandoned by the runtime's watchdog.
    pub watchdog: u64,
    /// Sends failed (peer unreachable, or a panicked send task).
    pub failed: u64,
    /// Transmits refused because the dispatch queue was full.
    pub rejected_full: u64,
    /// Transmits whose frame could not be encoded.
    pub encode_errors: u64,
    /// Verify batches started.
    pub verify_batches: u64,
    /// Signature checks started.
    pub verify_items: u64,
    /// Signature checks dropped because the verify queue was full.
    pub verify_dropped: u64,
    /// Signature checks waiting now.
    pub verify_queued: usize,
    /// Deliveries handed to subscribers (before fan-out).
    pub deliveries: u64,
    /// Core events (neighbour up/down, cooling) seen.
    pub events: u64,
    /// Direct-message frames dropped (DMs not wired yet).
    pub dm_unsupported: u64,
    /// Link up events.
    pub link_up: u64,
    /// Link down events.
    pub link_down: u64,
}

/// Everything the runtime can tell about itself.
#[derive(Clone, Debug)]
pub struct RuntimeSnapshot {
    /// The core's snapshot.
    pub node: Snapshot,
    /// Every live subscription's counters.
    pub subscribers: Vec<SubscriberStats>,
    /// The task's own counters.
    pub dispatch: DispatchStats,
}

/// Why a runtime call failed.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The runtime task has stopped.
    #[error("gossip runtime stopped")]
    Stopped,
    /// The core refused the call.
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// Not implemented by this runtime yet.
    #[error("{0} not supported yet")]
    Unsupported(&'static str),
}

pub(crate) enum Cmd {
    Join {
        topic: TopicId,
        bootstrap: Vec<PeerId>,
        reply: oneshot::Sender<()>,
    },
    Publish {
        topic: TopicId,
        payload: Bytes,
        reply: oneshot::Sender<Result<MessageId, ProtoError>>,
    },
    Subscribe {
        topic: TopicId,
        capacity: Option<usize>,
        reply: oneshot::Sender<Subscription>,
    },
    Peers {
        topic: TopicId,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Snapshot {
        reply: oneshot::Sender<RuntimeSnapshot>,
    },
    InsertKey {
        key: Bytes,
    },
    Connect {
        topic: TopicId,
        peer: PeerId,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Handle to a running gossip node. Dropping the last clone stops the task.
#[derive(Clone, Debug)]
pub struct Gossip {
    id: PeerId,
    cmds: mpsc::Sender<Cmd>,
    task: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Gossip {
    /// Starts the runtime task for a node signing with `signer` over `link`.
    /// Must be called inside a tokio runtime.
    pub fn spawn(link: Arc<dyn Link>, signer: Box<dyn Signer>, cfg: RuntimeConfig) -> Self {
        let node = Node::new(signer, cfg.node.clone());
        let id = node.id();
        let (tx, rx) = mpsc::channel(cfg.command_queue.max(1));
        let state = task::State::new(node, link, cfg);
        let task = tokio::spawn(state.run(rx));
        Self {
            id,
            cmds: tx,
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        }
    }

    /// This node's id.
    pub fn id(&self) -> PeerId {
        self.id
    }

    async fn call<T>(&self, f: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(f(tx))
            .await
            .map_err(|_| RuntimeError::Stopped)?;
        rx.await.map_err(|_| RuntimeError::Stopped)
    }

    async fn tell(&self, c: Cmd) -> Result<(), RuntimeError> {
        self.cmds.send(c).await.map_err(|_| RuntimeError::Stopped)
    }

    /// Joins `topic` through `bootstrap` (peers the link can reach).
    /// Returns once the core has joined, so frames for `topic` that arrive
    /// afterwards are accepted (before, the decoder refuses them as for an
    /// unknown topic).
    pub async fn join(&self, topic: TopicId, bootstrap: &[PeerId]) -> Result<(), RuntimeError> {
        let bootstrap = bootstrap.to_vec();
        self.call(|reply| Cmd::Join {
            topic,
            bootstrap,
            reply,
        })
        .await
    }

    /// Puts `peer` straight into `topic`'s active view (see [`Node::connect`]).
    pub async fn connect(&self, topic: TopicId, peer: PeerId) -> Result<(), RuntimeError> {
        self.tell(Cmd::Connect { topic, peer }).await
    }

    /// Pre-loads an origin's public key (see [`Node::insert_key`]).
    pub async fn insert_key(&self, key: Bytes) -> Result<(), RuntimeError> {
        self.tell(Cmd::InsertKey { key }).await
    }

    /// Signs and broadcasts `payload` on a joined topic.
    pub async fn publish(&self, topic: TopicId, payload: Bytes) -> Result<MessageId, RuntimeError> {
        Ok(self
            .call(|reply| Cmd::Publish {
                topic,
                payload,
                reply,
            })
            .await??)
    }

    /// A new subscription to `topic`'s verified deliveries from other nodes
    /// (the core does not deliver own publishes), from now on.
    pub async fn subscribe(&self, topic: TopicId) -> Result<Subscription, RuntimeError> {
        self.call(|reply| Cmd::Subscribe {
            topic,
            capacity: None,
            reply,
        })
        .await
    }

    /// Like [`Gossip::subscribe`] with a queue of `capacity` deliveries
    /// instead of [`RuntimeConfig::subscriber_queue`] (at least 1).
    pub async fn subscribe_with_capacity(
        &self,
        topic: TopicId,
        capacity: usize,
    ) -> Result<Subscription, RuntimeError> {
        self.call(|reply| Cmd::Subscribe {
            topic,
            capacity: Some(capacity),
            reply,
        })
        .await
    }

    /// `topic`'s active-view peers.
    pub async fn peers(&self, topic: TopicId) -> Result<Vec<PeerId>, RuntimeError> {
        self.call(|reply| Cmd::Peers { topic, reply }).await
    }

    /// Core snapshot plus runtime counters.
    pub async fn snapshot(&self) -> Result<RuntimeSnapshot, RuntimeError> {
        self.call(|reply| Cmd::Snapshot { reply }).await
    }

    /// Direct message to `peer` — not wired yet (the DM engine plugs in here).
    pub async fn send_dm(&self, peer: PeerId, body: Bytes) -> Result<(), RuntimeError> {
        let _ = (peer, body);
        Err(RuntimeError::Unsupported("direct messages"))
    }

    /// Incoming direct messages — not wired yet (the DM engine plugs in here).
    pub fn dms(&self) -> Result<Subscription, RuntimeError> {
        Err(RuntimeError::Unsupported("direct messages"))
    }

    /// Stops the task (closing the link and every subscription) and waits
    /// for it. Later calls on any clone return [`RuntimeError::Stopped`].
    pub async fn shutdown(&self) -> Result<(), RuntimeError> {
        let r = self.call(|reply| Cmd::Shutdown { reply }).await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = task {
            let _ = t.await;
        }
        r
    }
}

#[cfg(test)]
mod tests;
