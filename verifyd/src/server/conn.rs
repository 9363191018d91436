//! Verify connections on the serving core: hello, then read requests,
//! resolve keys, offer batches to the scheduler, answer `Busy` or typed
//! errors — on frames (a task on the I/O runtime) or on the ring pair (a
//! blocking consumer thread per session). [`handle_frame`] and everything
//! behind it is shared by both.
//!
//! A bad request is answered with an error frame naming it and the
//! connection continues; only a broken hello, an oversize frame (the stream
//! cannot be resynchronised), a deadline or a stalled reader end the
//! connection.
//!
//! Keys a client sends inline or registers are decoded outside the key
//! cache's lock and charged to that client (its peer pid), so one client
//! sending thousands of distinct keys neither holds the lock while decoding
//! nor evicts other clients' keys beyond its quota (see [`crate::keys`]).

use std::ops::Range;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use server_core::{
    Accepted, Busy, FrameReader, FrameSender, Listener, ReadError, Reservation, Slot,
};
use tracing::Instrument as _;
use wire::generated::error::ErrorCode;
use wire::generated::hello::Role;
use wire::hello::Session;

use super::{Shared, lock, now};
use crate::Verdict;
use crate::backend::{DecodedKey, verify_item};
use crate::keys::Owner;
use crate::proto::{self, KeyRef, Request};
use crate::sched::{Admission, ClientId};
use crate::session::HelloParams;
use crate::transport::{self, Rx, Transport, Tx};

/// Descriptors a ring session adds to its connection: two socket handles
/// for the rings' parkers, one for hanging up, the two memfds while they
/// are mapped, the eventfds and the peer's pidfd.
const RING_FDS: usize = 8;

/// Batches this small run on the connection thread that admitted them (see
/// `Shared::dispatch_keep`): one item in flight then costs no thread hand-off.
const INLINE_MAX: usize = 4;

/// The write half of a connection (frames or the response ring), shared by
/// the workers that answer on it.
#[derive(Debug)]
pub(crate) enum Writer {
    /// Frames on the socket: never blocks, queues what the socket does not
    /// take (bounded), drained by the runtime.
    Frames(Arc<FrameSender>),
    /// The response ring; a full ring blocks one send for at most the write
    /// timeout.
    Ring(Mutex<Tx>),
}

impl Writer {
    fn send(&self, shared: &Shared, frame: &[u8]) {
        match self {
            Writer::Frames(tx) => {
                if let Err(e) = tx.send(frame) {
                    count(&shared.metrics.write_failures);
                    tracing::debug!(error = %e, transport = "frames",
                        "response write failed; closing connection");
                    tx.close();
                }
            }
            Writer::Ring(tx) => {
                let mut w = lock(tx);
                if let Err(e) = w.send(frame) {
                    count(&shared.metrics.write_failures);
                    tracing::debug!(error = %e, transport = "ring",
                        "response write failed; closing connection");
                    // Hanging up also ends a ring session: the reader's park sees it.
                    w.hang_up();
                }
            }
        }
    }
}

/// What the request path needs to know about the connection a frame came on.
pub(crate) struct ConnCtx<'a> {
    client: ClientId,
    /// Who the keys it sends are charged to.
    owner: Owner,
    writer: Arc<Writer>,
    slot: &'a Slot,
}

#[derive(Debug)]
struct Work {
    key: WorkKey,
    msg: Range<usize>,
    sig: Range<usize>,
}

/// What a worker verifies an item with.
#[derive(Debug)]
enum WorkKey {
    /// A key the cache held when the request was admitted.
    Ready(DecodedKey),
    /// An inline key the cache did not hold: the worker decodes it (and
    /// caches it for the request's owner). Decoding costs about as much as
    /// a verification, so it is work like any other, done on the pool under
    /// the scheduler's fair share; on the I/O threads a flood of fresh
    /// inline keys would hold up every other client's reads.
    Decode(Range<usize>),
    /// The verdict is known without a key.
    Known(Verdict),
}

