//! Async runtime: drives the sans-IO [`Node`] and
//! [`DmEngine`](crate::proto::DmEngine) over a real [`Link`].
//!
//! ```text
//!   application                         runtime task (one per node)
//!  ┌───────────┐  Cmd (bounded mpsc)   ┌──────────────────────────────────┐
//!  │ Gossip    │ ────────────────────▶ │ Node (sans-IO core)              │
//!  │ join      │                       │  ├ poll_timeout → sleep_until    │
//!  │ publish   │                       │  ├ Transmit → dispatch queue ──┐ │
//!  │ subscribe │ ◀── Subscription ──── │  ├ Deliver → per-sub queues    │ │
//!  │ snapshot  │   (drop-oldest)       │  ├ Verify → batches ─────┐     │ │
//!  │           │                       │  └ supervisor tick (G13) │     │ │
//!  │ send_dm   │ ◀── DmReceipt ─────── │ DmEngine (sans-IO)       │     │ │
//!  │ dms       │ ◀── DmSubscription ── │  ├ Verify → same batches ┤     │ │
//!  └───────────┘   (drop-oldest)       │  └ SendDirect/Forward ───┼──┐  │ │
//!                                      └──────▲───────────────────┼──┼──┼─┘
//!                         Frame/Up/Down       │      verify tasks │  │  │ send tasks (≤ workers)
//!                                      ┌──────┴───────────────────▼──▼──▼─┐
//!                                      │ Link (TransportLink: libtransport │
//!                                      │ PUBSUB streams, receive-ACKed DM  │
//!                                      │ streams, ML-DSA-65)               │
//!                                      └───────────────────────────────────┘
//! ```
//!
//! **Who owns what.** The runtime task alone owns the [`Node`], the DM
//! engine, the clock (`Instant::now()` per step, handed to both as `now`) and
//! their timers; nothing else touches either.
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
//! **Direct messages** (D1–D3) run in the same task through the sans-IO
//! [`DmEngine`](crate::proto::DmEngine): [`Gossip::send_dm`] hands the
//! payload to the engine and resolves with its [`DmReceipt`] (path used and
//! every attempt's outcome); each direct or forwarded copy is one
//! [`Link::send_acked`] task bounded by the engine's RTT-derived attempt
//! timeout plus the watchdog grace; DM signatures go into the same verify
//! batches as pubsub; verified DMs go to every [`Gossip::dms`] subscription's
//! own bounded drop-oldest queue (D3). On every link up the task sends the
//! peer its signed KEM key record (at most [`KEM_RECORD_SENDS`] in flight,
//! more are dropped and counted), so neighbours can verify its DMs and seal
//! relayed ones to it; a DM that overtakes its sender's record is held
//! ([`HELD_DMS`]) until a record is verified. Bounds: [`DmConfig`]
//! (1,024 DMs awaiting a receipt, 4,096 attempts in flight, 256
//! verifications, dedupe of 16,384 ids for 10 min, relay fan-out 3 and hop
//! limit 4), 1,024 DMs per DM subscriber; every refusal is counted in
//! [`RuntimeSnapshot::dm`] or [`DispatchStats`].

mod dm;
mod link;
mod subscribe;
mod task;
mod transport;

pub use link::{AckOutcome, BoxFuture, Link, LinkEvent, VerifyItem};
pub use subscribe::{DmSubscriberStats, DmSubscription, SubscriberStats, Subscription};
pub use transport::{
    IdentitySigner, LINK_EVENT_QUEUE, TransportLink, from_transport, to_transport,
    verify_in_process,
};

use crate::proto::supervisor::{SupervisorParams, SupervisorReason};
use crate::proto::{
    Config, DmConfig, DmError, DmReceipt, DmStats, MessageId, Node, PeerId, ProtoError, Signer,
    Snapshot, TopicId,
};
use crate::wire::KemKey;
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
    /// The DM engine's limits and timing.
    pub dm: DmConfig,
    /// DMs each [`Gossip::dms`] subscription holds before evicting its oldest.
    pub dm_subscriber_queue: usize,
}

/// KEM key record sends (one per link up) in flight at once.
pub const KEM_RECORD_SENDS: usize = 64;

/// DMs held because their sender's identity key was not known yet (it
/// comes with the sender's KEM key record, which a DM can overtake); they
/// are retried whenever a record is verified, for up to the DM verify
/// timeout.
pub const HELD_DMS: usize = 256;

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
            dm: DmConfig::default(),
            dm_subscriber_queue: 1024,
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
    /// Receive-ACKed DM transmissions started (direct and forwarded).
    pub dm_sends: u64,
    /// Of those, admitted by the receiving side.
    pub dm_accepted: u64,
    /// Of those, refused, lost or timed out (the engine has the outcome).
    pub dm_send_failed: u64,
    /// Of the failed, abandoned by the runtime's watchdog.
    pub dm_watchdog: u64,
    /// DM frames and KEM key records the engine refused (why: [`DmStats`]).
    pub dm_refused: u64,
    /// DMs held for their sender's key ([`HELD_DMS`]); the engine's
    /// `unknown_sender_key` counts every try, retries included.
    pub dm_held: u64,
    /// Held DMs pushed out by newer ones.
    pub dm_held_dropped: u64,
    /// Held DMs whose sender's key did not come within the verify timeout.
    pub dm_held_expired: u64,
    /// Verified DMs handed to DM subscribers (before fan-out).
    pub dm_deliveries: u64,
    /// Verified DMs dropped because nobody subscribed to [`Gossip::dms`].
    pub dm_no_subscriber: u64,
    /// Own KEM key records sent to peers whose link came up.
    pub kem_records_sent: u64,
    /// Of those, not taken by the link.
    pub kem_records_failed: u64,
    /// Record sends skipped because [`KEM_RECORD_SENDS`] were in flight.
    pub kem_records_dropped: u64,
    /// False when no ML-KEM key pair could be made: relayed DMs disabled.
    pub dm_sealing: bool,
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
    /// The DM engine's counters.
    pub dm: DmStats,
    /// Every live DM subscription's counters.
    pub dm_subscribers: Vec<DmSubscriberStats>,
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
    /// The DM engine refused the call.
    #[error(transparent)]
    Dm(#[from] DmError),
}

