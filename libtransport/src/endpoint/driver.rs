//! The driver task: the only code that touches the socket and the
//! `quinn-proto` endpoint clock.
//!
//! One iteration (`Driver::poll`), with the state locked:
//!
//! 1. **Receive** up to `RECV_ROUNDS` (2) batches of `io::BATCH` entries, split
//!    each entry by its GRO stride, and feed every datagram to
//!    `Endpoint::handle`: connection events go to their connection, a new
//!    `Incoming` is accepted or refused (never ignored: both are counted),
//!    stateless responses are queued.
//! 2. **Timers**: connections whose `poll_timeout` passed get
//!    `handle_timeout`; identity-proof deadlines are checked.
//! 3. **Events**: every connection's application events (handshake, proof,
//!    streams: `conn` module) and endpoint events (CID updates, `Drained`,
//!    after which the connection is removed and its stats kept).
//! 4. **Transmit**: a transmit held back by WouldBlock goes first; then each
//!    connection's `poll_transmit` with the backend's GSO segment count, until
//!    every connection is drained of packets or the socket blocks, in which
//!    case the transmit is kept for the next wake-up (socket writable).
//! 5. Repeat while anything made progress (bounded, then yield), then arm
//!    one tokio timer for the earliest deadline.
//!
//! Time comes from `io::now()` (tokio's clock), so the same loop runs on
//! virtual time under a paused runtime.

use std::collections::VecDeque;
use std::future::Future;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::BytesMut;
use quinn_proto::{ConnectionHandle, DatagramEvent, EcnCodepoint};
use tracing::trace;

use super::conn;
use super::state::{Conn, Shared, State};
use crate::identity::Role;
use crate::io::{self, Ecn, RecvMeta, Socket, Transmit};

/// Receive batches per iteration before other work gets a turn. Small, so
/// ACKs and window updates go out between batches: with long receive bursts
/// the sender stalls on its congestion window (measured: 2 beats 1 and 8).
const RECV_ROUNDS: usize = 2;
/// Bytes per receive entry: a GRO batch is at most 64 KiB.
const RECV_CHUNK: usize = 64 * 1024;
/// Transmits one connection may emit before the next connection's turn.
const TX_PER_CONN: usize = 32;
/// Iterations of the whole loop before yielding to the runtime.
const MAX_ITERATIONS: usize = 16;
/// Datagrams per GSO transmit at most: the kernel caps one UDP send at
/// 64 KiB, and 44 full-size (1472-byte) datagrams fit under it. Larger
/// batches fail with EMSGSIZE and lose every packet in them.
const MAX_GSO_SEGMENTS: usize = 44;
/// Stateless responses queued at most (more are dropped and counted).
const MAX_RESPONSES: usize = 64;

struct Held {
    destination: SocketAddr,
    ecn: Option<Ecn>,
    size: usize,
    segment_size: Option<usize>,
    src_ip: Option<std::net::IpAddr>,
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    socket: Box<dyn Socket>,
    recv_buf: Vec<u8>,
    meta: Vec<RecvMeta>,
    send_buf: Vec<u8>,
    held: Option<Held>,
    responses: VecDeque<(Held, Vec<u8>)>,
    resp_buf: Vec<u8>,
    keys: Vec<ConnectionHandle>,
    sleep: Pin<Box<tokio::time::Sleep>>,
    sleep_at: Option<Instant>,
    max_gso: usize,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

fn ecn_to_proto(e: Option<Ecn>) -> Option<EcnCodepoint> {
    e.map(|e| match e {
        Ecn::Ect0 => EcnCodepoint::Ect0,
        Ecn::Ect1 => EcnCodepoint::Ect1,
        Ecn::Ce => EcnCodepoint::Ce,
    })
}

fn ecn_from_proto(e: Option<EcnCodepoint>) -> Option<Ecn> {
    e.map(|e| match e {
        EcnCodepoint::Ect0 => Ecn::Ect0,
        EcnCodepoint::Ect1 => Ecn::Ect1,
        EcnCodepoint::Ce => Ecn::Ce,
    })
}

impl Driver {
    pub(crate) fn new(shared: Arc<Shared>, socket: Box<dyn Socket>, gso: bool) -> Self {
        let max_gso = if gso {
            socket.max_gso_segments().clamp(1, MAX_GSO_SEGMENTS)
        } else {
            1
        };
        Self {
            shared,
            socket,
            recv_buf: vec![0; RECV_CHUNK * io::BATCH],
            meta: vec![RecvMeta::empty(); io::BATCH],
            send_buf: Vec::with_capacity(64 * 1024),
            held: None,
            responses: VecDeque::new(),
            resp_buf: Vec::new(),
            keys: Vec::new(),
            sleep: Box::pin(tokio::time::sleep(std::time::Duration::from_secs(3600))),
            sleep_at: None,
            max_gso,
        }
    }