/// One admitted `VerifyBatch`: the frame, resolved keys and verdict slots.
#[derive(Debug)]
pub struct Job {
    request_id: u64,
    /// Who keys decoded for this request are charged to.
    owner: Owner,
    frame: Vec<u8>,
    ctx: Range<usize>,
    items: Vec<Work>,
    verdicts: Vec<AtomicU8>,
    remaining: AtomicUsize,
    received: Instant,
    writer: Arc<Writer>,
    /// The frame's share of the read budget (frames path).
    _reservation: Option<Reservation>,
    /// Holds the connection busy: one with requests outstanding is never
    /// the idle one that gives way to a newcomer.
    _busy: Busy,
}

/// Bumps one metrics counter.
fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn verdict_code(v: Verdict) -> u8 {
    v as u8
}

fn verdict_from_code(c: u8) -> Verdict {
    match c {
        0 => Verdict::Valid,
        1 => Verdict::Invalid,
        3 => Verdict::UnknownKey,
        _ => Verdict::Malformed,
    }
}

impl Job {
    pub(crate) fn verify_range(&self, shared: &Shared, start: usize, len: usize) {
        let ctx = &self.frame[self.ctx.clone()];
        // Consecutive items usually share an inline key: decode it once.
        let mut last: Option<(&[u8], Option<DecodedKey>)> = None;
        for i in start..start + len {
            let w = &self.items[i];
            let key = match &w.key {
                WorkKey::Ready(k) => Ok(k.clone()),
                WorkKey::Known(v) => Err(*v),
                WorkKey::Decode(r) => {
                    let bytes = &self.frame[r.clone()];
                    let k = match &last {
                        Some((b, k)) if *b == bytes => k.clone(),
                        _ => {
                            let k = shared.backend.decode_key(bytes).ok();
                            if let Some(k) = &k {
                                // Another request may have inserted the same
                                // bytes meanwhile; insert_for keeps that one.
                                shared.keys().insert_for(bytes, k.clone(), self.owner);
                            }
                            last = Some((bytes, k.clone()));
                            k
                        }
                    };
                    k.ok_or(Verdict::Malformed)
                }
            };
            let v = match key {
                Ok(k) => verify_item(
                    k.as_ref(),
                    &self.frame[w.msg.clone()],
                    ctx,
                    &self.frame[w.sig.clone()],
                ),
                Err(v) => v,
            };
            self.verdicts[i].store(verdict_code(v), Ordering::Relaxed);
        }
    }

    /// Whether any of these items still needs its inline key decoded.
    pub(crate) fn needs_decode(&self, start: usize, len: usize) -> bool {
        self.items[start..start + len]
            .iter()
            .any(|w| matches!(w.key, WorkKey::Decode(_)))
    }

    /// Marks `n` items finished; true for the caller that finished the last.
    pub(crate) fn finish_items(&self, n: usize) -> bool {
        // AcqRel: the last finisher must see every other worker's verdict stores.
        self.remaining.fetch_sub(n, Ordering::AcqRel) == n
    }

    pub(crate) fn respond(&self, shared: &Shared, done: Instant) {
        let verdicts: Vec<Verdict> = self
            .verdicts
            .iter()
            .map(|v| verdict_from_code(v.load(Ordering::Relaxed)))
            .collect();
        let mut fbb = FlatBufferBuilder::new();
        let frame = proto::encode_verify_result(&mut fbb, self.request_id, &verdicts);
        self.writer.send(shared, &frame);
        shared
            .metrics
            .latency
            .record(done.saturating_duration_since(self.received));
        self.release(shared);
    }

