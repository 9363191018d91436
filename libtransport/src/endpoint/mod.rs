//! The endpoint: one driver task owning a `quinn-proto` endpoint and all its
//! connections, and the handles applications use.
//!
//! # Architecture
//!
//! ```text
//!  app tasks ── Endpoint / Connection / SendStream / RecvStream / KindReceiver
//!        │ lock (µs), change state, wake driver
//!        ▼
//!  Mutex<State> ◄── driver task (driver.rs): socket ⇄ quinn-proto endpoint
//!                   ⇄ connections ⇄ router (conn.rs) ⇄ per-kind queues
//! ```
//!
//! One task does all protocol work, like quinn's endpoint driver but without
//! per-connection tasks: a received batch is demultiplexed, processed and
//! answered in one pass, transmits from every connection are batched with
//! GSO before the task sleeps, and no hot-path channel hop or cross-task
//! wake-up is needed between the socket and a connection. Application calls
//! take the same lock for a few microseconds and wake the driver; a message
//! `send` queues `Bytes` without copying the payload. The lock is the only
//! synchronisation, so there is no lock ordering to get wrong.
//!
//! # Lifecycle
//!
//! `connect(addr, peer)` returns once the connection is *live*: TLS done,
//! both identity proofs verified, and the connection manager (`manager`)
//! accepted it. If a simultaneous dial made the other connection the winner,
//! `connect` returns that one. Application streams are only accepted from a
//! live connection. [`Event`]s report `Connected`, `Replaced`, `Closed` and
//! `Stuck`.
//!
//! # Repair
//!
//! A send to a known peer with no live connection repairs it:
//! [`Endpoint::connect_peer`] (glue in `repair.rs`) runs the sans-IO
//! `proto::repair` policy, one endpoint-owned dial per peer over the
//! address book and the resolvers; see `docs/adr/0038-repair-lookup-probes.md`.
//!
//! # Probes
//!
//! [`Endpoint::probe`] (glue in `probe.rs`) measures a peer's round trip
//! with scavenger probes scheduled by the sans-IO `proto::probe` policy:
//! single flight per peer, token-bucketed, paused while higher kinds have
//! data queued, a deadline each; peers echo them in the router.
//!
//! # Receive-ACK
//!
//! [`Endpoint::send_with_receive_ack`] (sender glue in `ack.rs`) and the
//! receiving side (`ack_recv.rs`, with [`Endpoint::register_manual`]) drive
//! the sans-IO protocol in `proto::ack`; see `docs/adr/0037-receive-ack.md`.

mod ack;
pub(crate) mod ack_recv;
mod api;
pub(crate) mod conn;
mod drain;
mod driver;
mod handle;
mod probe;
mod repair;
mod router;
pub(crate) mod state;
mod stream;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, StreamId};

pub use ack::ACK_STUCK_CODE;
pub use ack_recv::{ManualReceiver, ManualRequest, REQUEST_READ_TIMEOUT, Responder};
pub use handle::{Connection, PathStats, WeakConnection};
pub use probe::{PROBE_LEN, ProbeDiag, ProbeError};
pub use repair::{LookupReport, MAX_RESOLVERS, RepairDiag};
pub use state::{CloseReason, Counters, close};
pub use stream::{RecvStream, SendStream};

use crate::config::Config;
use crate::identity::{Identity, IdentityError, PeerId};
use crate::io::Socket;
use crate::kind::{Kind, KindConfig};
use crate::manager::Manager;
use crate::tls::TlsError;
use state::{KindQueue, Shared, State};