    fn recv(&mut self, cx: &mut Context<'_>, st: &mut State, now: Instant) -> bool {
        let mut progress = false;
        for _ in 0..RECV_ROUNDS {
            let mut iovs: Vec<IoSliceMut<'_>> = self
                .recv_buf
                .chunks_mut(RECV_CHUNK)
                .map(IoSliceMut::new)
                .collect();
            let n = match self.socket.poll_recv(cx, &mut iovs, &mut self.meta) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => {
                    st.counters.recv_errors += 1;
                    trace!(error = %e, "recv error");
                    continue;
                }
                Poll::Ready(Ok(n)) => n,
            };
            drop(iovs);
            progress = true;
            for i in 0..n {
                let m = self.meta[i];
                let start = i * RECV_CHUNK;
                let len = m.len.min(RECV_CHUNK);
                let stride = if m.stride == 0 { len } else { m.stride };
                // One copy per received entry; datagrams are zero-copy
                // slices of it from here on.
                let mut data = BytesMut::from(&self.recv_buf[start..start + len]);
                let segments = len.div_ceil(stride.max(1));
                if segments > 1 {
                    st.counters.gro_batches += 1;
                    st.counters.gro_segments += segments as u64;
                }
                while !data.is_empty() {
                    let d = data.split_to(stride.min(data.len()));
                    st.counters.datagrams_in += 1;
                    st.counters.bytes_in += d.len() as u64;
                    self.handle_datagram(st, now, m, d);
                }
            }
        }
        progress
    }

