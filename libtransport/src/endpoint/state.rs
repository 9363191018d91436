//! The state the driver task owns: the `quinn-proto` endpoint, every
//! connection, the per-kind receive queues and the counters.
//!
//! All of it sits behind one mutex in [`Shared`]. The driver task holds the
//! lock while it runs a batch; API calls (`send`, stream reads and writes)
//! take it for a few microseconds, change a connection, and wake the driver.
//! One owner and one lock keep the hot path free of channels and of the
//! lock-ordering questions that per-connection locks would raise.

use std::collections::VecDeque;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, StreamId};

use super::handle::ConnShared;
use super::{Event, MessageReceived};
use crate::config::Config;
use crate::identity::{Identity, PeerId, Role};
use crate::kind::{Kind, KindConfig, StreamReject};
use crate::manager::Manager;
use crate::proto::proof::ProofExchange;
use crate::proto::stream::StreamDecoder;

/// A fast multiplicative hasher for the driver's small internal keys
/// (connection handles, stream ids, kinds, PeerIds). None of them lets a
/// peer pick colliding values cheaply: stream ids are bounded by the stream
/// limits and PeerIds are SHA-256 outputs.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// HashMap with [`FastHasher`].
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Connection close codes (QUIC application error codes).
pub mod close {
    /// Normal close by the application.
    pub const NORMAL: u32 = 0;
    /// The identity proof was malformed or its signature invalid.
    pub const IDENTITY_INVALID: u32 = 0x101;
    /// The proven PeerId is not the one dialled.
    pub const IDENTITY_MISMATCH: u32 = 0x102;
    /// No identity proof arrived in time.
    pub const IDENTITY_TIMEOUT: u32 = 0x103;
    /// A simultaneous dial lost the tie-break.
    pub const DUPLICATE: u32 = 0x104;
    /// A newer connection to the same peer replaced this one.
    pub const REPLACED: u32 = 0x105;
    /// The endpoint shut down.
    pub const SHUTDOWN: u32 = 0x106;
    /// A dial was abandoned before it became live: it timed out, or another
    /// address of the same peer connected first.
    pub const DIAL_ABANDONED: u32 = 0x108;
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) peer_id: PeerId,
}

impl Shared {
    /// Locks the state. A poisoned lock means a panic mid-update elsewhere;
    /// the data is still structurally valid (every update is a few field
    /// writes), so we continue rather than cascade the panic.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Counters for the whole endpoint.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Counters {
    /// UDP datagrams received.
    pub datagrams_in: u64,
    /// UDP payload bytes received.
    pub bytes_in: u64,
    /// UDP datagrams sent.
    pub datagrams_out: u64,
    /// UDP payload bytes sent.
    pub bytes_out: u64,
    /// Transmits carrying more than one datagram (GSO batches formed).
    pub gso_batches: u64,
    /// Datagrams sent inside GSO batches.
    pub gso_segments: u64,
    /// Received entries carrying more than one datagram (GRO batches).
    pub gro_batches: u64,
    /// Datagrams received inside GRO batches.
    pub gro_segments: u64,
    /// Times a transmit hit WouldBlock and was held for retry.
    pub send_would_block: u64,
    /// Send errors (datagram dropped; QUIC retransmits).
    pub send_errors: u64,
    /// Receive errors.
    pub recv_errors: u64,
    /// Stateless responses dropped because the socket was busy.
    pub responses_dropped: u64,
    /// Incoming connections accepted.
    pub incoming_accepted: u64,
    /// Incoming connections refused (limit or shutdown).
    pub incoming_refused: u64,
    /// Incoming connections quinn-proto rejected while accepting.
    pub incoming_failed: u64,
    /// Connections closed for an invalid identity proof.
    pub identity_invalid: u64,
    /// Connections closed for a PeerId mismatch.
    pub identity_mismatch: u64,
    /// Connections closed for a missing proof.
    pub identity_timeout: u64,
    /// Connections closed by the tie-break.
    pub duplicates_closed: u64,
    /// Connections replaced by a newer one to the same peer.
    pub replaced: u64,
    /// Streams reset: unknown kind.
    pub reset_unknown_kind: u64,
    /// Streams reset: bad header version.
    pub reset_bad_version: u64,
    /// Streams reset: truncated header or message.
    pub reset_truncated: u64,
    /// Streams reset: oversize message.
    pub reset_oversize: u64,
    /// Incoming bidirectional streams reset because their kind's queue was full.
    pub reset_queue_full: u64,
    /// Lifecycle events dropped because nobody read them.
    pub events_dropped: u64,
    /// Finished streams `close`/`wait_idle` gave up on: the drain bound
    /// expired or their connection ended before the peer acknowledged them.
    pub drain_unacknowledged: u64,
    /// Dials closed before they became live: timed out, or another address
    /// of the same peer connected first.
    pub dials_abandoned: u64,
}