/// Errors from the endpoint API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Socket error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// TLS configuration error.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Identity error.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// `Endpoint::bind` was called outside a tokio runtime.
    #[error("no tokio runtime")]
    NoRuntime,
    /// quinn-proto refused to start the connection (its error kept as the
    /// source).
    #[error("quinn-proto refused to start the connection")]
    Connect(#[source] quinn_proto::ConnectError),
    /// The dial did not complete within `Config::dial_timeout`.
    #[error("dial timed out")]
    DialTimeout,
    /// The peer proved a different identity than the one dialled.
    #[error("peer identity mismatch: expected {expected}, got {actual}")]
    PeerMismatch {
        /// The PeerId dialled.
        expected: PeerId,
        /// The PeerId the peer proved.
        actual: PeerId,
    },
    /// The connection ended.
    #[error("connection closed: {0:?}")]
    Closed(CloseReason),
    /// No live connection to the peer, and no address to repair it with
    /// (the peer is not in the address book and no resolver is set).
    #[error("not connected to {0}")]
    NotConnected(PeerId),
    /// No live connection to the peer, and repairing it failed or was
    /// refused (backoff after failed dials, too many dials, timeout).
    #[error("could not repair the connection: {0}")]
    Repair(#[source] crate::proto::repair::RepairError),
    /// More resolvers than [`MAX_RESOLVERS`].
    #[error("{0} resolvers given, at most {MAX_RESOLVERS} allowed")]
    TooManyResolvers(usize),
    /// The peer stopped or reset the stream with this code.
    #[error("stream stopped/reset by peer: code {0}")]
    Stopped(u64),
    /// The stream was already finished or reset locally.
    #[error("stream closed")]
    StreamClosed,
    /// A stream or message was longer than the caller's limit.
    #[error("too long")]
    TooLong,
    /// The kind already has a receiver.
    #[error("kind {0:?} already registered")]
    KindRegistered(Kind),
    /// The endpoint has shut down, or [`Endpoint::close`] has begun.
    #[error("endpoint closed")]
    EndpointClosed,
    /// [`Endpoint::close`] or [`Endpoint::wait_idle`] could not confirm that
    /// the peers acknowledged everything: `streams` finished streams (message
    /// streams with queued messages, or application streams) were not
    /// acknowledged before `Config::drain_timeout` (`timed_out`) or before
    /// their connection ended.
    #[error("{streams} stream(s) not acknowledged by their peer (timed out: {timed_out})")]
    Undelivered {
        /// Streams not acknowledged.
        streams: usize,
        /// Whether the drain bound expired (else connections ended first).
        timed_out: bool,
    },
}

/// Lifecycle events.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub enum Event {
    /// A connection became live.
    Connected {
        /// Peer.
        peer: PeerId,
        /// Its generation.
        generation: u64,
        /// Peer address.
        addr: SocketAddr,
    },
    /// A newer connection replaced an older one to the same peer.
    Replaced {
        /// Peer.
        peer: PeerId,
        /// Old generation.
        old: u64,
        /// New generation.
        new: u64,
    },
    /// A live connection closed (not emitted for replaced ones).
    Closed {
        /// Peer.
        peer: PeerId,
        /// Its generation.
        generation: u64,
        /// Why.
        reason: CloseReason,
    },
    /// The receive-ACK stuck detector gave up on a live-looking connection
    /// (consecutive ACK timeouts) and closed it with [`ACK_STUCK_CODE`]; a
    /// `Closed` event follows, and pending receive-ACKed sends redial.
    Stuck(crate::proto::ack::Reconnect),
}

/// A message received on a unidirectional stream of a registered kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageReceived {
    /// Sender.
    pub peer: PeerId,
    /// Kind.
    pub kind: Kind,
    /// Payload.
    pub data: Bytes,
}

/// A peer-opened bidirectional stream waiting in a kind's queue.
#[derive(Debug)]
pub(crate) struct IncomingBi {
    pub(crate) peer: PeerId,
    pub(crate) kind: Kind,
    pub(crate) ch: ConnectionHandle,
    pub(crate) uid: u64,
    pub(crate) id: StreamId,
}

/// A bidirectional stream the peer opened.
#[derive(Debug)]
pub struct BiStream {
    /// The peer.
    pub peer: PeerId,
    /// Kind from the stream header.
    pub kind: Kind,
    /// Our sending half.
    pub send: SendStream,
    /// Our receiving half (the header is already consumed).
    pub recv: RecvStream,
}

/// A QUIC endpoint with an identity. Cheap to clone; the endpoint shuts
/// down when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct Endpoint {
    shared: Arc<Shared>,
    _guard: Arc<Guard>,
}

#[derive(Debug)]
struct Guard(Arc<Shared>);

impl Drop for Guard {
    fn drop(&mut self) {
        api::shutdown(&self.0);
    }
}

