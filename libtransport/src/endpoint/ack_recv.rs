//! Receive-ACK, receiving side of the driver glue: incoming bidirectional
//! streams of kind `ACK` are read with the checked wire parser and handed to
//! the sans-IO [`Receiver`], which decides; this file only executes its
//! decisions.
//!
//! * The router queues `ACK` streams like any bidirectional kind (the
//!   endpoint registers `Kind::ACK` for itself). One task per endpoint
//!   ([`run`]) takes them, starts a bounded reader per stream, and runs the
//!   receiver's timers (manual-admission deadlines, response-write
//!   deadlines, dedupe expiry).
//! * A reader reads the request within [`REQUEST_READ_TIMEOUT`], then,
//!   under the state lock, admits the payload into the target kind's
//!   bounded queue — never waiting for the consumer: a full queue is
//!   `Backpressured` at once, an unregistered kind `ConsumerGone` — or, for
//!   a kind registered with [`Endpoint::register_manual`], hands the
//!   application a [`Responder`].
//! * Responses (23 bytes and FIN) are written straight into quinn-proto's
//!   stream buffer under the same lock, so a response write never waits; if
//!   the buffer cannot take it at once (connection flow control exhausted)
//!   the stream is reset with `RESPONSE_TIMEOUT_CODE` and counted as a
//!   failed response.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, StreamId, VarInt};
use tokio::sync::Notify;

use super::state::{HashMap, KindQueue, Phase, Shared, State};
use super::stream::RecvStream;
use super::{Endpoint, Error, IncomingBi, MessageReceived};
use crate::identity::PeerId;
use crate::kind::{Kind, KindConfig, Overflow};
use crate::proto::ack::{
    AckConfig, AckWireError, Admission, Admit, BUSY_CODE, Output, REQUEST_HEADER_LEN,
    RESPONSE_TIMEOUT_CODE, Receiver, RequestHeader, ResolveError, SenderStats, Ticket,
};

/// How long a peer may take to deliver one whole request on its stream.
/// Generous (the sender's budget ends long before on any sane path); it
/// bounds how long a silent stream holds a reader.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests being read at once; further `ACK` streams are reset with
/// `BUSY_CODE` (counted in `ack_read_refused`), which the sender reports as
/// `Backpressured`.
const MAX_READING: usize = 1024;

/// Incoming `ACK` streams the router queues for the receiver task.
const ACK_STREAM_QUEUE: usize = 1024;

/// The driver's handle for a request stream.
pub(crate) type StreamKey = (ConnectionHandle, u64, StreamId);

/// Receive-ACK state kept in the endpoint [`State`].
pub(crate) struct AckState {
    pub(crate) cfg: AckConfig,
    pub(crate) rx: Receiver<StreamKey>,
    pub(crate) tx: SenderStats,
    /// Kinds the application admits by hand.
    pub(crate) manual: HashMap<Kind, ManualQueue>,
    /// Per-connection RTT estimate and stuck detector, by generation.
    pub(crate) links: HashMap<u64, super::ack::LinkState>,
    pub(crate) reading: usize,
    /// Requests refused because `MAX_READING` were being read.
    pub(crate) read_refused: u64,
    /// Requests whose bytes did not arrive within `REQUEST_READ_TIMEOUT`.
    pub(crate) read_timed_out: u64,
    /// Wakes the receiver task when a new deadline may be earlier.
    pub(crate) timer: Arc<Notify>,
    /// Bidirectional `ACK` streams the router queued for the receiver task
    /// (apart from the kinds the application registers, so an application
    /// may still use `Kind::ACK` for its own unidirectional messages).
    pub(crate) incoming: KindQueue,
}

impl AckState {
    pub(crate) fn new(cfg: AckConfig) -> Self {
        Self {
            cfg,
            rx: Receiver::new(cfg.receiver),
            tx: SenderStats::default(),
            manual: HashMap::default(),
            links: HashMap::default(),
            reading: 0,
            read_refused: 0,
            read_timed_out: 0,
            timer: Arc::new(Notify::new()),
            incoming: KindQueue::new(KindConfig {
                capacity: ACK_STREAM_QUEUE,
                overflow: Overflow::BackPressure,
                max_message: 0,
            }),
        }
    }
}

#[derive(Debug)]
pub(crate) struct ManualQueue {
    capacity: usize,
    max_message: u32,
    items: std::collections::VecDeque<ManualRequest>,
    waker: Option<Waker>,
}