/// A kind's receive queue.
pub(crate) struct KindQueue {
    pub(crate) cfg: KindConfig,
    pub(crate) msgs: VecDeque<MessageReceived>,
    pub(crate) bis: VecDeque<super::IncomingBi>,
    pub(crate) waker: Option<Waker>,
    pub(crate) bi_waker: Option<Waker>,
    pub(crate) high_water: usize,
    pub(crate) drops: u64,
    pub(crate) delivered: u64,
    /// Streams paused by back-pressure, resumed when the queue drains.
    pub(crate) blocked: Vec<(ConnectionHandle, StreamId)>,
}

impl KindQueue {
    pub(crate) fn new(cfg: KindConfig) -> Self {
        Self {
            cfg,
            msgs: VecDeque::new(),
            bis: VecDeque::new(),
            waker: None,
            bi_waker: None,
            high_water: 0,
            drops: 0,
            delivered: 0,
            blocked: Vec::new(),
        }
    }
    pub(crate) fn depth(&self) -> usize {
        self.msgs.len() + self.bis.len()
    }
    pub(crate) fn full(&self) -> bool {
        self.depth() >= self.cfg.capacity.max(1)
    }
    pub(crate) fn note_push(&mut self) {
        self.high_water = self.high_water.max(self.depth());
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        if let Some(w) = self.bi_waker.take() {
            w.wake();
        }
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// TLS handshake running.
    Handshaking,
    /// Handshake done, waiting for the peer's identity proof.
    Proving { deadline: Instant },
    /// Proven and accepted by the manager.
    Live,
    /// Closing (rejected, replaced, failed or closed by the app).
    Closing,
}

/// A stream the router reads (uni message streams, bi streams until their
/// header is known).
#[derive(Debug)]
pub(crate) struct InStream {
    pub(crate) bi: bool,
    /// Header, length prefixes and message reassembly.
    pub(crate) dec: StreamDecoder,
    /// Rest of the last chunk read (at most one received frame).
    pub(crate) leftover: Bytes,
    pub(crate) blocked: bool,
    /// A peer's probe (bidirectional `PROBE` stream past its header): the
    /// nonce bytes read so far, echoed once the FIN arrives.
    pub(crate) echo: Option<Vec<u8>>,
}

impl InStream {
    pub(crate) fn new(bi: bool) -> Self {
        Self {
            bi,
            dec: if bi {
                StreamDecoder::bi()
            } else {
                StreamDecoder::uni()
            },
            leftover: Bytes::new(),
            blocked: false,
            echo: None,
        }
    }
}

/// An outgoing stream with bytes queued for it (messages of one kind, or the
/// identity proof).
#[derive(Debug)]
pub(crate) struct OutStream {
    pub(crate) id: StreamId,
    pub(crate) pending: VecDeque<Bytes>,
    pub(crate) pending_bytes: usize,
    /// Small messages not yet handed to quinn-proto, back to back.
    pub(crate) acc: BytesMut,
    pub(crate) finish_when_flushed: bool,
    /// `finish` was called on the quinn-proto stream.
    pub(crate) finished: bool,
    pub(crate) waiters: Vec<Waker>,
}

impl OutStream {
    pub(crate) fn new(id: StreamId) -> Self {
        Self {
            id,
            pending: VecDeque::new(),
            pending_bytes: 0,
            acc: BytesMut::new(),
            finish_when_flushed: false,
            finished: false,
            waiters: Vec::new(),
        }
    }
}

/// Why a connection ended, as seen by dialers and handles.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum CloseReason {
    /// Closed locally by the application or endpoint shutdown.
    Local,
    /// The peer closed it (application code).
    Remote(u64),
    /// Idle timeout.
    TimedOut,
    /// Replaced by a newer connection to the same peer.
    Replaced,
    /// Lost a simultaneous-dial tie-break (closed by either end).
    Duplicate,
    /// Identity proof invalid.
    IdentityInvalid,
    /// The peer proved a different PeerId than the one dialled.
    IdentityMismatch {
        /// The PeerId the peer proved.
        actual: PeerId,
    },
    /// No identity proof within the timeout.
    IdentityTimeout,
    /// Transport or TLS failure.
    Transport(String),
}

