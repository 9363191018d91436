//! Per-connection processing inside the driver: application events from
//! `quinn-proto`, the identity proof, the connection policy, and accepting
//! streams (the one accept loop of each connection; dispatch by kind is in
//! `router`).
//!
//! Everything here runs with the endpoint state locked, on the driver task
//! (or briefly on an API call), and never blocks.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use quinn_proto::{ConnectionError, ConnectionHandle, Dir, Event, StreamEvent, StreamId, VarInt};
use tracing::{debug, warn};

use super::Event as Lifecycle;
use super::handle::{ConnShared, PathStats};
use super::state::{CloseReason, Conn, InStream, OutStream, Phase, State, close};
use crate::identity::{self, EXPORTER_LABEL, EXPORTER_LEN, Role};
use crate::kind::Kind;
use crate::manager::{Candidate, Decision};
use crate::proto::proof::ProofError;

/// Runs all pending application events of connection `ch`.
pub(crate) fn process_events(st: &mut State, ch: ConnectionHandle, now: Instant) {
    loop {
        let ev = match st.conns.get_mut(&ch) {
            Some(c) => c.inner.poll(),
            None => return,
        };
        let Some(ev) = ev else { break };
        match ev {
            Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {}
            Event::Connected => on_connected(st, ch, now),
            Event::ConnectionLost { reason } => on_lost(st, ch, &reason),
            Event::Stream(StreamEvent::Opened { .. }) => accept_streams(st, ch, now),
            Event::Stream(StreamEvent::Readable { id }) => on_readable(st, ch, id, now),
            Event::Stream(StreamEvent::Writable { id }) => on_writable(st, ch, id),
            // Every byte and the FIN are acknowledged (Finished), or the
            // peer asked us to stop (Stopped): either way the stream is done
            // sending, a drain no longer waits for it, and its kind may open
            // a new message stream.
            Event::Stream(StreamEvent::Finished { id } | StreamEvent::Stopped { id, .. }) => {
                send_done(st, ch, id);
            }
            Event::Stream(StreamEvent::Available { .. }) => {
                if let Some(c) = st.conns.get_mut(&ch) {
                    for w in c.open_waiters.drain(..) {
                        w.wake();
                    }
                }
            }
        }
    }
}

/// A send stream of `ch` ended (acknowledged or stopped): wake its writer,
/// forget its message-stream entry and its place in a drain.
fn send_done(st: &mut State, ch: ConnectionHandle, id: StreamId) {
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    if let Some(w) = c.writers.remove(&id) {
        w.wake();
    }
    let ended: Vec<Kind> = c
        .out_kinds
        .iter()
        .filter(|(_, o)| o.id == id)
        .map(|(k, _)| *k)
        .collect();
    for k in ended {
        if let Some(mut o) = c.out_kinds.remove(&k) {
            for w in o.waiters.drain(..) {
                w.wake();
            }
        }
    }
    if c.finishing.remove(&id).is_some() {
        // Senders parked behind a rotating message stream may open the next.
        for w in c.open_waiters.drain(..) {
            w.wake();
        }
        st.wake_idle();
    }
}

fn exporter(c: &Conn, role: Role) -> Option<[u8; EXPORTER_LEN]> {
    exporter_of(&c.inner, role)
}

fn exporter_of(inner: &quinn_proto::Connection, role: Role) -> Option<[u8; EXPORTER_LEN]> {
    let mut ex = [0u8; EXPORTER_LEN];
    inner
        .crypto_session()
        .export_keying_material(&mut ex, EXPORTER_LABEL, role.context())
        .ok()?;
    Some(ex)
}