/// A receive-ACKed message of a manually admitted kind, with the responder
/// that decides its answer.
#[derive(Debug)]
pub struct ManualRequest {
    /// Sender.
    pub peer: PeerId,
    /// Kind.
    pub kind: Kind,
    /// The sender's request id (its retries of this message carry the
    /// same one), so a consumer that keeps the payload can key it.
    pub id: crate::proto::ack::RequestId,
    /// Payload.
    pub data: Bytes,
    /// Decides the sender's answer; see [`Responder`].
    pub responder: Responder,
}

/// The answer to one manually admitted request. Resolve it before
/// [`Responder::deadline`] (default 100 ms after arrival,
/// `ReceiverConfig::admission_timeout`): after that `Backpressured` was sent
/// for it and [`Responder::accept`] returns [`ResolveError::Expired`], so the
/// application knows not to commit the payload. The rule: reserve the slot,
/// `accept` (which decides), then commit. Dropping it unresolved answers
/// `Backpressured`.
#[derive(Debug)]
pub struct Responder {
    shared: Arc<Shared>,
    ticket: Ticket,
    deadline: Instant,
    done: bool,
}

impl Responder {
    /// The latest time the request may be resolved.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Answers `Accepted`: the payload is admitted. `Err(Expired)`: too late,
    /// `Backpressured` was sent; do not commit the payload.
    pub fn accept(mut self) -> Result<(), ResolveError> {
        self.resolve(Admission::Admitted).map(|_| ())
    }

    /// Answers `Backpressured` with an optional retry hint.
    pub fn backpressure(mut self, retry_after: Option<Duration>) -> Result<(), ResolveError> {
        self.resolve(Admission::Full { retry_after }).map(|_| ())
    }

    /// Answers `ConsumerGone`: nobody consumes the kind right now (e.g. a
    /// relay whose downstream consumer is not attached). Nothing was
    /// admitted.
    pub fn consumer_gone(mut self) -> Result<(), ResolveError> {
        self.resolve(Admission::Gone).map(|_| ())
    }

    fn resolve(&mut self, a: Admission) -> Result<crate::proto::ack::Outcome, ResolveError> {
        self.done = true;
        let now = crate::io::now();
        let mut st = self.shared.lock();
        // A responder resolves at most once (its methods consume it), so
        // a ticket that is no longer pending was expired by the receiver's
        // timer: `Backpressured` went out for it.
        let r = match st.ack.rx.resolve(self.ticket, a, now) {
            Err(ResolveError::NotPending) => Err(ResolveError::Expired),
            r => r,
        };
        flush(&mut st, now);
        r
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.resolve(Admission::Full { retry_after: None });
        }
    }
}

/// The receiving side of a manually admitted kind (see
/// [`Endpoint::register_manual`]). Dropping it unregisters the kind's manual
/// admission; requests then get `ConsumerGone` (or go to the kind's
/// ordinary queue if one is registered).
#[derive(Debug)]
pub struct ManualReceiver {
    shared: Arc<Shared>,
    kind: Kind,
}