impl Endpoint {
    /// Binds a UDP socket (tokio + quinn-udp backend) and starts the driver.
    pub fn bind(addr: SocketAddr, identity: Identity, config: Config) -> Result<Self, Error> {
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let socket = crate::io::udp::UdpSocket::bind(addr)?;
        Self::with_socket(Box::new(socket), identity, config)
    }

    /// Starts an endpoint over any backend.
    pub fn with_socket(
        socket: Box<dyn Socket>,
        identity: Identity,
        config: Config,
    ) -> Result<Self, Error> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (server_crypto, client_crypto) = crate::tls::configs()?;
        let transport = config.transport();
        let mut server = quinn_proto::ServerConfig::with_crypto(server_crypto);
        server.transport_config(transport.clone());
        let mut client = quinn_proto::ClientConfig::new(client_crypto);
        client.transport_config(transport);
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            Some(Arc::new(server)),
            !socket.may_fragment(),
            None,
        );
        let mut epoch = [0u8; 8];
        aws_lc_rs::rand::fill(&mut epoch).map_err(|_| Error::Identity(IdentityError::BadKey))?;
        let local_addr = socket.local_addr()?;
        let peer_id = identity.peer_id();
        let state = State {
            endpoint,
            conns: Default::default(),
            manager: Manager::new(peer_id),
            kinds: Default::default(),
            events: Default::default(),
            event_waker: None,
            counters: Counters::default(),
            driver_waker: None,
            peer_waiters: Default::default(),
            identity: Arc::new(identity),
            epoch: u64::from_be_bytes(epoch),
            client_config: client,
            next_uid: 1,
            shutdown: false,
            closing: false,
            idle_waiters: Vec::new(),
            stop_waiters: Vec::new(),
            driver_done: false,
            backend: socket.backend(),
            max_gso_segments: if config.gso {
                socket.max_gso_segments()
            } else {
                1
            },
            max_receive_segments: socket.max_receive_segments(),
            unblocked: Vec::new(),
            closed_recent: Default::default(),
            #[cfg(feature = "test-util")]
            withhold_proof: false,
            ack: ack_recv::AckState::new(crate::proto::ack::AckConfig::default()),
            repair: repair::RepairState::new(config.repair, config.address_book),
            probe: probe::ProbeState::new(config.probe),
            config,
        };
        let gso = state.config.gso;
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            local_addr,
            peer_id,
        });
        let driver = driver::Driver::new(shared.clone(), socket, gso);
        rt.spawn(driver);
        rt.spawn(ack_recv::run(shared.clone()));
        rt.spawn(probe::run(shared.clone()));
        Ok(Self {
            _guard: Arc::new(Guard(shared.clone())),
            shared,
        })
    }

    /// This endpoint's PeerId.
    #[must_use]
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Dials `peer` at `addr` (or returns the live connection to it). Fails
    /// with [`Error::PeerMismatch`] if the key there is not `peer`'s.
    pub async fn connect(&self, addr: SocketAddr, peer: PeerId) -> Result<Connection, Error> {
        api::connect(&self.shared, addr, peer).await
    }

    /// The live connection to `peer`, if any.
    #[must_use]
    pub fn connection(&self, peer: &PeerId) -> Option<Connection> {
        api::live(&self.shared, peer)
    }

    /// The live connection to `peer`, repairing it when there is none: one
    /// dial per peer however many callers ask (the others wait for it),
    /// to the addresses the address book and the resolvers give, bounded
    /// by `Config::repair` (concurrent dials, queue, deadline, backoff
    /// after failures). Fails with [`Error::NotConnected`] for a peer with
    /// no known address and no resolver, [`Error::Repair`] when the dial
    /// failed or was refused.
    pub async fn connect_peer(&self, peer: &PeerId) -> Result<Connection, Error> {
        repair::connect_peer(&self.shared, *peer).await
    }

    /// Adds addresses where `peer` may be reached to the address book
    /// (bounded by `Config::address_book`). Addresses that connect and
    /// prove the peer move to the front; [`Endpoint::connect`] adds the
    /// address it connected to by itself.
    pub fn add_peer_addrs(&self, peer: &PeerId, addrs: &[SocketAddr]) {
        self.shared.lock().repair.learn(*peer, addrs);
    }

    /// `peer`'s addresses in the address book, most recently confirmed
    /// first.
    #[must_use]
    pub fn peer_addrs(&self, peer: &PeerId) -> Vec<SocketAddr> {
        self.shared.lock().repair.addrs(peer)
    }

    /// Removes `peer` from the address book: sends to it no longer repair
    /// (a live connection stays).
    pub fn forget_peer(&self, peer: &PeerId) {
        self.shared.lock().repair.forget(peer);
    }

    /// Misbehave: from now on this endpoint never sends its identity proof
    /// on new connections, so its peers must refuse them at their proof
    /// deadline. Only for tests of that timeout; only with the `test-util`
    /// feature, so a production build has no way to switch it on.
    #[cfg(feature = "test-util")]
    pub fn withhold_proof_for_tests(&self) {
        self.shared.lock().withhold_proof = true;
    }

    /// Sets the resolvers repair dials ask, in parallel, for addresses of a
    /// peer (beside the address book), and the lookup settings. With any
    /// resolver set, a send to a peer the book does not know dials too.
    /// At most [`MAX_RESOLVERS`]. Dials already running keep their
    /// resolvers.
    pub fn set_resolvers(
        &self,
        resolvers: Vec<Arc<dyn crate::resolve::Resolver>>,
        lookup: crate::resolve::LookupConfig,
    ) -> Result<(), Error> {
        if resolvers.len() > MAX_RESOLVERS {
            return Err(Error::TooManyResolvers(resolvers.len()));
        }
        self.shared.lock().repair.set_resolvers(resolvers, lookup);
        Ok(())
    }

    /// Sends one message of `kind` to `peer`, repairing the connection
    /// first when there is none (see [`Endpoint::connect_peer`]). Returns
    /// once the message is queued on the kind's stream (bounded by
    /// `Config::send_queue_bytes`; waits while that is full).
    pub async fn send(&self, peer: &PeerId, kind: Kind, data: Bytes) -> Result<(), Error> {
        let c = self.connect_peer(peer).await?;
        c.send(kind, data).await
    }

    /// Opens a bidirectional stream of `kind` to `peer`, repairing the
    /// connection first when there is none (see [`Endpoint::connect_peer`]).
    pub async fn open_bi(
        &self,
        peer: &PeerId,
        kind: Kind,
    ) -> Result<(SendStream, RecvStream), Error> {
        let c = self.connect_peer(peer).await?;
        c.open_bi(kind).await
    }

    /// Registers the handler queue for `kind`. Streams of kinds without a
    /// receiver are reset as unknown.
    pub fn register(&self, kind: Kind, config: KindConfig) -> Result<KindReceiver, Error> {
        let mut st = self.shared.lock();
        if st.kinds.contains_key(&kind) {
            return Err(Error::KindRegistered(kind));
        }
        st.kinds.insert(kind, KindQueue::new(config));
        Ok(KindReceiver {
            local: Default::default(),
            shared: self.shared.clone(),
            kind,
        })
    }

    /// The next lifecycle event; `None` once the endpoint is closed.
    pub async fn next_event(&self) -> Option<Event> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(e) = st.events.pop_front() {
                return Poll::Ready(Some(e));
            }
            if st.driver_done {
                return Poll::Ready(None);
            }
            st.event_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// A lifecycle event if one is queued.
    #[must_use]
    pub fn try_next_event(&self) -> Option<Event> {
        self.shared.lock().events.pop_front()
    }

    /// A diagnostics snapshot.
    #[must_use]
    pub fn diagnostics(&self) -> crate::diag::Diagnostics {
        crate::diag::snapshot(&self.shared)
    }

    /// Closes the endpoint gracefully and waits until it has stopped.
    ///
    /// From the call on, new sends, streams, dials and incoming connections
    /// are refused ([`Error::EndpointClosed`]). Every message already queued
    /// by [`Endpoint::send`]/[`Connection::send`] is handed to QUIC, and
    /// `close` waits until each peer's QUIC stack has acknowledged all of it
    /// — and all data of application streams finished (or dropped) before
    /// the call — then closes every connection and waits for the driver to
    /// stop. The wait is bounded by `Config::drain_timeout`.
    ///
    /// `Ok` guarantees the peer *received* everything queued: its endpoint
    /// holds the messages in the kind's receive queue (or, if that queue was
    /// full and back-pressuring, in its QUIC receive buffer; closing then
    /// drops what it had not read). It does not mean the peer application
    /// consumed them; use receive-ACKed sends for that. `Err(Undelivered)`
    /// says how many streams were not acknowledged, because the bound
    /// expired or their connection ended first. Streams the application
    /// still holds open (not finished) are reset by the close, not waited
    /// for.
    ///
    /// A process that sends and then exits must await this (or
    /// [`Endpoint::wait_idle`]) first: dropping the endpoint, or
    /// [`Endpoint::abort`], discards whatever is still in flight.
    pub async fn close(&self) -> Result<(), Error> {
        drain::close(&self.shared).await
    }

    /// Waits until the peers have acknowledged everything queued so far,
    /// without closing anything.
    ///
    /// Every live connection's message streams get a FIN behind the
    /// messages queued before the call; `wait_idle` returns `Ok` once the
    /// peers' QUIC stacks acknowledged each of them, and every application
    /// stream finished (or dropped) before the call, with the guarantee
    /// [`Endpoint::close`] gives. Messages sent meanwhile are not waited
    /// for; a send of a kind whose stream is still being acknowledged waits
    /// for that (about one round trip), so each kind stays in order. Bounded
    /// by `Config::drain_timeout`; `Err(Undelivered)` as for `close`.
    pub async fn wait_idle(&self) -> Result<(), Error> {
        drain::wait_idle(&self.shared).await
    }

    /// Closes every connection at once, without draining (queued data may
    /// be lost), and stops the driver once they are gone. Dropping the last
    /// clone of the endpoint does the same. See [`Endpoint::close`].
    pub fn abort(&self) {
        api::shutdown(&self.shared);
    }

    /// Waits until the driver has stopped (after [`Endpoint::abort`], or a
    /// [`Endpoint::close`] another task runs).
    pub async fn closed(&self) {
        api::driver_stopped(&self.shared).await;
    }
}

