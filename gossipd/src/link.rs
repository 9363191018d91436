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
// The link is a driver: it owns the clock for send budgets.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flatbuffers::FlatBufferBuilder;
use libgossip::proto::{PeerId, SendOutcome, Verdict};
use libgossip::runtime::{AckOutcome, BoxFuture, Link, LinkEvent, VerifyItem};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument as _;

use crate::keys::KeyStore;
use verifyd::client::{Item, Pool};
use wire::frame::{self, FrameReader, FrameWriter, RelayMsg};
use wire::generated::hello::Role;
use wire::generated::relay::{AdmissionOutcome, PeerEventKind, SendStatus, StreamKind};
use wire::relay::{self, InboundRecord, Intake, IntakeConfig, IntakeStats, Offer, OutboundSend};
use wire::ring::shm::ShmProducer;
use wire::ring::{Geometry, PopError, SpinConfig, TryPushError};

/// Link events queued toward the runtime before the ring thread waits.
pub const EVENT_QUEUE: usize = 1024;

/// Receive-ACKed sends awaiting relayd's `SendResult` at once; more are
/// answered `Backpressured` at once (counted), so a stalled relayd cannot
/// grow the table.
pub const MAX_PENDING_ACKS: usize = 4096;

/// Ring bytes per direction gossipd proposes (relayd's configured size
/// wins when smaller).
pub const RING_CAPACITY: u32 = 4 << 20;

/// First and largest wait between attach attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// How long past its budget a receive-ACKed send waits for relayd's answer
/// (relayd bounds the send by the budget itself; this covers the control
/// frame's trip).
const ANSWER_SLACK: Duration = Duration::from_millis(500);

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

/// Counters of the link, all monotonic except `attached`.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Sessions attached (1 at the first, +1 per reattach).
    pub attaches: AtomicU64,
    /// Failed attach attempts (relayd down, busy, bad setup).
    pub attach_failures: AtomicU64,
    /// Whether a session is up now.
    pub attached: AtomicBool,
    /// Inbound records handed to the runtime.
    pub inbound: AtomicU64,
    /// Inbound records that did not decode (dropped).
    pub inbound_malformed: AtomicU64,
    /// Inbound DM records dropped as duplicates by the intake.
    pub inbound_duplicates: AtomicU64,
    /// Inbound DM records dropped because the intake held its maximum
    /// (relayd still retains them and re-sends them on the next attach).
    pub inbound_intake_full: AtomicU64,
    /// Frames pushed into the outbound ring.
    pub sent: AtomicU64,
    /// Sends that found no session.
    pub send_no_session: AtomicU64,
    /// Sends whose ring stayed full for their whole budget.
    pub send_ring_full: AtomicU64,
    /// Receive-ACKed sends refused because [`MAX_PENDING_ACKS`] were open.
    pub acks_refused: AtomicU64,
    /// `SendResult`s that matched no open send (late or unknown).
    pub results_unmatched: AtomicU64,
    /// `Consumed` seqs sent to relayd.
    pub consumed_sent: AtomicU64,
    /// Verify batches answered by the verifyd pool.
    pub verify_pool: AtomicU64,
    /// Verify batches checked in-process (no verifyd instance reachable).
    pub verify_local: AtomicU64,
    /// Link events the runtime no longer took (link closing).
    pub events_dropped: AtomicU64,
    /// Held DMs whose id could not be remembered (table full): they stay
    /// retained by relayd and come again on the next attach.
    pub dm_ids_full: AtomicU64,
}