fn peer_role(r: Role) -> Role {
    match r {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

fn on_connected(st: &mut State, ch: ConnectionHandle, now: Instant) {
    let identity = st.identity.clone();
    let epoch = st.epoch;
    #[cfg(feature = "test-util")]
    let withhold = st.withhold_proof;
    #[cfg(not(feature = "test-util"))]
    let withhold = false;
    let timeout = st.config.identity_timeout;
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    let proof = match exporter(c, c.role) {
        Some(ex) => c.proof.start(&identity, &ex, epoch, timeout, now),
        None => Err(ProofError::CannotProve(identity::IdentityError::Exporter)),
    };
    c.phase = Phase::Proving {
        deadline: c.proof.poll_timeout().unwrap_or(now + timeout),
    };
    let proof = match proof {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "cannot build identity proof");
            let uid = c.uid;
            close_identity_invalid(st, ch, uid);
            return;
        }
    };
    if withhold {
        accept_streams(st, ch, now);
        try_verify(st, ch, now);
        return;
    }
    let Some(id) = c.inner.streams().open(Dir::Uni) else {
        let uid = c.uid;
        close_identity_invalid(st, ch, uid);
        return;
    };
    let _ = c
        .inner
        .send_stream(id)
        .set_priority(Kind::CONTROL.priority() + 1);
    let mut out = OutStream::new(id);
    out.pending_bytes = proof.len();
    out.pending.push_back(Bytes::from(proof));
    out.finish_when_flushed = true;
    let _ = flush_out(&mut c.inner, &mut out);
    c.proof_out = (!out.pending.is_empty()).then_some(out);
    // The peer's proof may have arrived with the handshake's last flight.
    accept_streams(st, ch, now);
    try_verify(st, ch, now);
}

/// Writes queued chunks; finishes the stream once flushed if asked to.
/// `Err` means the stream is gone (stopped or closed).
pub(crate) fn flush_out(conn: &mut quinn_proto::Connection, out: &mut OutStream) -> Result<(), ()> {
    if !out.acc.is_empty() {
        let acc = out.acc.split().freeze();
        out.pending.push_back(acc);
    }
    while !out.pending.is_empty() {
        let slice = out.pending.make_contiguous();
        match conn.send_stream(out.id).write_chunks(slice) {
            Ok(w) => {
                out.pending.drain(..w.chunks);
                out.pending_bytes = out.pending_bytes.saturating_sub(w.bytes);
                if w.bytes == 0 {
                    break;
                }
            }
            Err(quinn_proto::WriteError::Blocked) => break,
            Err(_) => return Err(()),
        }
    }
    if out.pending.is_empty() && out.finish_when_flushed && !out.finished {
        out.finished = true;
        let _ = conn.send_stream(out.id).finish();
    }
    Ok(())
}

/// Hands queued messages of every kind to quinn-proto (driver, before
/// transmitting), and wakes senders waiting for queue space.
pub(crate) fn flush_dirty(st: &mut State) {
    let limit = st.config.send_queue_bytes;
    for c in st.conns.values_mut() {
        if !std::mem::take(&mut c.out_dirty) {
            continue;
        }
        c.dirty = true;
        let mut gone = Vec::new();
        for (k, out) in &mut c.out_kinds {
            if flush_out(&mut c.inner, out).is_err() {
                gone.push(*k);
            } else if out.pending_bytes < limit {
                for w in out.waiters.drain(..) {
                    w.wake();
                }
            }
        }
        for k in gone {
            if let Some(mut o) = c.out_kinds.remove(&k) {
                for w in o.waiters.drain(..) {
                    w.wake();
                }
            }
        }
    }
}

fn on_writable(st: &mut State, ch: ConnectionHandle, id: StreamId) {
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    if let Some(w) = c.writers.remove(&id) {
        w.wake();
    }
    if let Some(mut out) = c.proof_out.take()
        && out.id == id
    {
        let _ = flush_out(&mut c.inner, &mut out);
        c.proof_out = (!out.pending.is_empty()).then_some(out);
    } else if let Some(o) = c.proof_out.take() {
        c.proof_out = Some(o);
    }
    let limit = st.config.send_queue_bytes;
    let mut gone = None;
    for (k, out) in &mut c.out_kinds {
        if out.id == id {
            if flush_out(&mut c.inner, out).is_err() {
                gone = Some(*k);
            }
            if out.pending_bytes < limit {
                for w in out.waiters.drain(..) {
                    w.wake();
                }
            }
        }
    }
    if let Some(k) = gone
        && let Some(mut o) = c.out_kinds.remove(&k)
    {
        for w in o.waiters.drain(..) {
            w.wake();
        }
    }
}