pub(crate) struct Conn {
    pub(crate) inner: quinn_proto::Connection,
    pub(crate) uid: u64,
    pub(crate) role: Role,
    pub(crate) expected: Option<PeerId>,
    pub(crate) phase: Phase,
    /// The identity proof exchange (sans-IO, `proto::proof`).
    pub(crate) proof: ProofExchange,
    /// The peer's proof stream, once accepted.
    pub(crate) proof_in: Option<StreamId>,
    pub(crate) proof_out: Option<OutStream>,
    pub(crate) in_streams: HashMap<StreamId, InStream>,
    pub(crate) out_kinds: HashMap<Kind, OutStream>,
    pub(crate) readers: HashMap<StreamId, Waker>,
    pub(crate) writers: HashMap<StreamId, Waker>,
    /// Tasks waiting for stream credit (`open_bi` / new kind stream).
    pub(crate) open_waiters: Vec<Waker>,
    pub(crate) app_bi_by_kind: HashMap<Kind, u64>,
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) close_reason: Option<CloseReason>,
    pub(crate) timer: Option<Instant>,
    pub(crate) dirty: bool,
    /// Messages were queued on `out_kinds` since the driver last flushed.
    pub(crate) out_dirty: bool,
    /// Send streams we finished (message streams rotated by a drain, and
    /// application streams finished or dropped) whose data the peer has not
    /// acknowledged yet; `wait_idle` and `close` wait for this to empty.
    /// Bounded by the stream limits: every entry is an open send stream.
    pub(crate) finishing: HashMap<StreamId, Option<Kind>>,
}

impl Conn {
    pub(crate) fn new(
        inner: quinn_proto::Connection,
        uid: u64,
        role: Role,
        expected: Option<PeerId>,
        shared: Arc<ConnShared>,
    ) -> Self {
        Self {
            inner,
            uid,
            role,
            expected,
            phase: Phase::Handshaking,
            proof: ProofExchange::new(role, expected),
            proof_in: None,
            proof_out: None,
            in_streams: HashMap::default(),
            out_kinds: HashMap::default(),
            readers: HashMap::default(),
            writers: HashMap::default(),
            open_waiters: Vec::new(),
            app_bi_by_kind: HashMap::default(),
            shared,
            close_reason: None,
            timer: None,
            dirty: true,
            out_dirty: false,
            finishing: HashMap::default(),
        }
    }

    pub(crate) fn peer(&self) -> Option<PeerId> {
        self.proof.verified().map(|v| v.peer)
    }

    /// Wakes every task waiting on this connection.
    pub(crate) fn wake_all(&mut self) {
        for (_, w) in self.readers.drain() {
            w.wake();
        }
        for (_, w) in self.writers.drain() {
            w.wake();
        }
        for w in self.open_waiters.drain(..) {
            w.wake();
        }
        for o in self.out_kinds.values_mut() {
            for w in o.waiters.drain(..) {
                w.wake();
            }
        }
    }
}