/// What the link remembers of a held DM until the application has it.
#[derive(Debug, Clone, Copy)]
struct HeldDm {
    ack_id: [u8; 16],
    redelivered: bool,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The sending half of a live session.
struct Session {
    outbound: ShmProducer,
    control: UnixStream,
    max_frame: u32,
    fbb: FlatBufferBuilder<'static>,
}

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
                    supervise(&s, &tx);
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
        consume(&self.state, &seqs);
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

/// Sends `Consumed` for `seqs` on the current session (lost with it: the
/// records then come again, flagged, and the intake removes them).
fn consume(state: &State, seqs: &[u64]) {
    let mut rest = seqs;
    let mut guard = lock(&state.session);
    let Some(s) = guard.as_mut() else { return };
    while !rest.is_empty() {
        let (bytes, taken) = relay::encode_consumed(&mut s.fbb, rest);
        if let Err(e) = FrameWriter::new(&s.control, s.max_frame).write_frame(bytes) {
            tracing::debug!(error = %e, "Consumed not sent");
            return;
        }
        state
            .stats
            .consumed_sent
            .fetch_add(taken as u64, Ordering::Relaxed);
        rest = &rest[taken..];
    }
}

/// Attaches, serves the session until relayd goes away, and again, until
/// the link is closed.
fn supervise(state: &Arc<State>, tx: &mpsc::Sender<LinkEvent>) {
    let mut wait = BACKOFF.0;
    while !state.closed.load(Ordering::Relaxed) {
        match attach(state) {
            Ok((inbound, reader)) => {
                wait = BACKOFF.0;
                serve(state, tx, inbound, reader);
            }
            Err(e) => {
                bump(&state.stats.attach_failures);
                tracing::debug!(error = %e, socket = %state.cfg.relay_socket.display(), "attach to relayd failed");
                std::thread::sleep(wait);
                wait = (wait * 2).min(BACKOFF.1);
            }
        }
    }
}

/// Why an attach attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("connecting: {0}")]
    Io(#[from] std::io::Error),
    #[error("hello: {0}")]
    Hello(#[from] wire::WireError),
    #[error("data channel: {0}")]
    Channel(#[from] relay::ChannelError),
    #[error("ring geometry: {0}")]
    Geometry(String),
}

fn attach(state: &Arc<State>) -> Result<(wire::ring::shm::ShmConsumer, UnixStream), AttachError> {
    let control = UnixStream::connect(&state.cfg.relay_socket)?;
    control.set_read_timeout(Some(Duration::from_secs(10)))?;
    let session = {
        let mut r = FrameReader::new(&control, frame::MIN_MAX_FRAME);
        let mut w = FrameWriter::new(&control, frame::MIN_MAX_FRAME);
        let cfg = relay::hello_config(Role::Gossipd, RING_CAPACITY, state.cfg.instance);
        wire::hello::exchange(&mut r, &mut w, &cfg)?
    };
    let geo = Geometry::negotiated(session.ring_capacity, session.max_frame)
        .map_err(|e| AttachError::Geometry(e.to_string()))?;
    let rings = relay::channel::attach(&control, geo, SpinConfig::default())?;
    control.set_read_timeout(None)?;
    let reader = control.try_clone()?;
    let old = state
        .relayd_instance
        .swap(session.peer_instance, Ordering::Relaxed);
    // A new relayd numbers its seqs from 1 again: the intake must never
    // confirm an old instance's seq to it.
    lock(&state.intake).attach(session.peer_instance);
    *lock(&state.session) = Some(Session {
        outbound: rings.outbound,
        control,
        max_frame: session.max_frame,
        fbb: FlatBufferBuilder::new(),
    });
    state.stats.attached.store(true, Ordering::Relaxed);
    let n = state.stats.attaches.fetch_add(1, Ordering::Relaxed) + 1;
    state.attach_tx.send_replace(n);
    tracing::info!(
        relayd_instance = session.peer_instance,
        relayd_restarted = old != 0 && old != session.peer_instance,
        ring_capacity = session.ring_capacity,
        "attached to relayd"
    );
    Ok((rings.inbound, reader))
}

/// Runs one session: control frames on a thread of their own, inbound
/// records here; returns when relayd is gone.
fn serve(
    state: &Arc<State>,
    tx: &mpsc::Sender<LinkEvent>,
    mut inbound: wire::ring::shm::ShmConsumer,
    reader: UnixStream,
) {
    let s = state.clone();
    let ctx = tx.clone();
    let control = std::thread::Builder::new()
        .name("gossipd-control".into())
        .spawn(move || read_control(&s, &ctx, &reader));
    let mut buf = Vec::new();
    loop {
        match inbound.pop(&mut buf) {
            Ok(_) => {
                if let Some(ev) = inbound_event(state, &buf)
                    && tx.blocking_send(ev).is_err()
                {
                    bump(&state.stats.events_dropped);
                    break;
                }
            }
            Err(PopError::PeerGone(g)) => {
                tracing::info!(reason = %g, "relayd went away");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "inbound ring failed");
                break;
            }
        }
    }
    detach(state);
    if let Ok(h) = control {
        let _ = h.join();
    }
}

/// Forgets the session: sends fail fast, open receive-ACKed sends end
/// `NotConnected` (the DM engine retries or falls back).
fn detach(state: &State) {
    if let Some(s) = lock(&state.session).take() {
        // Wakes the control reader (its read ends).
        let _ = s.control.shutdown(std::net::Shutdown::Both);
    }
    state.stats.attached.store(false, Ordering::Relaxed);
    lock(&state.connected).clear();
    for (_, tx) in lock(&state.acks).drain() {
        let _ = tx.send(AckOutcome::NotConnected);
    }
}

/// One ring record as a link event, after the intake's dedupe for DMs.
fn inbound_event(state: &State, buf: &[u8]) -> Option<LinkEvent> {
    let Ok(RelayMsg::Inbound(m)) = frame::decode_relay(buf) else {
        bump(&state.stats.inbound_malformed);
        return None;
    };
    let rec = InboundRecord::from_table(&m);
    let from = PeerId(rec.peer);
    if rec.ack_id.is_some() || rec.seq != 0 {
        let offer = lock(&state.intake).offer(rec.ack_id, rec.seq);
        match offer {
            Offer::Deliver => {}
            Offer::Duplicate { consume_now } => {
                bump(&state.stats.inbound_duplicates);
                if let Some(seq) = consume_now {
                    consume(state, &[seq]);
                }
                return None;
            }
            Offer::Full => {
                bump(&state.stats.inbound_intake_full);
                return None;
            }
        }
    }
    if let Some(ack_id) = rec.ack_id {
        hold_dm(state, ack_id, &rec);
    }
    if let Some(keys) = &state.keys {
        keys.save(&rec.payload);
    }
    bump(&state.stats.inbound);
    tracing::trace!(peer = %from, kind = ?rec.kind, seq = rec.seq, "inbound record");
    Some(LinkEvent::Frame {
        from,
        data: Bytes::from(rec.payload),
    })
}

/// Remembers which DM a delivered receive-ACKed record carries, so the
/// application's acknowledgement (by DM id) can release relayd's copy.
/// A record that is no DM for this node (a DM it forwards, or not a DM
/// frame at all) is released at once: nothing waits on the application.
fn hold_dm(state: &State, ack_id: [u8; 16], rec: &InboundRecord) {
    let frame = Bytes::copy_from_slice(&rec.payload);
    let env = match libgossip::wire::Frame::parse(&frame, &libgossip::wire::Limits::default()) {
        Ok(libgossip::wire::Frame::Dm(env)) if env.to.0 == state.cfg.me => env,
        _ => {
            let seqs = lock(&state.intake).app_has(&ack_id);
            consume(state, &seqs);
            return;
        }
    };
    let mut held = lock(&state.held);
    if held.len() >= state.cfg.intake.max_pending {
        bump(&state.stats.dm_ids_full);
        return;
    }
    held.insert(
        env.id,
        HeldDm {
            ack_id,
            redelivered: rec.redelivered,
        },
    );
}

/// Reads control frames until the connection ends.
fn read_control(state: &State, tx: &mpsc::Sender<LinkEvent>, sock: &UnixStream) {
    let mut r = FrameReader::new(sock, frame::HARD_MAX_FRAME);
    loop {
        let payload = match r.read_frame() {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "control socket ended");
                return;
            }
        };
        let ev = match frame::decode_relay(payload) {
            Ok(RelayMsg::PeerEvent(e)) => {
                let peer = PeerId(array(e.peer().bytes().iter()));
                match e.kind() {
                    PeerEventKind::Connected | PeerEventKind::Replaced => {
                        lock(&state.connected).insert(peer.0);
                        Some(LinkEvent::Up { peer, key: None })
                    }
                    _ => {
                        lock(&state.connected).remove(&peer.0);
                        Some(LinkEvent::Down { peer })
                    }
                }
            }
            Ok(RelayMsg::SendResult(r)) => {
                let id = array(r.send_id().bytes().iter());
                let outcome = ack_outcome(r.status(), r.outcome());
                match lock(&state.acks).remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(outcome);
                    }
                    None => bump(&state.stats.results_unmatched),
                }
                None
            }
            Ok(other) => {
                tracing::debug!(msg = ?other, "unexpected control frame ignored");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "relayd sent an error or a bad frame");
                return;
            }
        };
        if let Some(ev) = ev
            && tx.blocking_send(ev).is_err()
        {
            bump(&state.stats.events_dropped);
            return;
        }
    }
}