/// The accept loop: before the proof only the peer's first unidirectional
/// stream (its proof) is accepted; application streams wait in quinn-proto
/// (bounded by the stream limits) until the peer is proven and live.
pub(crate) fn accept_streams(st: &mut State, ch: ConnectionHandle, now: Instant) {
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    match c.phase {
        Phase::Live => {}
        Phase::Closing => return,
        Phase::Handshaking | Phase::Proving { .. } => {
            if c.proof_in.is_none()
                && let Some(id) = c.inner.streams().accept(Dir::Uni)
            {
                c.proof_in = Some(id);
                read_proof(st, ch, id, now);
            }
            return;
        }
    }
    let mut new = Vec::new();
    for dir in [Dir::Uni, Dir::Bi] {
        while let Some(id) = c.inner.streams().accept(dir) {
            c.in_streams.insert(id, InStream::new(dir == Dir::Bi));
            new.push(id);
        }
    }
    for id in new {
        super::router::process_in(st, ch, id);
    }
}

fn on_readable(st: &mut State, ch: ConnectionHandle, id: StreamId, now: Instant) {
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    if c.proof_in == Some(id) {
        read_proof(st, ch, id, now);
    } else if c.in_streams.contains_key(&id) {
        super::router::process_in(st, ch, id);
    } else if let Some(w) = c.readers.remove(&id) {
        w.wake();
    }
}

/// Feeds the peer's proof stream to the exchange, then tries to verify.
fn read_proof(st: &mut State, ch: ConnectionHandle, id: StreamId, now: Instant) {
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    c.proof.read_stream(&mut c.inner, id);
    try_verify(st, ch, now);
}

/// Acts on the proof exchange's outcome, if it has one: closes the
/// connection on a failure, else hands the proven peer to the manager.
fn try_verify(st: &mut State, ch: ConnectionHandle, now: Instant) {
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    if !matches!(c.phase, Phase::Proving { .. }) {
        return;
    }
    let role = peer_role(c.role);
    let outcome = {
        let Conn { proof, inner, .. } = &mut *c;
        proof.poll_verified(|| exporter_of(inner, role))
    };
    let Some(result) = outcome else {
        return;
    };
    let uid = c.uid;
    let v = match result {
        Ok(v) => v,
        Err(ProofError::Mismatch { actual }) => {
            st.counters.identity_mismatch += 1;
            close_conn(
                st,
                ch,
                uid,
                close::IDENTITY_MISMATCH,
                CloseReason::IdentityMismatch { actual },
            );
            return;
        }
        Err(ProofError::TimedOut) => {
            st.counters.identity_timeout += 1;
            close_conn(
                st,
                ch,
                uid,
                close::IDENTITY_TIMEOUT,
                CloseReason::IdentityTimeout,
            );
            return;
        }
        Err(e) => {
            debug!(error = %e, "identity proof rejected");
            st.counters.identity_invalid += 1;
            close_identity_invalid(st, ch, uid);
            return;
        }
    };
    let local = st.identity.peer_id();
    let initiator = if c.role == Role::Client {
        local
    } else {
        v.peer
    };
    let peer = v.peer;
    {
        let mut i = c.shared.info();
        i.peer = Some(peer);
        i.initiator = Some(initiator);
    }
    let decision = st.manager.on_proven(
        peer,
        Candidate {
            key: ch,
            initiator,
            epoch: v.epoch,
        },
    );
    match decision {
        Decision::Reject => {
            st.counters.duplicates_closed += 1;
            close_conn(st, ch, uid, close::DUPLICATE, CloseReason::Duplicate);
            st.wake_peer(&peer);
        }
        Decision::Accept { generation } => go_live(st, ch, generation, now),
        Decision::Replace { old, generation } => {
            st.counters.replaced += 1;
            let old_uid = st.conns.get(&old.conn.key).map_or(0, |c| c.uid);
            close_conn(
                st,
                old.conn.key,
                old_uid,
                close::REPLACED,
                CloseReason::Replaced,
            );
            st.push_event(Lifecycle::Replaced {
                peer,
                old: old.generation,
                new: generation,
            });
            go_live(st, ch, generation, now);
        }
    }
}

/// TLS exporter label of [`super::Connection::session_id`]; distinct from
/// the identity proof's, so the value says nothing about what was signed.
const SESSION_ID_LABEL: &[u8] = b"EXPORTER-tern-session-id-v1";

fn go_live(st: &mut State, ch: ConnectionHandle, generation: u64, now: Instant) {
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    c.phase = Phase::Live;
    let mut session_id = [0u8; 16];
    // Both ends export the same bytes from the same TLS session; a failure
    // (not possible once the handshake completed) leaves zeros.
    let _ = c
        .inner
        .crypto_session()
        .export_keying_material(&mut session_id, SESSION_ID_LABEL, b"");
    {
        let mut info = c.shared.info();
        info.generation = generation;
        info.session_id = session_id;
    }
    let peer = c.peer().unwrap_or(crate::identity::PeerId([0; 32]));
    let addr = c.inner.remote_address();
    debug!(peer = %peer.short(), generation, %addr, "connection live");
    st.push_event(Lifecycle::Connected {
        peer,
        generation,
        addr,
    });
    st.wake_peer(&peer);
    accept_streams(st, ch, now);
}