    /// Returns the job's share of the budgets (answered, or its client left).
    pub(crate) fn release(&self, shared: &Shared) {
        shared
            .bytes_in_flight
            .fetch_sub(self.frame.len(), Ordering::Relaxed);
        shared.open_jobs.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts verify connections until the daemon drains or stops; each is a
/// task.
pub(crate) async fn serve_listener(shared: Arc<Shared>, listener: Listener) {
    let s = shared.clone();
    let stop = async move { s.until(|s| s.draining() || s.stopped()).await };
    listener
        .serve_until(stop, |conn| {
            count(&shared.metrics.connections);
            let client = shared.next_client.fetch_add(1, Ordering::Relaxed);
            let span = tracing::info_span!("conn", client);
            tokio::spawn(serve_conn(shared.clone(), client, conn).instrument(span));
        })
        .await;
}

fn hello_params(shared: &Shared, ring_capacity: u32) -> HelloParams {
    HelloParams {
        protocol: proto::PROTOCOL,
        role: Role::Verifyd,
        instance: shared.instance,
        max_frame: shared.cfg.max_frame,
        ring_capacity,
    }
}

/// Waits (until `deadline`) for the peer's whole hello to be in the socket,
/// without reading it. Every client sends its hello before reading ours, so
/// this costs nothing for an honest one, and the ring budget is reserved
/// only for a peer that has said what it wants: a connection idle since
/// accept never holds ring memory. False at the deadline or end of file.
async fn hello_arrived(stream: &tokio::net::UnixStream, deadline: tokio::time::Instant) -> bool {
    use std::os::fd::AsRawFd as _;
    // Allocated once something arrives: a connection that never sends
    // anything holds no buffer.
    let mut buf = Vec::new();
    let mut nap = Duration::from_millis(1);
    let wait = async {
        loop {
            if stream.readable().await.is_err() {
                return false;
            }
            if buf.is_empty() {
                buf.resize(
                    wire::frame::PREFIX_LEN + wire::frame::MIN_MAX_FRAME as usize,
                    0,
                );
            }
            let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
                nix::sys::socket::recv(
                    stream.as_raw_fd(),
                    &mut buf,
                    nix::sys::socket::MsgFlags::MSG_PEEK,
                )
                .map_err(std::io::Error::from)
            });
            match peeked {
                Ok(0) => return false,
                Ok(n) if n >= wire::frame::PREFIX_LEN => {
                    let mut p = [0u8; wire::frame::PREFIX_LEN];
                    p.copy_from_slice(&buf[..wire::frame::PREFIX_LEN]);
                    let len = u32::from_le_bytes(p) as usize;
                    // A bad length is the hello's to refuse; done waiting.
                    if n >= wire::frame::PREFIX_LEN + len || len > buf.len() {
                        return true;
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return false,
            }
            // Part of it is here; data already queued keeps the socket
            // readable, so pause (growing) rather than spin.
            tokio::time::sleep(nap).await;
            nap = (nap * 2).min(Duration::from_millis(100));
        }
    };
    tokio::time::timeout_at(deadline, wait)
        .await
        .unwrap_or(false)
}

/// Both rings' mappings from the ring budget, and their descriptors on the
/// slot, or `None` (counted): the hello then proposes no ring.
fn reserve_ring(shared: &Shared, slot: &Slot) -> Option<Reservation> {
    let max_frame = u32::try_from(shared.cfg.max_frame).unwrap_or(u32::MAX);
    let geo = wire::ring::Geometry::negotiated(shared.cfg.ring_capacity, max_frame).ok()?;
    let Some(res) = shared.rings.try_reserve(2 * geo.mapping_len()) else {
        count(&shared.metrics.ring_refused_budget);
        tracing::debug!("ring budget spent; proposing frames");
        return None;
    };
    if !slot.reserve_fds(RING_FDS) {
        count(&shared.metrics.ring_refused_budget);
        tracing::debug!("descriptor budget spent; proposing frames");
        return None;
    }
    Some(res)
}

async fn serve_conn(shared: Arc<Shared>, client: ClientId, conn: Accepted) {
    let Accepted {
        mut stream,
        slot,
        peer,
        at,
    } = conn;
    let owner = Owner::from(peer.pid.unsigned_abs());
    let limits = &shared.cfg.limits;
    let stats = slot.stats().clone();
    let mut ring = None;
    if shared.cfg.ring_capacity > 0 && hello_arrived(&stream, at + limits.hello_deadline).await {
        ring = reserve_ring(&shared, &slot);
    }
    let offer = if ring.is_some() {
        shared.cfg.ring_capacity
    } else {
        0
    };
    let config = hello_params(&shared, offer).config();
    let session = match server_core::framed::hello(&mut stream, &config, limits, at, &stats).await {
        Ok(s) => s,
        Err(e) => {
            count(&shared.metrics.connections_dropped);
            tracing::debug!(error = %e, "hello failed");
            return;
        }
    };
    tracing::debug!(
        peer_pid = peer.pid,
        ring = transport::ring_agreed(&session),
        "client connected"
    );
    if transport::ring_agreed(&session) {
        // Agreed only if we proposed one, i.e. reserved it.
        if let Some(mut res) = ring {
            if let Ok(geo) = transport::geometry(&session) {
                // The client may have proposed smaller rings.
                res.shrink_to(2 * geo.mapping_len());
            }
            start_ring(&shared, client, owner, stream, session, slot, res);
        }
        return;
    }
    drop(ring);
    count(&shared.metrics.frame_sessions);
    serve_frames(&shared, client, owner, stream, &session, &slot).await;
}

async fn serve_frames(
    shared: &Arc<Shared>,
    client: ClientId,
    owner: Owner,
    stream: tokio::net::UnixStream,
    session: &Session,
    slot: &Slot,
) {
    let limits = &shared.cfg.limits;
    let max_frame = session.max_frame as usize;
    let stats = slot.stats().clone();
    let stream = Arc::new(stream);
    let sender = FrameSender::new(
        stream.clone(),
        max_frame,
        shared.responses.clone(),
        limits,
        stats.clone(),
    );
    let mut reader = FrameReader::new(max_frame, shared.reads.clone(), limits, stats);
    let ctx = ConnCtx {
        client,
        owner,
        writer: Arc::new(Writer::Frames(sender.clone())),
        slot,
    };
    shared.sched().handle_connect(client);
    let mut fbb = FlatBufferBuilder::new();
    loop {
        let next = tokio::select! {
            r = reader.next(&stream, slot) => r,
            () = slot.evicted() => {
                tracing::debug!("evicted to make room");
                sender.close();
                break;
            }
        };
        match next {
            Ok(Some(frame)) => {
                handle_frame(shared, &ctx, &mut fbb, frame.bytes, Some(frame.reservation))
            }
            Ok(None) => break,
            Err(e) => {
                // An oversize or zero length prefix leaves the stream
                // unsynchronised: answer with a fatal typed error and close.
                let code = match &e {
                    ReadError::TooLarge { .. } => Some(ErrorCode::FrameTooLarge),
                    ReadError::ZeroLength => Some(ErrorCode::Malformed),
                    _ => None,
                };
                if let Some(code) = code {
                    ctx.writer.send(
                        shared,
                        &proto::encode_error(&mut fbb, 0, code, true, &e.to_string()),
                    );
                }
                if !matches!(e, ReadError::Io(_)) {
                    count(&shared.metrics.connections_dropped);
                }
                tracing::debug!(error = %e, "session ended");
                break;
            }
        }
        if sender.is_closed() {
            break;
        }
    }
    disconnect(shared, client);
    tracing::debug!("client disconnected");
}

/// Drops what a departed client had queued; what is running still answers
/// (into a closed connection) and releases its budgets.
fn disconnect(shared: &Shared, client: ClientId) {
    let dropped = shared.sched().handle_disconnect(client);
    for (job, n) in dropped {
        if job.finish_items(n) {
            job.release(shared);
        }
    }
}

/// Moves a session that agreed on rings onto its own consumer thread. A
/// thread that cannot be started refuses the session (counted; the socket
/// closes, the client sees its ring setup fail) and nothing else changes.
fn start_ring(
    shared: &Arc<Shared>,
    client: ClientId,
    owner: Owner,
    stream: tokio::net::UnixStream,
    session: Session,
    slot: Slot,
    ring: Reservation,
) {
    let sock = match stream.into_std().and_then(|s| {
        s.set_nonblocking(false)?;
        Ok(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            count(&shared.metrics.connections_dropped);
            tracing::debug!(error = %e, "socket hand-over failed");
            return;
        }
    };
    // Eviction (to make room for a newcomer) hangs the session up; the
    // consumer's parker sees it at once.
    if let Ok(hook) = sock.try_clone() {
        slot.on_evict(move || {
            let _ = hook.shutdown(std::net::Shutdown::Both);
        });
    }
    let s = shared.clone();
    let span = tracing::Span::current();
    let spawned = std::thread::Builder::new()
        .name(format!("verify-ring-{client}"))
        .spawn(move || {
            let _g = span.enter();
            ring_session(&s, client, owner, &sock, &session, &slot, ring);
        });
    if let Err(e) = spawned {
        count(&shared.metrics.ring_refused_spawn);
        count(&shared.metrics.connections_dropped);
        tracing::warn!(error = %e, "ring session thread not started; session refused");
    }
}

/// Counts a ring session open for as long as it lives.
struct OpenRing<'a>(&'a AtomicU64);

impl<'a> OpenRing<'a> {
    fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        OpenRing(gauge)
    }
}

impl Drop for OpenRing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A ring session on its thread: set up both rings, then consume requests
/// until the client ends the session. `_ring` holds the rings' share of
/// the ring budget until the mappings are gone.
fn ring_session(
    shared: &Arc<Shared>,
    client: ClientId,
    owner: Owner,
    sock: &UnixStream,
    session: &Session,
    slot: &Slot,
    _ring: Reservation,
) {
    let _open = OpenRing::new(&shared.metrics.ring_sessions_open);
    let (producer, consumer) = match transport::server_rings(sock, session) {
        Ok(rings) => rings,
        Err(e) => {
            count(&shared.metrics.ring_setup_failures);
            count(&shared.metrics.connections_dropped);
            tracing::info!(error = %e, "ring setup failed; closing connection");
            return;
        }
    };
    count(&shared.metrics.ring_sessions);
    let hang_up = match sock.try_clone() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "socket clone failed");
            return;
        }
    };
    let tx = Tx::Ring {
        producer: Box::new(producer),
        sock: hang_up,
        deadline: shared.cfg.write_timeout,
    };
    let mut rx = Rx::Ring(Box::new(consumer));
    let ctx = ConnCtx {
        client,
        owner,
        writer: Arc::new(Writer::Ring(Mutex::new(tx))),
        slot,
    };
    shared.sched().handle_connect(client);
    let mut fbb = FlatBufferBuilder::new();
    loop {
        match rx.recv() {
            Ok(Some(f)) => handle_frame(shared, &ctx, &mut fbb, f, None),
            Ok(None) => break,
            Err(e) => {
                // A dead client or a corrupt ring: end the session; what it
                // had admitted is dropped below like on a closed socket.
                count(&shared.metrics.ring_errors);
                tracing::info!(error = %e, transport = Transport::Ring.name(), "session ended");
                break;
            }
        }
    }
    disconnect(shared, client);
    tracing::debug!("ring client disconnected");
}