fn array<const N: usize>(bytes: impl Iterator<Item = u8>) -> [u8; N] {
    let mut a = [0u8; N];
    for (slot, b) in a.iter_mut().zip(bytes) {
        *slot = b;
    }
    a
}

/// relayd's answer to a receive-ACKed send as the DM engine's outcome, the
/// same mapping the in-process link makes of libtransport's errors.
#[must_use]
pub fn ack_outcome(status: SendStatus, outcome: AdmissionOutcome) -> AckOutcome {
    match status {
        SendStatus::Acked => match outcome {
            AdmissionOutcome::Accepted => AckOutcome::Accepted,
            AdmissionOutcome::Backpressured | AdmissionOutcome::Duplicate => {
                AckOutcome::Backpressured
            }
            _ => AckOutcome::ConsumerGone,
        },
        SendStatus::TimedOut => AckOutcome::TimedOut,
        SendStatus::LocalBackpressure => AckOutcome::Backpressured,
        _ => AckOutcome::NotConnected,
    }
}

/// Why a push into the outbound ring did not happen.
enum PushFail {
    NoSession,
    Full,
    Gone,
}

/// One push into the outbound ring, if there is a session and room.
fn try_push(state: &State, out: &OutboundSend<'_>) -> Result<(), PushFail> {
    let mut guard = lock(&state.session);
    let Some(s) = guard.as_mut() else {
        return Err(PushFail::NoSession);
    };
    let rec = out.encode(&mut s.fbb);
    match s.outbound.try_push(rec) {
        Ok(()) => Ok(()),
        Err(TryPushError::Full(_)) => Err(PushFail::Full),
        Err(e) => {
            tracing::debug!(error = %e, "outbound push failed");
            Err(PushFail::Gone)
        }
    }
}