pub(crate) enum Cmd {
    Join {
        topic: TopicId,
        bootstrap: Vec<PeerId>,
        reply: oneshot::Sender<()>,
    },
    Leave {
        topic: TopicId,
        reply: oneshot::Sender<()>,
    },
    Publish {
        topic: TopicId,
        payload: Bytes,
        reply: oneshot::Sender<Result<(MessageId, u64), ProtoError>>,
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
    SendDm {
        to: PeerId,
        payload: Bytes,
        reply: oneshot::Sender<Result<DmReceipt, DmError>>,
    },
    Dms {
        capacity: Option<usize>,
        reply: oneshot::Sender<DmSubscription>,
    },
    KemRecord {
        reply: oneshot::Sender<KemKey>,
    },
    AddKemKey {
        record: KemKey,
        reply: oneshot::Sender<Result<(), DmError>>,
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
    /// The DM engine shares `signer` and gets a fresh ML-KEM-768 key pair.
    pub fn spawn(link: Arc<dyn Link>, signer: Box<dyn Signer>, cfg: RuntimeConfig) -> Self {
        let (core_signer, dm_signer) = dm::SharedSigner::pair(signer);
        let node = Node::new(Box::new(core_signer), cfg.node.clone());
        let id = node.id();
        let (engine, sealing) = dm::engine(Box::new(dm_signer), cfg.dm);
        let (tx, rx) = mpsc::channel(cfg.command_queue.max(1));
        let state = task::State::new(node, engine, sealing, link, cfg);
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

    /// Leaves `topic` (telling its overlay neighbours; see [`Node::leave`]).
    /// Subscriptions to it stay open and get nothing until it is joined
    /// again.
    pub async fn leave(&self, topic: TopicId) -> Result<(), RuntimeError> {
        self.call(|reply| Cmd::Leave { topic, reply }).await
    }

    /// Signs and broadcasts `payload` on a joined topic.
    pub async fn publish(&self, topic: TopicId, payload: Bytes) -> Result<MessageId, RuntimeError> {
        Ok(self.publish_with_seqno(topic, payload).await?.0)
    }

    /// Like [`Gossip::publish`], also returning the message's sequence
    /// number (see [`Node::publish_with_seqno`]).
    pub async fn publish_with_seqno(
        &self,
        topic: TopicId,
        payload: Bytes,
    ) -> Result<(MessageId, u64), RuntimeError> {
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

    /// Sends a direct message to `peer` and waits for its receipt (D1, D2):
    /// to self it is delivered on this node's [`Gossip::dms`] at once
    /// ([`DmPath::Loopback`](crate::proto::DmPath::Loopback)); to a
    /// connected peer it goes direct with a receive-ACK; when that fails, or
    /// `peer` is not connected, it is sealed to `peer`'s KEM key and relayed
    /// through neighbours. The receipt names the path that worked, or
    /// `path: None` if none did, and lists every attempt's outcome. Refusals
    /// (payload too large, too many DMs awaiting a receipt) are
    /// [`RuntimeError::Dm`].
    pub async fn send_dm(&self, peer: PeerId, body: Bytes) -> Result<DmReceipt, RuntimeError> {
        Ok(self
            .call(|reply| Cmd::SendDm {
                to: peer,
                payload: body,
                reply,
            })
            .await??)
    }

    /// A new subscription to the verified DMs this node receives, from now
    /// on, holding [`RuntimeConfig::dm_subscriber_queue`] before it evicts
    /// its oldest (D3). Every subscription gets every DM.
    pub async fn dms(&self) -> Result<DmSubscription, RuntimeError> {
        self.call(|reply| Cmd::Dms {
            capacity: None,
            reply,
        })
        .await
    }

    /// Like [`Gossip::dms`] with a queue of `capacity` DMs (at least 1).
    pub async fn dms_with_capacity(&self, capacity: usize) -> Result<DmSubscription, RuntimeError> {
        self.call(|reply| Cmd::Dms {
            capacity: Some(capacity),
            reply,
        })
        .await
    }

    /// This node's signed KEM key record, for handing to peers that are not
    /// neighbours (neighbours get it on connect).
    pub async fn kem_key_record(&self) -> Result<KemKey, RuntimeError> {
        self.call(|reply| Cmd::KemRecord { reply }).await
    }

    /// A peer's KEM key record learnt out of band. Its form is checked now
    /// ([`RuntimeError::Dm`] if refused); its signature through the verify
    /// batches, after which DMs from its owner verify and relayed DMs to it
    /// can be sealed.
    pub async fn add_kem_key(&self, record: KemKey) -> Result<(), RuntimeError> {
        Ok(self
            .call(|reply| Cmd::AddKemKey { record, reply })
            .await??)
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
