//! Connection handles: a strong [`Connection`] and a [`WeakConnection`], both
//! cheap, neither keeping the QUIC connection open (the driver owns it; a
//! connection ends when it is closed, replaced or times out). Path stats are
//! copied into the handle's shared record when the connection ends, so they
//! stay readable after close.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use quinn_proto::ConnectionHandle;

use super::state::{CloseReason, Shared};
use super::{Error, RecvStream, SendStream};
use crate::identity::PeerId;
use crate::kind::Kind;

/// Path statistics of one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PathStats {
    /// Smoothed RTT.
    pub rtt: Duration,
    /// Congestion window in bytes.
    pub cwnd: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Bytes declared lost.
    pub lost_bytes: u64,
    /// UDP bytes sent.
    pub sent_bytes: u64,
    /// UDP bytes received.
    pub recv_bytes: u64,
    /// Congestion events.
    pub congestion_events: u64,
    /// Current path MTU.
    pub mtu: u16,
}

impl PathStats {
    pub(crate) fn of(c: &quinn_proto::Connection) -> Self {
        let s = c.stats();
        Self {
            rtt: s.path.rtt,
            cwnd: s.path.cwnd,
            sent_packets: s.path.sent_packets,
            lost_packets: s.path.lost_packets,
            lost_bytes: s.path.lost_bytes,
            sent_bytes: s.udp_tx.bytes,
            recv_bytes: s.udp_rx.bytes,
            congestion_events: s.path.congestion_events,
            mtu: s.path.current_mtu,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Info {
    pub(crate) peer: Option<PeerId>,
    pub(crate) generation: u64,
    pub(crate) session_id: [u8; 16],
    pub(crate) initiator: Option<PeerId>,
    pub(crate) closed: Option<CloseReason>,
    pub(crate) stats: PathStats,
    pub(crate) waiters: Vec<Waker>,
}

/// The record a connection shares with its handles; outlives the connection.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub(crate) uid: u64,
    pub(crate) ch: ConnectionHandle,
    pub(crate) remote: SocketAddr,
    pub(crate) info: Mutex<Info>,
}

impl ConnShared {
    pub(crate) fn info(&self) -> std::sync::MutexGuard<'_, Info> {
        // See `Shared::lock` on poisoning.
        self.info
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The peer's PeerId (all zeros if no proof named one).
    pub(crate) fn peer(&self) -> PeerId {
        self.info().peer.unwrap_or(PeerId([0; 32]))
    }

    /// Resolves when the connection has ended, with the reason.
    pub(crate) async fn on_closed(&self) -> CloseReason {
        poll_fn(|cx| {
            let mut i = self.info();
            match &i.closed {
                Some(r) => Poll::Ready(r.clone()),
                None => {
                    if !i.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        i.waiters.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Records the end of the connection (first reason wins) and wakes
    /// `on_closed` waiters.
    pub(crate) fn set_closed(&self, reason: CloseReason, stats: PathStats) {
        let mut i = self.info();
        i.stats = stats;
        if i.closed.is_none() {
            i.closed = Some(reason);
        }
        for w in i.waiters.drain(..) {
            w.wake();
        }
    }
}

/// A handle to a live (or former) connection to a peer.
#[derive(Clone, Debug)]
pub struct Connection {
    pub(crate) ep: Arc<Shared>,
    pub(crate) rec: Arc<ConnShared>,
}

impl Connection {
    /// The peer's PeerId.
    #[must_use]
    pub fn peer(&self) -> PeerId {
        self.rec.peer()
    }

    /// The connection's generation (unique per endpoint, increasing).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.rec.info().generation
    }

    /// An identifier of this QUIC connection that both ends compute alike
    /// (a TLS exporter of the session under its own label) and no other
    /// connection shares: two endpoints hold the same connection exactly
    /// when their handles' `session_id`s are equal. Unlike
    /// [`Connection::generation`], which each endpoint numbers on its own,
    /// it can be compared across ends (and logged on both to correlate).
    #[must_use]
    pub fn session_id(&self) -> [u8; 16] {
        self.rec.info().session_id
    }

    /// Who opened the connection (after a simultaneous dial both ends agree:
    /// the smaller PeerId).
    #[must_use]
    pub fn initiator(&self) -> PeerId {
        self.rec.info().initiator.unwrap_or(PeerId([0; 32]))
    }

    /// The peer's address.
    #[must_use]
    pub fn remote_address(&self) -> SocketAddr {
        self.rec.remote
    }

    /// Why the connection ended, or `None` while it is open.
    #[must_use]
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.rec.info().closed.clone()
    }

    /// Path stats: live while open, final after close.
    #[must_use]
    pub fn stats(&self) -> PathStats {
        if self.rec.info().closed.is_none() {
            let st = self.ep.lock();
            if let Some(c) = st.conns.get(&self.rec.ch).filter(|c| c.uid == self.rec.uid) {
                return PathStats::of(&c.inner);
            }
        }
        self.rec.info().stats
    }

    /// Resolves when the connection has ended, with the reason.
    pub async fn on_closed(&self) -> CloseReason {
        self.rec.on_closed().await
    }

    /// Closes the connection.
    pub fn close(&self) {
        let mut st = self.ep.lock();
        super::conn::close_conn(
            &mut st,
            self.rec.ch,
            self.rec.uid,
            super::state::close::NORMAL,
            CloseReason::Local,
        );
        st.wake_driver();
    }

    /// A handle that does not keep the endpoint alive.
    #[must_use]
    pub fn downgrade(&self) -> WeakConnection {
        WeakConnection {
            ep: Arc::downgrade(&self.ep),
            rec: self.rec.clone(),
        }
    }

    /// Sends one message of `kind` on this connection.
    pub async fn send(&self, kind: Kind, data: Bytes) -> Result<(), Error> {
        super::api::send_on(&self.ep, &self.rec, kind, data).await
    }

    /// Opens a unidirectional stream with no header, for protocol tests and
    /// experiments: the peer's router validates whatever is written.
    #[doc(hidden)]
    pub async fn open_raw_uni(&self) -> Result<SendStream, Error> {
        super::api::open_raw_uni(&self.ep, &self.rec).await
    }

    /// Opens a bidirectional stream of `kind` on this connection.
    pub async fn open_bi(&self, kind: Kind) -> Result<(SendStream, RecvStream), Error> {
        super::api::open_bi_on(&self.ep, &self.rec, kind).await
    }
}

/// A weak connection handle: does not keep the endpoint alive; stats and
/// `on_closed` stay available.
#[derive(Clone, Debug)]
pub struct WeakConnection {
    ep: Weak<Shared>,
    rec: Arc<ConnShared>,
}

impl WeakConnection {
    /// A strong handle, if the endpoint is alive and the connection open.
    #[must_use]
    pub fn upgrade(&self) -> Option<Connection> {
        if self.rec.info().closed.is_some() {
            return None;
        }
        self.ep.upgrade().map(|ep| Connection {
            ep,
            rec: self.rec.clone(),
        })
    }

    /// The peer's PeerId.
    #[must_use]
    pub fn peer(&self) -> PeerId {
        self.rec.peer()
    }

    /// The connection's generation.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.rec.info().generation
    }

    /// Final (or last recorded) path stats.
    #[must_use]
    pub fn stats(&self) -> PathStats {
        match self.upgrade() {
            Some(c) => c.stats(),
            None => self.rec.info().stats,
        }
    }

    /// Why the connection ended, or `None` while it is open.
    #[must_use]
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.rec.info().closed.clone()
    }

    /// Resolves when the connection has ended, with the reason.
    pub async fn on_closed(&self) -> CloseReason {
        self.rec.on_closed().await
    }
}