/// Pushes `out`, retrying a full ring every millisecond until `deadline`.
async fn push(state: &State, out: OutboundSend<'_>, deadline: Instant) -> Result<(), PushFail> {
    loop {
        match try_push(state, &out) {
            Err(PushFail::Full) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(PushFail::Full) => {
                bump(&state.stats.send_ring_full);
                return Err(PushFail::Full);
            }
            Err(PushFail::NoSession) => {
                bump(&state.stats.send_no_session);
                return Err(PushFail::NoSession);
            }
            Ok(()) => {
                bump(&state.stats.sent);
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

fn budget_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

impl Link for RelayLink {
    fn send(&self, to: PeerId, frame: Bytes, timeout: Duration) -> BoxFuture<'static, SendOutcome> {
        let state = self.state.clone();
        Box::pin(async move {
            let start = Instant::now();
            let out = OutboundSend {
                peer: to.0,
                kind: StreamKind::Pubsub,
                generation: 0,
                send_id: None,
                budget_ms: budget_ms(timeout),
                payload: &frame,
            };
            match push(&state, out, start + timeout).await {
                // relayd reports plain sends only in its counters: handing
                // the frame over is as far as this link sees.
                Ok(()) => SendOutcome::Delivered {
                    latency: start.elapsed(),
                },
                Err(PushFail::Full) => SendOutcome::TimedOut,
                Err(_) => SendOutcome::Failed,
            }
        })
    }

    fn send_acked(
        &self,
        to: PeerId,
        frame: Bytes,
        budget: Duration,
    ) -> BoxFuture<'static, AckOutcome> {
        let state = self.state.clone();
        let span = tracing::debug_span!("dm_send", peer = %to);
        Box::pin(
            async move {
                let start = Instant::now();
                let id: [u8; 16] = rand::random();
                let (tx, rx) = oneshot::channel();
                {
                    let mut acks = lock(&state.acks);
                    if acks.len() >= MAX_PENDING_ACKS {
                        bump(&state.stats.acks_refused);
                        return AckOutcome::Backpressured;
                    }
                    acks.insert(id, tx);
                }
                let out = OutboundSend {
                    peer: to.0,
                    kind: StreamKind::Dm,
                    generation: 0,
                    send_id: Some(id),
                    budget_ms: budget_ms(budget),
                    payload: &frame,
                };
                let pushed = push(&state, out, start + budget).await;
                if let Err(e) = pushed {
                    lock(&state.acks).remove(&id);
                    return match e {
                        PushFail::Full => AckOutcome::Backpressured,
                        _ => AckOutcome::NotConnected,
                    };
                }
                let left = budget.saturating_sub(start.elapsed()) + ANSWER_SLACK;
                match tokio::time::timeout(left, rx).await {
                    Ok(Ok(o)) => o,
                    // The session ended with the sender dropped.
                    Ok(Err(_)) => AckOutcome::NotConnected,
                    Err(_) => {
                        lock(&state.acks).remove(&id);
                        AckOutcome::TimedOut
                    }
                }
            }
            .instrument(span),
        )
    }

    fn next_event(&self) -> BoxFuture<'_, Option<LinkEvent>> {
        Box::pin(async move { self.events.lock().await.recv().await })
    }

    fn verify(&self, batch: Vec<VerifyItem>) -> BoxFuture<'static, Vec<Verdict>> {
        let pool = self.pool.clone();
        let state = self.state.clone();
        Box::pin(async move {
            let items = batch
                .iter()
                .map(|i| Item {
                    key: i.key.clone(),
                    msg: Bytes::copy_from_slice(&i.signed),
                    sig: i.signature.clone(),
                })
                .collect();
            let n = batch.len();
            match pool.try_submit(items) {
                Ok(ticket) => match ticket.await {
                    Ok(v) => {
                        bump(&state.stats.verify_pool);
                        v.into_iter()
                            .map(|v| match v {
                                verifyd::Verdict::Valid => Verdict::Valid,
                                _ => Verdict::Invalid,
                            })
                            .collect()
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "verifyd batch failed; rejecting it");
                        vec![Verdict::Invalid; n]
                    }
                },
                Err(_) => {
                    // No verifyd reachable: check here rather than stall
                    // gossip (counted; operators see it in diagnostics).
                    bump(&state.stats.verify_local);
                    libgossip::runtime::verify_in_process(batch).await
                }
            }
        })
    }

    fn close(&self) -> BoxFuture<'static, ()> {
        let state = self.state.clone();
        Box::pin(async move {
            state.closed.store(true, Ordering::Relaxed);
            detach(&state);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every relayd answer maps to the outcome the DM engine expects
    /// (anything but `Accepted` makes a direct DM fall back). Capability:
    /// D2.
    #[test]
    fn send_results_map_to_ack_outcomes() {
        use AckOutcome::*;
        let cases = [
            (SendStatus::Acked, AdmissionOutcome::Accepted, Accepted),
            (
                SendStatus::Acked,
                AdmissionOutcome::Backpressured,
                Backpressured,
            ),
            (
                SendStatus::Acked,
                AdmissionOutcome::Duplicate,
                Backpressured,
            ),
            (
                SendStatus::Acked,
                AdmissionOutcome::ConsumerGone,
                ConsumerGone,
            ),
            (SendStatus::Acked, AdmissionOutcome::Conflict, ConsumerGone),
            (SendStatus::TimedOut, AdmissionOutcome::Accepted, TimedOut),
            (
                SendStatus::Unreachable,
                AdmissionOutcome::Accepted,
                NotConnected,
            ),
            (
                SendStatus::ConnectionLost,
                AdmissionOutcome::Accepted,
                NotConnected,
            ),
            (
                SendStatus::LocalBackpressure,
                AdmissionOutcome::Accepted,
                Backpressured,
            ),
        ];
        for (s, o, want) in cases {
            assert_eq!(ack_outcome(s, o), want, "{s:?} {o:?}");
        }
    }
}