/// Closes a connection whose identity proof could not be made or checked.
fn close_identity_invalid(st: &mut State, ch: ConnectionHandle, uid: u64) {
    close_conn(
        st,
        ch,
        uid,
        close::IDENTITY_INVALID,
        CloseReason::IdentityInvalid,
    );
}

/// Closes connection `ch` (if it is still the connection `uid`), records the
/// reason, updates the policy and emits `Closed` for a live connection.
pub(crate) fn close_conn(
    st: &mut State,
    ch: ConnectionHandle,
    uid: u64,
    code: u32,
    reason: CloseReason,
) {
    let now = crate::io::now();
    let Some(c) = st.conns.get_mut(&ch).filter(|c| c.uid == uid) else {
        return;
    };
    if c.phase != Phase::Closing {
        c.inner.close(now, VarInt::from_u32(code), Bytes::new());
    }
    c.dirty = true;
    end(st, ch, reason);
}

fn on_lost(st: &mut State, ch: ConnectionHandle, reason: &ConnectionError) {
    let r = match reason {
        ConnectionError::ApplicationClosed(a) => match u32::try_from(a.error_code.into_inner()) {
            Ok(close::DUPLICATE) => CloseReason::Duplicate,
            Ok(close::REPLACED) => CloseReason::Replaced,
            Ok(close::IDENTITY_INVALID) => CloseReason::IdentityInvalid,
            Ok(close::IDENTITY_TIMEOUT) => CloseReason::IdentityTimeout,
            _ => CloseReason::Remote(a.error_code.into_inner()),
        },
        ConnectionError::TimedOut => CloseReason::TimedOut,
        ConnectionError::LocallyClosed => CloseReason::Local,
        other => CloseReason::Transport(other.to_string()),
    };
    end(st, ch, r);
}

/// Common end-of-life bookkeeping; idempotent (first reason wins).
fn end(st: &mut State, ch: ConnectionHandle, reason: CloseReason) {
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    let was_closing = c.phase == Phase::Closing;
    c.phase = Phase::Closing;
    let reason = c.close_reason.get_or_insert(reason).clone();
    c.wake_all();
    // A drain waiting on this connection's streams can settle now.
    st.wake_idle();
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    let stats = PathStats::of(&c.inner);
    c.shared.set_closed(reason.clone(), stats);
    let peer = c.peer();
    let expected = c.expected;
    let generation = c.shared.info().generation;
    let _ = was_closing;
    if let Some(peer) = peer {
        if st.manager.on_closed(&peer, ch) {
            st.push_event(Lifecycle::Closed {
                peer,
                generation,
                reason,
            });
        }
        st.wake_peer(&peer);
    }
    if let Some(e) = expected {
        st.wake_peer(&e);
    }
}

/// Called when the connection is drained and removed.
pub(crate) fn finalize(st: &mut State, ch: ConnectionHandle) {
    end(st, ch, CloseReason::Local);
    if let Some(c) = st.conns.remove(&ch) {
        c.shared
            .set_closed(CloseReason::Local, PathStats::of(&c.inner));
        if st.closed_recent.len() >= 64 {
            st.closed_recent.pop_front();
        }
        st.closed_recent.push_back(c.shared.clone());
    }
}

/// Proof deadline check; called by the driver when a timer fires.
pub(crate) fn check_deadline(st: &mut State, ch: ConnectionHandle, now: Instant) {
    let Some(c) = st.conns.get_mut(&ch) else {
        return;
    };
    if matches!(c.phase, Phase::Proving { .. }) {
        c.proof.handle_timeout(now);
        try_verify(st, ch, now);
    }
}

/// A fresh connection record shared with handles.
pub(crate) fn new_shared(
    ch: ConnectionHandle,
    uid: u64,
    remote: std::net::SocketAddr,
) -> Arc<ConnShared> {
    Arc::new(ConnShared {
        uid,
        ch,
        remote,
        info: Default::default(),
    })
}