pub(crate) struct State {
    pub(crate) endpoint: quinn_proto::Endpoint,
    pub(crate) conns: HashMap<ConnectionHandle, Conn>,
    pub(crate) manager: Manager<ConnectionHandle>,
    pub(crate) kinds: HashMap<Kind, KindQueue>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) event_waker: Option<Waker>,
    pub(crate) counters: Counters,
    pub(crate) driver_waker: Option<Waker>,
    /// Tasks waiting for a connection to a peer to become live (or fail).
    pub(crate) peer_waiters: HashMap<PeerId, Vec<Waker>>,
    pub(crate) identity: Arc<Identity>,
    pub(crate) epoch: u64,
    pub(crate) config: Config,
    pub(crate) client_config: quinn_proto::ClientConfig,
    pub(crate) next_uid: u64,
    /// Every connection was closed; the driver stops once they drained.
    pub(crate) shutdown: bool,
    /// A graceful close is draining: no new sends, streams, dials or
    /// incoming connections; the live connections stay open until their
    /// finished streams are acknowledged (or the drain bound expires).
    pub(crate) closing: bool,
    /// Tasks in `wait_idle`/`close` waiting for streams to leave
    /// `Conn::finishing` (one per waiting task).
    pub(crate) idle_waiters: Vec<Waker>,
    /// Tasks waiting for the driver to stop (`close`, `closed`); apart from
    /// `event_waker`, so an event reader does not displace them.
    pub(crate) stop_waiters: Vec<Waker>,
    pub(crate) driver_done: bool,
    pub(crate) backend: &'static str,
    pub(crate) max_gso_segments: usize,
    pub(crate) max_receive_segments: usize,
    /// Kinds whose receiver freed space: the driver resumes their streams.
    pub(crate) unblocked: Vec<Kind>,
    /// Final stats of recently closed connections (bounded), for diagnostics.
    pub(crate) closed_recent: VecDeque<Arc<ConnShared>>,
    /// Misbehave for tests of the peer's proof timeout: never send our
    /// identity proof (see `Endpoint::withhold_proof_for_tests`).
    #[cfg(feature = "test-util")]
    pub(crate) withhold_proof: bool,
    /// Receive-ACK: receiver, sender stats, manual kinds, per-connection
    /// RTT and stuck state.
    pub(crate) ack: super::ack_recv::AckState,
    /// Repair dials: policy, address book, resolvers, waiting sends.
    pub(crate) repair: super::repair::RepairState,
    /// Scavenger probes: scheduler, waiting callers, probes out.
    pub(crate) probe: super::probe::ProbeState,
}

impl State {
    pub(crate) fn wake_driver(&mut self) {
        if let Some(w) = self.driver_waker.take() {
            w.wake();
        }
    }

    pub(crate) fn push_event(&mut self, e: Event) {
        if self.events.len() >= self.config.event_queue.max(1) {
            self.events.pop_front();
            self.counters.events_dropped += 1;
        }
        self.events.push_back(e);
        if let Some(w) = self.event_waker.take() {
            w.wake();
        }
    }

    /// Wakes every API waiter (endpoint shutting down).
    pub(crate) fn wake_all_receivers(&mut self) {
        for q in self.kinds.values_mut() {
            if let Some(w) = q.waker.take() {
                w.wake();
            }
            if let Some(w) = q.bi_waker.take() {
                w.wake();
            }
        }
        if let Some(w) = self.event_waker.take() {
            w.wake();
        }
        for (_, ws) in self.peer_waiters.drain() {
            for w in ws {
                w.wake();
            }
        }
        for c in self.conns.values_mut() {
            c.wake_all();
        }
        self.wake_idle();
        for w in self.stop_waiters.drain(..) {
            w.wake();
        }
    }

    /// Wakes the tasks waiting for finished streams to be acknowledged.
    pub(crate) fn wake_idle(&mut self) {
        for w in self.idle_waiters.drain(..) {
            w.wake();
        }
    }

    /// Whether new work (sends, streams, dials, incoming connections) is
    /// accepted: not after `close` began or the endpoint shut down.
    pub(crate) fn open_for_work(&self) -> bool {
        !self.shutdown && !self.closing
    }

    pub(crate) fn wake_peer(&mut self, peer: &PeerId) {
        if let Some(ws) = self.peer_waiters.remove(peer) {
            for w in ws {
                w.wake();
            }
        }
    }

    pub(crate) fn count_reject(&mut self, r: StreamReject) {
        let c = &mut self.counters;
        match r {
            StreamReject::UnknownKind => c.reset_unknown_kind += 1,
            StreamReject::BadVersion => c.reset_bad_version += 1,
            StreamReject::Truncated => c.reset_truncated += 1,
            StreamReject::Oversize => c.reset_oversize += 1,
            StreamReject::QueueFull => c.reset_queue_full += 1,
        }
    }
}