/// The receive side of one stream kind: its messages and the bidirectional
/// streams peers open with that kind. Dropping it unregisters the kind.
#[derive(Debug)]
pub struct KindReceiver {
    shared: Arc<Shared>,
    kind: Kind,
    /// Messages taken from the queue in one lock, handed out one by one.
    local: std::collections::VecDeque<MessageReceived>,
}

/// Messages a receiver takes from its queue per lock. Keeps the endpoint
/// lock out of the per-message path; the queue bound is then `capacity`
/// plus this many in the receiver's hands.
const RECV_BATCH: usize = 32;

impl KindReceiver {
    /// The kind.
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The next message; `None` once the endpoint is closed.
    pub async fn recv(&mut self) -> Option<MessageReceived> {
        if let Some(m) = self.local.pop_front() {
            return Some(m);
        }
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            api::pop_msgs(&mut st, self.kind, &mut self.local, RECV_BATCH);
            if let Some(m) = self.local.pop_front() {
                return Poll::Ready(Some(m));
            }
            if st.driver_done {
                return Poll::Ready(None);
            }
            if let Some(q) = st.kinds.get_mut(&self.kind) {
                q.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }

    /// A message if one is queued.
    pub fn try_recv(&mut self) -> Option<MessageReceived> {
        if self.local.is_empty() {
            api::pop_msgs(
                &mut self.shared.lock(),
                self.kind,
                &mut self.local,
                RECV_BATCH,
            );
        }
        self.local.pop_front()
    }

    /// The next bidirectional stream a peer opened with this kind.
    pub async fn accept_bi(&mut self) -> Option<BiStream> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(b) = api::pop_bi(&mut st, self.kind) {
                drop(st);
                return Poll::Ready(Some(stream::bi_stream(&self.shared, b)));
            }
            if st.driver_done {
                return Poll::Ready(None);
            }
            if let Some(q) = st.kinds.get_mut(&self.kind) {
                q.bi_waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for KindReceiver {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.kinds.remove(&self.kind);
    }
}