fn send_error(
    shared: &Shared,
    w: &Writer,
    fbb: &mut FlatBufferBuilder<'static>,
    id: u64,
    code: ErrorCode,
    msg: &str,
) {
    count(&shared.metrics.request_errors);
    w.send(shared, &proto::encode_error(fbb, id, code, false, msg));
}

/// One request from either transport: decode, resolve keys, admit, answer.
/// `reservation` is the frame's share of the read budget, kept by its job.
fn handle_frame(
    shared: &Arc<Shared>,
    conn: &ConnCtx<'_>,
    fbb: &mut FlatBufferBuilder<'static>,
    frame: Vec<u8>,
    reservation: Option<Reservation>,
) {
    let received = now();
    let writer = &conn.writer;
    let client = conn.client;
    let req = match proto::decode_request(&frame) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "bad request");
            return send_error(
                shared,
                writer,
                fbb,
                e.request_id(),
                e.code(),
                &e.to_string(),
            );
        }
    };
    if shared.draining.load(Ordering::SeqCst) {
        return send_error(
            shared,
            writer,
            fbb,
            req.request_id(),
            ErrorCode::ShuttingDown,
            "draining",
        );
    }
    match req {
        Request::RegisterKey { request_id, key } => {
            let bytes = &frame[key];
            let found = shared
                .keys()
                .lookup_bytes_for(bytes, conn.owner)
                .map(|(id, _)| id);
            let id = match found {
                Some(id) => id,
                // Decoded outside the lock: other clients keep resolving.
                None => match shared.backend.decode_key(bytes) {
                    Ok(k) => shared.keys().insert_for(bytes, k, conn.owner),
                    Err(e) => {
                        return send_error(
                            shared,
                            writer,
                            fbb,
                            request_id,
                            ErrorCode::Malformed,
                            &e.to_string(),
                        );
                    }
                },
            };
            writer.send(shared, &proto::encode_key_registered(fbb, request_id, id));
        }
        Request::VerifyBatch {
            request_id,
            context,
            items,
        } => {
            if !context.is_empty() && !shared.backend.supports_context() {
                let msg = format!(
                    "backend {} does not support ML-DSA contexts",
                    shared.backend.kind()
                );
                return send_error(
                    shared,
                    writer,
                    fbb,
                    request_id,
                    ErrorCode::Unsupported,
                    &msg,
                );
            }
            let n = items.len();
            let bytes = frame.len();
            // Byte budget first: cheap, and it keeps hostile frame sizes from
            // piling up while items fit the item limit.
            let prev = shared.bytes_in_flight.fetch_add(bytes, Ordering::Relaxed);
            if prev + bytes > shared.cfg.max_bytes_in_flight {
                shared.bytes_in_flight.fetch_sub(bytes, Ordering::Relaxed);
                return send_busy(shared, writer, fbb, request_id, n);
            }
            let work = resolve(shared, &frame, items, conn.owner);
            let job = Arc::new(Job {
                request_id,
                owner: conn.owner,
                verdicts: (0..n)
                    .map(|_| AtomicU8::new(verdict_code(Verdict::Malformed)))
                    .collect(),
                remaining: AtomicUsize::new(n),
                frame,
                ctx: context,
                items: work,
                received,
                writer: writer.clone(),
                _reservation: reservation,
                _busy: conn.slot.busy(),
            });
            if n == 0 {
                shared.open_jobs.fetch_add(1, Ordering::SeqCst);
                job.respond(shared, now());
                return;
            }
            let mut s = shared.sched();
            match s.handle_submit(received, client, job, n) {
                Admission::Accepted => {
                    shared.open_jobs.fetch_add(1, Ordering::SeqCst);
                    let inline = shared.dispatch_keep(&mut s, received, INLINE_MAX, Some(client));
                    drop(s);
                    if let Some(batch) = inline {
                        shared.clone().run_batch(batch);
                    }
                }
                Admission::Busy => {
                    drop(s);
                    shared.bytes_in_flight.fetch_sub(bytes, Ordering::Relaxed);
                    send_busy(shared, writer, fbb, request_id, n);
                }
            }
        }
    }
}