impl ManualReceiver {
    /// The next request; `None` once the endpoint is closed.
    pub async fn recv(&mut self) -> Option<ManualRequest> {
        poll_fn(|cx| {
            let mut st = self.shared.lock();
            if let Some(m) = st.ack.manual.get_mut(&self.kind) {
                if let Some(r) = m.items.pop_front() {
                    return Poll::Ready(Some(r));
                }
                m.waker = Some(cx.waker().clone());
            }
            if st.driver_done {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

impl Drop for ManualReceiver {
    fn drop(&mut self) {
        let q = self.shared.lock().ack.manual.remove(&self.kind);
        // Responders resolve (Backpressured) as they drop, outside the lock.
        drop(q);
    }
}

impl Endpoint {
    /// Registers `kind` for *manual* receive-ACK admission: each
    /// receive-ACKed message of the kind is handed to the application as a
    /// [`ManualRequest`] whose [`Responder`] decides the answer. At most
    /// `capacity` requests wait unclaimed (beyond that: `Backpressured`);
    /// payloads over `max_message` bytes are refused as malformed. Plain
    /// messages of the kind still need [`Endpoint::register`].
    pub fn register_manual(
        &self,
        kind: Kind,
        capacity: usize,
        max_message: u32,
    ) -> Result<ManualReceiver, Error> {
        let mut st = self.shared.lock();
        if st.ack.manual.contains_key(&kind) {
            return Err(Error::KindRegistered(kind));
        }
        st.ack.manual.insert(
            kind,
            ManualQueue {
                capacity: capacity.max(1),
                max_message,
                items: Default::default(),
                waker: None,
            },
        );
        Ok(ManualReceiver {
            shared: self.shared.clone(),
            kind,
        })
    }

    /// Replaces the receive-ACK settings. Call it before any receive-ACK
    /// traffic: it starts a fresh receiver (empty dedupe cache).
    pub fn set_ack_config(&self, cfg: AckConfig) {
        let mut st = self.shared.lock();
        st.ack.cfg = cfg;
        st.ack.rx = Receiver::new(cfg.receiver);
        st.ack.timer.notify_one();
    }
}

/// Executes the receiver's queued outputs. Call under the lock after every
/// receiver call.
pub(crate) fn flush(st: &mut State, now: Instant) {
    let mut any = false;
    while let Some(o) = st.ack.rx.poll_output() {
        any = true;
        match o {
            Output::Respond { stream, response } => {
                let ok = write_response(st, stream, &response.to_bytes());
                st.ack.rx.handle_write_done(stream, ok, now);
            }
            Output::Reset { stream, code } => reset(st, stream, code),
        }
    }
    if any {
        st.wake_driver();
    }
}

fn write_response(st: &mut State, (ch, uid, id): StreamKey, bytes: &[u8]) -> bool {
    let Some(c) = st
        .conns
        .get_mut(&ch)
        .filter(|c| c.uid == uid && c.phase != Phase::Closing)
    else {
        return false;
    };
    c.dirty = true;
    let mut s = c.inner.send_stream(id);
    match s.write(bytes) {
        Ok(n) if n == bytes.len() => {}
        _ => {
            // A partial answer would read as malformed; reset instead.
            let _ = s.reset(VarInt::from_u32(RESPONSE_TIMEOUT_CODE));
            return false;
        }
    }
    if s.finish().is_err() {
        return false;
    }
    // A graceful close waits for the peer to acknowledge the answer.
    c.finishing.insert(id, None);
    true
}

fn reset(st: &mut State, (ch, uid, id): StreamKey, code: u32) {
    if let Some(c) = st.conns.get_mut(&ch).filter(|c| c.uid == uid) {
        c.dirty = true;
        let _ = c.inner.send_stream(id).reset(VarInt::from_u32(code));
        let _ = c.inner.recv_stream(id).stop(VarInt::from_u32(code));
    }
}

/// The receiver task: takes `ACK` streams from the router's queue, starts a
/// reader for each, and runs the receiver's timers. Ends when the driver
/// stops.
pub(crate) async fn run(shared: Arc<Shared>) {
    let timer = shared.lock().ack.timer.clone();
    loop {
        let next = {
            let now = crate::io::now();
            let mut st = shared.lock();
            if st.driver_done {
                return;
            }
            while let Some(bi) = st.ack.incoming.bis.pop_front() {
                let key = (bi.ch, bi.uid, bi.id);
                if st.ack.reading >= MAX_READING {
                    st.ack.read_refused += 1;
                    reset(&mut st, key, BUSY_CODE);
                    continue;
                }
                st.ack.reading += 1;
                let span = tracing::debug_span!("ack_request", peer = %bi.peer.short(),
                    conn = bi.uid, stream = %bi.id);
                tokio::spawn(tracing::Instrument::instrument(
                    serve(shared.clone(), bi),
                    span,
                ));
            }
            st.ack.rx.handle_timeout(now);
            flush(&mut st, now);
            st.ack.rx.poll_timeout()
        };
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let incoming = poll_fn(|cx| {
            let mut st = shared.lock();
            if st.driver_done {
                return Poll::Ready(());
            }
            if st.ack.incoming.bis.is_empty() {
                st.ack.incoming.bi_waker = Some(cx.waker().clone());
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        tokio::select! {
            () = sleep => {}
            () = incoming => {}
            () = super::api::driver_stopped(&shared) => {}
            () = timer.notified() => {}
        }
    }
}

enum ReadFail {
    Wire(AckWireError),
    /// The stream or connection went away; nobody to answer.
    Gone,
}

/// Reads one request: the fixed header, the payload the header announces
/// (checked against the target kind's limit before any of it is read), then
/// the FIN.
async fn read_request(
    shared: &Shared,
    recv: &mut RecvStream,
) -> Result<(RequestHeader, Bytes), ReadFail> {
    let mut head = Vec::with_capacity(REQUEST_HEADER_LEN);
    while head.len() < REQUEST_HEADER_LEN {
        match recv.read_chunk(REQUEST_HEADER_LEN - head.len()).await {
            Ok(Some(b)) => head.extend_from_slice(&b),
            Ok(None) => {
                return Err(ReadFail::Wire(AckWireError::Truncated {
                    need: REQUEST_HEADER_LEN,
                    got: head.len(),
                }));
            }
            Err(_) => return Err(ReadFail::Gone),
        }
    }
    let header = RequestHeader::parse(&head, u32::MAX).map_err(ReadFail::Wire)?;
    let Some(max) = max_payload(&shared.lock(), header.kind) else {
        // Nobody consumes the kind: answered `ConsumerGone` without reading
        // the payload (the reader's drop stops the rest).
        return Ok((header, Bytes::new()));
    };
    if header.len > max {
        return Err(ReadFail::Wire(AckWireError::Oversize {
            len: header.len,
            max,
        }));
    }
    let len = header.len as usize;
    // Grown as bytes arrive (never sized by the declared length alone).
    let mut payload = BytesMut::new();
    loop {
        match recv.read_chunk(len + 1 - payload.len().min(len)).await {
            Ok(Some(b)) => {
                if payload.len() + b.len() > len {
                    return Err(ReadFail::Wire(AckWireError::Trailing(
                        payload.len() + b.len() - len,
                    )));
                }
                payload.extend_from_slice(&b);
            }
            Ok(None) => break,
            Err(_) => return Err(ReadFail::Gone),
        }
    }
    let payload = payload.freeze();
    crate::proto::ack::Request::with_payload(header, &payload).map_err(ReadFail::Wire)?;
    Ok((header, payload))
}

/// The largest payload accepted for `kind`: its manual or ordinary queue's
/// limit; `None` for kinds nobody consumes.
fn max_payload(st: &State, kind: Kind) -> Option<u32> {
    if let Some(m) = st.ack.manual.get(&kind) {
        return Some(m.max_message);
    }
    st.kinds.get(&kind).map(|q| q.cfg.max_message)
}

async fn serve(shared: Arc<Shared>, bi: IncomingBi) {
    let key = (bi.ch, bi.uid, bi.id);
    let mut recv = RecvStream::new(shared.clone(), bi.ch, bi.uid, bi.id);
    let read = tokio::time::timeout(REQUEST_READ_TIMEOUT, read_request(&shared, &mut recv)).await;
    let failed_code = match &read {
        Ok(Err(ReadFail::Wire(e))) => Some(e.code()),
        Err(_) => Some(RESPONSE_TIMEOUT_CODE),
        _ => None,
    };
    if let Some(code) = failed_code {
        recv.stop(code);
    }
    drop(recv);
    let now = crate::io::now();
    let mut st = shared.lock();
    st.ack.reading = st.ack.reading.saturating_sub(1);
    match read {
        Ok(Ok((header, payload))) => admit(&shared, &mut st, bi.peer, key, &header, payload, now),
        Ok(Err(ReadFail::Wire(e))) => {
            tracing::debug!(error = %e, "receive-ACK request refused");
            st.ack.rx.handle_malformed(bi.peer, e);
            reset(&mut st, key, e.code());
        }
        Ok(Err(ReadFail::Gone)) => {}
        Err(_) => {
            tracing::debug!("receive-ACK request not read in time");
            st.ack.read_timed_out += 1;
            reset(&mut st, key, RESPONSE_TIMEOUT_CODE);
        }
    }
    flush(&mut st, now);
}

fn admit(
    shared: &Arc<Shared>,
    st: &mut State,
    peer: PeerId,
    key: StreamKey,
    header: &RequestHeader,
    data: Bytes,
    now: Instant,
) {
    let Admit::Admit { ticket, kind } = st.ack.rx.handle_request(peer, key, header, now) else {
        return;
    };
    let admission = if let Some(m) = st.ack.manual.get_mut(&kind) {
        if m.items.len() >= m.capacity {
            Admission::Full { retry_after: None }
        } else {
            let deadline = st
                .ack
                .rx
                .deadline(ticket)
                .unwrap_or(now + st.ack.cfg.receiver.admission_timeout);
            m.items.push_back(ManualRequest {
                peer,
                kind,
                id: header.id,
                data,
                responder: Responder {
                    shared: shared.clone(),
                    ticket,
                    deadline,
                    done: false,
                },
            });
            if let Some(w) = m.waker.take() {
                w.wake();
            }
            // The new admission deadline may be the earliest.
            st.ack.timer.notify_one();
            return;
        }
    } else {
        match st.kinds.get_mut(&kind) {
            Some(q) => {
                if q.full() {
                    Admission::Full { retry_after: None }
                } else {
                    q.delivered += 1;
                    q.msgs.push_back(MessageReceived { peer, kind, data });
                    q.note_push();
                    Admission::Admitted
                }
            }
            _ => Admission::Gone,
        }
    };
    // invariant: the ticket was issued just now and nothing resolved it.
    let _ = st.ack.rx.resolve(ticket, admission, now);
}