    fn handle_datagram(&mut self, st: &mut State, now: Instant, m: RecvMeta, d: BytesMut) {
        self.resp_buf.clear();
        let ev = st.endpoint.handle(
            now,
            m.addr,
            m.dst_ip,
            ecn_to_proto(m.ecn),
            d,
            &mut self.resp_buf,
        );
        match ev {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = st.conns.get_mut(&ch) {
                    c.inner.handle_event(ev);
                    c.dirty = true;
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.accept(st, now, incoming),
            Some(DatagramEvent::Response(t)) => self.queue_response(st, &t),
            None => {}
        }
    }

    fn accept(&mut self, st: &mut State, now: Instant, incoming: quinn_proto::Incoming) {
        if !st.open_for_work() || st.conns.len() >= st.config.max_connections {
            st.counters.incoming_refused += 1;
            self.resp_buf.clear();
            let t = st.endpoint.refuse(incoming, &mut self.resp_buf);
            self.queue_response(st, &t);
            return;
        }
        self.resp_buf.clear();
        match st.endpoint.accept(incoming, now, &mut self.resp_buf, None) {
            Ok((ch, inner)) => {
                st.counters.incoming_accepted += 1;
                let uid = st.next_uid;
                st.next_uid += 1;
                let rec = conn::new_shared(ch, uid, inner.remote_address());
                st.conns
                    .insert(ch, Conn::new(inner, uid, Role::Server, None, rec));
            }
            Err(e) => {
                st.counters.incoming_failed += 1;
                trace!(cause = %e.cause, "incoming connection failed");
                if let Some(t) = e.response {
                    self.queue_response(st, &t);
                }
            }
        }
    }

    fn queue_response(&mut self, st: &mut State, t: &quinn_proto::Transmit) {
        if self.responses.len() >= MAX_RESPONSES {
            st.counters.responses_dropped += 1;
            return;
        }
        let held = Held {
            destination: t.destination,
            ecn: ecn_from_proto(t.ecn),
            size: t.size,
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        };
        self.responses.push_back((
            held,
            self.resp_buf[..t.size.min(self.resp_buf.len())].to_vec(),
        ));
    }

    fn count_sent(st: &mut State, h: &Held) {
        let segs = match h.segment_size {
            Some(s) if s > 0 => h.size.div_ceil(s),
            _ => 1,
        };
        st.counters.datagrams_out += segs as u64;
        st.counters.bytes_out += h.size as u64;
        if segs > 1 {
            st.counters.gso_batches += 1;
            st.counters.gso_segments += segs as u64;
        }
    }

    /// Sends `h` from `buf`; `false` if the socket would block.
    fn send_one(
        socket: &mut dyn Socket,
        cx: &mut Context<'_>,
        st: &mut State,
        h: &Held,
        buf: &[u8],
    ) -> bool {
        let t = Transmit {
            destination: h.destination,
            ecn: h.ecn,
            contents: &buf[..h.size],
            segment_size: h.segment_size,
            src_ip: h.src_ip,
        };
        match socket.poll_send(cx, &t) {
            Poll::Pending => false,
            Poll::Ready(Ok(())) => {
                Self::count_sent(st, h);
                true
            }
            Poll::Ready(Err(e)) => {
                st.counters.send_errors += 1;
                trace!(error = %e, "send error");
                true
            }
        }
    }

    /// Returns `(progress, blocked)`.
    fn transmit(&mut self, cx: &mut Context<'_>, st: &mut State, now: Instant) -> (bool, bool) {
        let mut progress = false;
        if let Some(h) = self.held.take() {
            if !Self::send_one(&mut *self.socket, cx, st, &h, &self.send_buf) {
                self.held = Some(h);
                return (false, true);
            }
            progress = true;
        }
        while let Some((h, buf)) = self.responses.pop_front() {
            if !Self::send_one(&mut *self.socket, cx, st, &h, &buf) {
                self.responses.push_front((h, buf));
                return (progress, true);
            }
        }
        loop {
            let mut any = false;
            for &ch in &self.keys {
                for _ in 0..TX_PER_CONN {
                    let Some(c) = st.conns.get_mut(&ch) else {
                        break;
                    };
                    self.send_buf.clear();
                    let Some(t) = c.inner.poll_transmit(now, self.max_gso, &mut self.send_buf)
                    else {
                        // Drained: until input marks it dirty again nothing
                        // can change its timer, so cache that here.
                        c.dirty = false;
                        c.timer = c.inner.poll_timeout();
                        break;
                    };
                    any = true;
                    let h = Held {
                        destination: t.destination,
                        ecn: ecn_from_proto(t.ecn),
                        size: t.size,
                        segment_size: t.segment_size,
                        src_ip: t.src_ip,
                    };
                    if !Self::send_one(&mut *self.socket, cx, st, &h, &self.send_buf) {
                        st.counters.send_would_block += 1;
                        self.held = Some(h);
                        return (true, true);
                    }
                }
            }
            progress |= any;
            if !any {
                return (progress, false);
            }
        }
    }

    /// Connections with something to do (received packets, fired timers,
    /// application calls); idle connections cost nothing per wake-up.
    fn collect_dirty(&mut self, st: &State) {
        self.keys.clear();
        self.keys
            .extend(st.conns.iter().filter(|(_, c)| c.dirty).map(|(ch, _)| *ch));
    }

    fn drive(&mut self, cx: &mut Context<'_>, st: &mut State) -> bool {
        let mut now = io::now();
        for _ in 0..MAX_ITERATIONS {
            let mut progress = self.recv(cx, st, now);
            now = io::now();
            let mut deadlines = false;
            for c in st.conns.values_mut() {
                if c.timer.is_some_and(|t| t <= now) {
                    c.timer = None;
                    c.inner.handle_timeout(now);
                    c.dirty = true;
                    progress = true;
                }
                deadlines |=
                    matches!(c.phase, super::state::Phase::Proving { deadline } if deadline <= now);
            }
            if deadlines {
                self.keys.clear();
                self.keys.extend(st.conns.keys().copied());
                for i in 0..self.keys.len() {
                    conn::check_deadline(st, self.keys[i], now);
                }
            }
            if !st.unblocked.is_empty() {
                super::router::resume_unblocked(st);
                progress = true;
            }
            self.collect_dirty(st);
            for i in 0..self.keys.len() {
                let ch = self.keys[i];
                conn::process_events(st, ch, now);
                self.endpoint_events(st, ch);
            }
            conn::flush_dirty(st);
            self.collect_dirty(st);
            let (sent, _blocked) = self.transmit(cx, st, now);
            progress |= sent;
            // Transmitting can queue events (e.g. a close); drain them now.
            for i in 0..self.keys.len() {
                let ch = self.keys[i];
                conn::process_events(st, ch, now);
                self.endpoint_events(st, ch);
            }
            if !progress && st.unblocked.is_empty() {
                return false;
            }
        }
        true
    }

    fn endpoint_events(&mut self, st: &mut State, ch: ConnectionHandle) {
        loop {
            let State {
                conns, endpoint, ..
            } = &mut *st;
            let Some(c) = conns.get_mut(&ch) else { return };
            let Some(ev) = c.inner.poll_endpoint_events() else {
                return;
            };
            let drained = ev.is_drained();
            if let Some(cev) = endpoint.handle_event(ch, ev) {
                c.inner.handle_event(cev);
            }
            if drained {
                conn::finalize(st, ch);
                return;
            }
        }
    }

    fn next_deadline(st: &mut State) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for c in st.conns.values_mut() {
            if c.dirty {
                c.timer = c.inner.poll_timeout();
            }
            let proof = match c.phase {
                super::state::Phase::Proving { deadline } => Some(deadline),
                _ => None,
            };
            for t in [c.timer, proof].into_iter().flatten() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let shared = this.shared.clone();
        let mut st = shared.lock();
        if !st
            .driver_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            st.driver_waker = Some(cx.waker().clone());
        }
        let more = this.drive(cx, &mut st);
        if st.shutdown && st.conns.is_empty() {
            st.driver_done = true;
            st.wake_all_receivers();
            return Poll::Ready(());
        }
        let next = Self::next_deadline(&mut st);
        st.driver_waker = Some(cx.waker().clone());
        drop(st);
        if more {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if let Some(t) = next {
            if this.sleep_at != Some(t) {
                this.sleep_at = Some(t);
                this.sleep.as_mut().reset(tokio::time::Instant::from_std(t));
            }
            if this.sleep.as_mut().poll(cx).is_ready() {
                this.sleep_at = None;
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}