fn send_busy(
    shared: &Shared,
    w: &Writer,
    fbb: &mut FlatBufferBuilder<'static>,
    request_id: u64,
    items: usize,
) {
    let st = shared.sched().stats();
    // Hint: time until enough admitted items finish for this request to fit.
    let excess = (st.in_flight + items).saturating_sub(st.limit).max(1) as u64;
    let retry_us =
        (excess * st.item_ns.max(1) / shared.cfg.threads.max(1) as u64 / 1000).clamp(50, 1_000_000);
    w.send(
        shared,
        &proto::encode_busy(
            fbb,
            request_id,
            retry_us as u32,
            st.queued.min(u32::MAX as usize) as u32,
        ),
    );
}

/// Resolves each item's key under one short hold of the key-cache lock,
/// charging keys to `owner`. Inline keys the cache does not hold are left
/// for the worker to decode ([`WorkKey::Decode`]).
fn resolve(shared: &Shared, frame: &[u8], items: Vec<proto::RawItem>, owner: Owner) -> Vec<Work> {
    let mut out = Vec::with_capacity(items.len());
    let mut keys = shared.keys();
    // Consecutive items usually share a key: look each id up (and touch
    // the LRU) once per run rather than once per item.
    let mut last: Option<(u64, Option<DecodedKey>)> = None;
    for it in items {
        let key = match it.key {
            KeyRef::Missing => WorkKey::Known(Verdict::Malformed),
            KeyRef::Id(id) => {
                let found = match &last {
                    Some((l, k)) if *l == id => k.clone(),
                    _ => {
                        let k = keys.get_for(id, owner);
                        last = Some((id, k.clone()));
                        k
                    }
                };
                found.map_or(WorkKey::Known(Verdict::UnknownKey), WorkKey::Ready)
            }
            KeyRef::Inline(r) => match keys.lookup_bytes_for(&frame[r.clone()], owner) {
                Some((_, k)) => WorkKey::Ready(k),
                None => WorkKey::Decode(r),
            },
        };
        out.push(Work {
            key,
            msg: it.msg,
            sig: it.sig,
        });
    }
    out
}
