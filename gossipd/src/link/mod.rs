//! [`RelayLink`]: the libgossip [`Link`] over relayd's IPC session and a
//! verifyd [`Pool`]. Capabilities: P2 (the relay path), P3 (an `Accepted`
//! DM is never lost: records are confirmed only through
//! [`RelayLink::ack_dm`], once the application acknowledged the DM),
//! D1–D3 (DM sends as receive-ACKed relay sends), R3 (reattach after a
//! relayd restart).
//!
//! # Threads, and why
//!
//! The ring consumer and the control socket are blocking `std` objects
//! (`wire`'s parker blocks in `poll`), so the session lives on one
//! supervisor thread that attaches (retrying with capped backoff while
//! relayd is not up), then pops inbound records until relayd goes away,
//! and one reader thread per session for the control frames. Both hand
//! [`LinkEvent`]s to the runtime through one bounded channel with
//! `blocking_send`: a slow runtime stops the ring pops, the inbound ring
//! fills and relayd's own bounded pump drops pubsub and backpressures DMs
//! (nothing grows here).
//!
//! Sends go straight into the outbound ring under a mutex (a push is a
//! copy); a full ring is retried every millisecond until the send's
//! budget. Receive-ACKed sends wait for relayd's `SendResult`, matched by
//! a random `send_id`.
//!
//! # Modules
//!
//! This file owns the state every thread and task shares (`State`: the
//! session's sending half, open receive-ACKed sends, the intake, held
//! DMs) and the public handle; each path over it has a module of its own,
//! so a reader can follow one without the others:
//!
//! * `session` — the supervisor thread: attach (hello, data channel,
//!   rings), serve one session, detach, back off and attach again.
//! * `inbound` — what relayd sends: ring records through the intake into
//!   link events, control frames (peer events, send results), and the
//!   `Consumed` confirmations that release relayd's retained DMs.
//! * `outbound` — what gossipd sends: pushes into the outbound ring within
//!   a send's budget, receive-ACKed sends and their `SendResult` mapping.
//! * `verify` — signature batches through the verifyd pool, in-process
//!   while no verifyd instance is reachable.
//! * `stats` — the link's counters ([`LinkStats`]).

mod inbound;
mod outbound;
mod session;
mod stats;
mod verify;

pub use outbound::ack_outcome;
pub use stats::LinkStats;

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;
use libgossip::proto::{PeerId, SendOutcome, Verdict};
use libgossip::runtime::{AckOutcome, BoxFuture, Link, LinkEvent, VerifyItem};
use tokio::sync::{mpsc, oneshot, watch};

use crate::keys::KeyStore;
use verifyd::client::Pool;
use wire::relay::{Intake, IntakeConfig, IntakeStats};
use wire::ring::shm::ShmProducer;

/// Link events queued toward the runtime before the ring thread waits.
pub const EVENT_QUEUE: usize = 1024;

/// Receive-ACKed sends awaiting relayd's `SendResult` at once; more are
/// answered `Backpressured` at once (counted), so a stalled relayd cannot
/// grow the table.
pub const MAX_PENDING_ACKS: usize = 4096;

/// Ring bytes per direction gossipd proposes (relayd's configured size
/// wins when smaller).
pub const RING_CAPACITY: u32 = 4 << 20;

/// Settings of a [`RelayLink`].
#[derive(Debug, Clone)]
pub struct RelayLinkConfig {
    /// relayd's relay socket.
    pub relay_socket: PathBuf,
    /// This gossipd's hello instance (new per start).
    pub instance: u64,
    /// Bounds of the DM intake (dedupe window, held records).
    pub intake: IntakeConfig,
    /// This node's id: DMs addressed to it wait for the application's
    /// acknowledgement; DMs it only forwards are confirmed once handed to
    /// the runtime (their sender's receipt comes from the next hop).
    pub me: [u8; 32],
    /// Where peers' KEM key records are kept across restarts (`None`: not
    /// kept). See [`crate::keys`].
    pub keys_dir: Option<PathBuf>,
}

/// What the link remembers of a held DM until the application has it.
#[derive(Debug, Clone, Copy)]
struct HeldDm {
    ack_id: [u8; 16],
    redelivered: bool,
}

/// The sending half of a live session.
struct Session {
    outbound: ShmProducer,
    control: UnixStream,
    max_frame: u32,
    fbb: FlatBufferBuilder<'static>,
}

/// What the supervisor thread, the control reader and the send tasks
/// share.
struct State {
    cfg: RelayLinkConfig,
    session: Mutex<Option<Session>>,
    acks: Mutex<HashMap<[u8; 16], oneshot::Sender<AckOutcome>>>,
    intake: Mutex<Intake>,
    /// DM id → relay receive-ACK id of DMs for this node not yet
    /// acknowledged by the application (bounded by the intake's
    /// `max_pending`).
    held: Mutex<HashMap<[u8; 16], HeldDm>>,
    /// Peers' key records kept across restarts.
    keys: Option<KeyStore>,
    /// Peers relayd reported connected on the current session.
    connected: Mutex<std::collections::HashSet<[u8; 32]>>,
    stats: LinkStats,
    closed: AtomicBool,
    attach_tx: watch::Sender<u64>,
    relayd_instance: AtomicU64,
}

