//! One thread per verify connection: hello, then read requests, resolve
//! keys, offer batches to the scheduler, answer `Busy` or typed errors.
//!
//! A bad request is answered with an error frame naming it and the
//! connection continues; only a broken hello, an oversize frame (the stream
//! cannot be resynchronised) or a stalled reader end the connection.

use std::ops::Range;
use std::os::fd::AsFd as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flatbuffers::FlatBufferBuilder;
use wire::WireError;
use wire::frame::{FrameReader, FrameWriter};
use wire::generated::error::ErrorCode;
use wire::generated::hello::Role;
use wire::hello::Session;

use super::{Shared, lock, now};
use crate::Verdict;
use crate::backend::{DecodedKey, verify_item};
use crate::proto::{self, KeyRef, Request};
use crate::sched::{Admission, ClientId};
use crate::session::{Established, HelloParams};
use crate::transport::{self, Rx, Transport, TransportError, Tx};

/// Batches this small run on the connection thread that admitted them (see
/// `Shared::dispatch_keep`): one item in flight then costs no thread hand-off.
const INLINE_MAX: usize = 4;

/// The write half of a connection (frames or the response ring), shared by
/// the workers that answer on it.
#[derive(Debug)]
pub(crate) struct Writer {
    tx: Mutex<Tx>,
}

impl Writer {
    fn send(&self, shared: &Shared, frame: &[u8]) {
        let mut w = lock(&self.tx);
        if let Err(e) = w.send(frame) {
            count(&shared.metrics.write_failures);
            tracing::debug!(error = %e, transport = w.transport().name(),
                "response write failed; closing connection");
            // Hanging up also ends a ring session: the reader's park sees it.
            w.hang_up();
        }
    }
}

#[derive(Debug)]
struct Work {
    /// The key to verify with, or the verdict already known without one.
    key: Result<DecodedKey, Verdict>,
    msg: Range<usize>,
    sig: Range<usize>,
}

/// One admitted `VerifyBatch`: the frame, resolved keys and verdict slots.
#[derive(Debug)]
pub struct Job {
    request_id: u64,
    frame: Vec<u8>,
    ctx: Range<usize>,
    items: Vec<Work>,
    verdicts: Vec<AtomicU8>,
    remaining: AtomicUsize,
    received: Instant,
    writer: Arc<Writer>,
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
    pub(crate) fn verify_range(&self, start: usize, len: usize) {
        let ctx = &self.frame[self.ctx.clone()];
        for i in start..start + len {
            let w = &self.items[i];
            let v = match &w.key {
                Ok(k) => verify_item(
                    k.as_ref(),
                    &self.frame[w.msg.clone()],
                    ctx,
                    &self.frame[w.sig.clone()],
                ),
                Err(v) => *v,
            };
            self.verdicts[i].store(verdict_code(v), Ordering::Relaxed);
        }
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

pub(crate) fn accept_loop(shared: &Arc<Shared>, listener: &UnixListener) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        if shared.draining.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Poll with a timeout so a drain is noticed without a self-connect.
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(50u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        let (stream, _) = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        if !peer_allowed(&stream) {
            count(&shared.metrics.connections_dropped);
            continue;
        }
        count(&shared.metrics.connections);
        let client = shared.next_client.fetch_add(1, Ordering::Relaxed);
        let s = shared.clone();
        std::thread::Builder::new()
            .name(format!("verify-conn-{client}"))
            .spawn(move || {
                let span = tracing::info_span!("conn", client);
                let _g = span.enter();
                serve_conn(&s, client, stream);
            })?;
    }
}

/// Same user as the daemon, or root (SO_PEERCRED).
fn peer_allowed(stream: &UnixStream) -> bool {
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => c.uid() == 0 || c.uid() == nix::unistd::geteuid().as_raw(),
        Err(_) => false,
    }
}

fn serve_conn(shared: &Arc<Shared>, client: ClientId, stream: UnixStream) {
    let params = HelloParams {
        protocol: proto::PROTOCOL,
        role: Role::Verifyd,
        instance: shared.instance,
        max_frame: shared.cfg.max_frame,
        ring_capacity: shared.cfg.ring_capacity,
    };
    let Established {
        reader,
        writer,
        session,
    } = match Established::handshake(stream, &params) {
        Ok(e) => e,
        Err(e) => {
            count(&shared.metrics.connections_dropped);
            tracing::debug!(error = %e, "hello failed");
            return;
        }
    };
    let Some((tx, mut rx)) = open_transport(shared, reader, writer, &session) else {
        return;
    };
    let transport = tx.transport();
    tracing::debug!(
        peer_pid = session.peer_pid,
        transport = transport.name(),
        "client connected"
    );
    let writer = Arc::new(Writer { tx: Mutex::new(tx) });
    shared.sched().handle_connect(client);
    let mut fbb = FlatBufferBuilder::new();
    loop {
        let frame = match rx.recv() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(TransportError::Wire(e)) => {
                // An oversize or zero length prefix leaves the stream
                // unsynchronised: answer with a fatal typed error and close.
                let code = match &e {
                    WireError::Oversize { .. } => Some(ErrorCode::FrameTooLarge),
                    WireError::ZeroLength => Some(ErrorCode::Malformed),
                    _ => None,
                };
                if let Some(code) = code {
                    count(&shared.metrics.connections_dropped);
                    writer.send(
                        shared,
                        &proto::encode_error(&mut fbb, 0, code, true, &e.to_string()),
                    );
                }
                break;
            }
            Err(e) => {
                // A dead client or a corrupt ring: end the session; what it
                // had admitted is dropped below like on a closed socket.
                if transport == Transport::Ring {
                    count(&shared.metrics.ring_errors);
                }
                tracing::info!(error = %e, "session ended");
                break;
            }
        };
        handle_frame(shared, client, &writer, &mut fbb, frame);
    }
    let dropped = shared.sched().handle_disconnect(client);
    for (job, n) in dropped {
        if job.finish_items(n) {
            job.release(shared);
        }
    }
    tracing::debug!("client disconnected");
}

/// Sets the write timeout and picks the session's transport: the ring pair
/// when the hello agreed on one, else frames on the socket. `None` closes
/// the connection.
fn open_transport(
    shared: &Shared,
    reader: FrameReader<UnixStream>,
    mut writer: FrameWriter<UnixStream>,
    session: &Session,
) -> Option<(Tx, Rx)> {
    let _ = writer
        .get_mut()
        .set_write_timeout(Some(shared.cfg.write_timeout));
    if !transport::ring_agreed(session) {
        count(&shared.metrics.frame_sessions);
        return Some((Tx::Frames(writer), Rx::Frames(reader)));
    }
    let (producer, consumer) = match transport::server_rings(writer.get_mut(), session) {
        Ok(rings) => rings,
        Err(e) => {
            count(&shared.metrics.ring_setup_failures);
            count(&shared.metrics.connections_dropped);
            tracing::info!(error = %e, "ring setup failed; closing connection");
            return None;
        }
    };
    count(&shared.metrics.ring_sessions);
    let sock = match writer.get_mut().try_clone() {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "socket clone failed");
            return None;
        }
    };
    let tx = Tx::Ring {
        producer: Box::new(producer),
        sock,
        deadline: shared.cfg.write_timeout,
    };
    Some((tx, Rx::Ring(Box::new(consumer))))
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

fn handle_frame(
    shared: &Arc<Shared>,
    client: ClientId,
    writer: &Arc<Writer>,
    fbb: &mut FlatBufferBuilder<'static>,
    frame: Vec<u8>,
) {
    let received = now();
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
            let found = shared.keys().lookup_bytes(bytes).map(|(id, _)| id);
            let id = match found {
                Some(id) => id,
                None => match shared.backend.decode_key(bytes) {
                    Ok(k) => shared.keys().insert(bytes, k),
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
            let work = resolve(shared, &frame, items);
            let job = Arc::new(Job {
                request_id,
                verdicts: (0..n)
                    .map(|_| AtomicU8::new(verdict_code(Verdict::Malformed)))
                    .collect(),
                remaining: AtomicUsize::new(n),
                frame,
                ctx: context,
                items: work,
                received,
                writer: writer.clone(),
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
                    let inline = shared.dispatch_keep(&mut s, received, INLINE_MAX);
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

/// Resolves each item's key once per request, outside the workers.
fn resolve(shared: &Shared, frame: &[u8], items: Vec<proto::RawItem>) -> Vec<Work> {
    let mut out = Vec::with_capacity(items.len());
    let mut keys = shared.keys();
    // Consecutive items usually share a key: look each id up (and touch
    // the LRU) once per run rather than once per item.
    let mut last: Option<(u64, Option<DecodedKey>)> = None;
    for it in items {
        let key = match it.key {
            KeyRef::Missing => Err(Verdict::Malformed),
            KeyRef::Id(id) => {
                let found = match &last {
                    Some((l, k)) if *l == id => k.clone(),
                    _ => {
                        let k = keys.get(id);
                        last = Some((id, k.clone()));
                        k
                    }
                };
                found.ok_or(Verdict::UnknownKey)
            }
            KeyRef::Inline(r) => {
                let bytes = &frame[r];
                match keys.lookup_bytes(bytes) {
                    Some((_, k)) => Ok(k),
                    None => match shared.backend.decode_key(bytes) {
                        Ok(k) => {
                            keys.insert(bytes, k.clone());
                            Ok(k)
                        }
                        Err(_) => Err(Verdict::Malformed),
                    },
                }
            }
        };
        out.push(Work {
            key,
            msg: it.msg,
            sig: it.sig,
        });
    }
    out
}