/// Locks `m`, poisoned or not.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The [`Link`] over relayd's relay socket and a verifyd pool.
pub struct RelayLink {
    state: Arc<State>,
    gate: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    events: tokio::sync::Mutex<mpsc::Receiver<LinkEvent>>,
    pool: Pool,
}

impl std::fmt::Debug for RelayLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayLink")
            .field("relay_socket", &self.state.cfg.relay_socket)
            .finish_non_exhaustive()
    }
}

impl RelayLink {
    /// Starts the session supervisor and returns at once; it attaches (in
    /// the background, then reattaching as needed) once [`RelayLink::open`]
    /// is called, so the daemon can first subscribe to everything the link
    /// will deliver. `pool` verifies signatures.
    ///
    /// # Errors
    /// When the supervisor thread cannot be started.
    pub fn start(cfg: RelayLinkConfig, pool: Pool) -> std::io::Result<Self> {
        let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let (attach_tx, _) = watch::channel(0);
        let state = Arc::new(State {
            intake: Mutex::new(Intake::new(cfg.intake)),
            keys: cfg.keys_dir.clone().map(KeyStore::new),
            cfg,
            session: Mutex::new(None),
            held: Mutex::new(HashMap::new()),
            connected: Mutex::new(std::collections::HashSet::new()),
            acks: Mutex::new(HashMap::new()),
            stats: LinkStats::default(),
            closed: AtomicBool::new(false),
            attach_tx,
            relayd_instance: AtomicU64::new(0),
        });
        let s = state.clone();
        std::thread::Builder::new()
            .name("gossipd-relay".into())
            .spawn(move || {
                // Dropped without `open` (the daemon failed to start): no
                // session is ever made.
                if gate_rx.recv().is_ok() {
                    session::supervise(&s, &tx);
                }
            })?;
        Ok(Self {
            gate: Mutex::new(Some(gate_tx)),
            state,
            events: tokio::sync::Mutex::new(rx),
            pool,
        })
    }

    /// Lets the supervisor attach to relayd (idempotent).
    pub fn open(&self) {
        if let Some(g) = lock(&self.gate).take() {
            let _ = g.send(());
        }
    }

    /// The link's counters.
    #[must_use]
    pub fn stats(&self) -> &LinkStats {
        &self.state.stats
    }

    /// The intake's counters (DMs held for the application).
    #[must_use]
    pub fn intake_stats(&self) -> IntakeStats {
        lock(&self.state.intake).stats()
    }

    /// relayd's hello instance of the current (or last) session; 0 before
    /// the first.
    #[must_use]
    pub fn relayd_instance(&self) -> u64 {
        self.state.relayd_instance.load(Ordering::Relaxed)
    }

    /// The verifyd pool.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Changes to the number of sessions attached: the daemon rejoins its
    /// topics on every change after the first.
    #[must_use]
    pub fn attaches(&self) -> watch::Receiver<u64> {
        self.state.attach_tx.subscribe()
    }

    /// The application has the DM with id `dm_id`: relayd may forget its
    /// retained copies (ADR 0060 rule 4). Seqs of an earlier relayd
    /// instance are never sent to a new one. False when the DM was not
    /// held (unknown, already acknowledged, or not receive-ACKed).
    pub fn ack_dm(&self, dm_id: &[u8; 16]) -> bool {
        let Some(h) = lock(&self.state.held).remove(dm_id) else {
            return false;
        };
        let seqs = lock(&self.state.intake).app_has(&h.ack_id);
        inbound::consume(&self.state, &seqs);
        true
    }

    /// The key record store, when configured.
    #[must_use]
    pub fn keys(&self) -> Option<&KeyStore> {
        self.state.keys.as_ref()
    }

    /// Peers relayd reports connected now.
    #[must_use]
    pub fn connected_peers(&self) -> usize {
        lock(&self.state.connected).len()
    }

    /// The ids of the peers relayd reports connected now: the bootstrap of
    /// a join (relayd owns the connections; gossip builds its overlays
    /// over them).
    #[must_use]
    pub fn connected(&self) -> Vec<PeerId> {
        lock(&self.state.connected)
            .iter()
            .map(|p| PeerId(*p))
            .collect()
    }

    /// Whether the held DM `dm_id` was sent to an earlier gossipd before
    /// (the application dedupes it by id).
    #[must_use]
    pub fn dm_redelivered(&self, dm_id: &[u8; 16]) -> bool {
        lock(&self.state.held)
            .get(dm_id)
            .is_some_and(|h| h.redelivered)
    }
}

impl Link for RelayLink {
    fn send(&self, to: PeerId, frame: Bytes, timeout: Duration) -> BoxFuture<'static, SendOutcome> {
        outbound::send(self.state.clone(), to, frame, timeout)
    }

    fn send_acked(
        &self,
        to: PeerId,
        frame: Bytes,
        budget: Duration,
    ) -> BoxFuture<'static, AckOutcome> {
        outbound::send_acked(self.state.clone(), to, frame, budget)
    }

    fn next_event(&self) -> BoxFuture<'_, Option<LinkEvent>> {
        Box::pin(async move { self.events.lock().await.recv().await })
    }

    fn verify(&self, batch: Vec<VerifyItem>) -> BoxFuture<'static, Vec<Verdict>> {
        verify::verify(self.pool.clone(), self.state.clone(), batch)
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        let state = self.state.clone();
        Box::pin(async move {
            state.closed.store(true, Ordering::Relaxed);
            session::detach(&state);
        })
    }
}
