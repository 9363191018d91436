//! The stream router: the one accept loop of each connection dispatches
//! streams by their `[kind, version]` header.
//!
//! Unidirectional streams carry length-prefixed messages into the kind's
//! bounded queue (drop-and-count or back-pressure); bidirectional streams
//! go to the kind's handler once their header is read. Unknown kinds, bad
//! versions, truncated headers or messages and oversize lengths reset the
//! stream with a code and a counter; the connection and its other streams
//! carry on. The bytes are decoded by the sans-IO
//! [`StreamDecoder`](crate::proto::stream::StreamDecoder); this module adds
//! the quinn-proto reads, the queues and back-pressure. Runs inside the
//! driver with the state locked, never blocks, and never allocates by a
//! length the peer declared.

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, Dir, ReadError, StreamId, VarInt};
use tracing::debug;

use super::state::State;
use super::{IncomingBi, MessageReceived};
use crate::kind::{Kind, Overflow, StreamReject};
use crate::proto::stream::Frame;

pub(super) fn reject(st: &mut State, ch: ConnectionHandle, id: StreamId, r: StreamReject) {
    st.count_reject(r);
    if let Some(c) = st.conns.get_mut(&ch) {
        let code = VarInt::from_u32(r.code());
        let _ = c.inner.recv_stream(id).stop(code);
        if id.dir() == Dir::Bi {
            let _ = c.inner.send_stream(id).reset(code);
        }
        c.in_streams.remove(&id);
    }
    debug!(stream = %id, reason = %r, "stream rejected");
}

enum Step {
    Continue,
    Stop,
    Reject(StreamReject),
    Remove,
    /// A peer's probe: the endpoint echoes it.
    Echo,
}

/// Reads one router stream as far as possible: header, then (uni) messages
/// into the kind's queue, or (bi) hands the stream to the kind's handler.
pub(crate) fn process_in(st: &mut State, ch: ConnectionHandle, id: StreamId) {
    // Reading may release flow-control credit to transmit.
    if let Some(c) = st.conns.get_mut(&ch) {
        c.dirty = true;
        if c.in_streams.get(&id).is_some_and(|s| s.echo.is_some()) {
            return super::probe::echo(st, ch, id);
        }
    }
    loop {
        match step(st, ch, id) {
            Step::Continue => {}
            Step::Stop => return,
            Step::Reject(r) => return reject(st, ch, id, r),
            Step::Echo => return super::probe::echo(st, ch, id),
            Step::Remove => {
                if let Some(c) = st.conns.get_mut(&ch) {
                    c.in_streams.remove(&id);
                }
                return;
            }
        }
    }
}

fn step(st: &mut State, ch: ConnectionHandle, id: StreamId) -> Step {
    let State {
        conns, kinds, ack, ..
    } = st;
    let Some(c) = conns.get_mut(&ch) else {
        return Step::Stop;
    };
    let Some(peer) = c.peer() else {
        return Step::Stop;
    };
    let Some(s) = c.in_streams.get_mut(&id) else {
        return Step::Stop;
    };
    if s.blocked {
        return Step::Stop;
    }
    // Back-pressure: do not start a new message while the queue is full.
    if let Some(k) = s.dec.kind()
        && s.dec.at_message_boundary()
        && let Some(q) = kinds.get_mut(&k)
        && q.full()
        && q.cfg.overflow == Overflow::BackPressure
    {
        s.blocked = true;
        q.blocked.push((ch, id));
        return Step::Stop;
    }
    let mut chunk = if s.leftover.is_empty() {
        // In the message phase read a whole chunk and keep the rest for the
        // next messages (one quinn-proto read per received frame, not per
        // message); header bytes are read exactly, since the rest of a
        // bidirectional stream belongs to its handler.
        let max = match s.dec.header_needed() {
            0 => usize::MAX,
            n => n,
        };
        let mut rs = c.inner.recv_stream(id);
        let Ok(mut chunks) = rs.read(true) else {
            return Step::Remove;
        };
        let res = chunks.next(max);
        let _ = chunks.finalize();
        match res {
            Ok(Some(chunk)) => chunk.bytes,
            Ok(None) => {
                return match s.dec.finish() {
                    Ok(()) => Step::Remove,
                    Err(r) => Step::Reject(r),
                };
            }
            Err(ReadError::Blocked) => return Step::Stop,
            Err(ReadError::Reset(_)) => return Step::Remove,
        }
    } else {
        std::mem::take(&mut s.leftover)
    };
    // Bidirectional ACK streams are receive-ACK requests, and PROBE
    // streams probes, served by the endpoint itself (`ack_recv`, `probe`)
    // whatever the application registered.
    let bi = s.bi;
    let frame = s.dec.push(&mut chunk, |k| {
        if bi && k == Kind::ACK {
            return Some(ack.incoming.cfg.max_message);
        }
        if bi && k == Kind::PROBE {
            return Some(super::probe::PROBE_LEN as u32);
        }
        kinds.get(&k).map(|q| q.cfg.max_message)
    });
    s.leftover = chunk;
    let frame = match frame {
        Ok(Some(f)) => f,
        Ok(None) => return Step::Continue,
        Err(r) => return Step::Reject(r),
    };
    match frame {
        Frame::Header(k) if s.bi && k == Kind::PROBE => {
            s.echo = Some(Vec::with_capacity(super::probe::PROBE_LEN + 1));
            Step::Echo
        }
        Frame::Header(k) if s.bi => {
            let q = if k == Kind::ACK {
                Some(&mut ack.incoming)
            } else {
                kinds.get_mut(&k)
            };
            let Some(q) = q else {
                return Step::Reject(StreamReject::UnknownKind);
            };
            if q.full() {
                return Step::Reject(StreamReject::QueueFull);
            }
            q.bis.push_back(IncomingBi {
                peer,
                kind: k,
                ch,
                uid: c.uid,
                id,
            });
            q.note_push();
            *c.app_bi_by_kind.entry(k).or_default() += 1;
            c.in_streams.remove(&id);
            Step::Stop
        }
        Frame::Header(_) => Step::Continue,
        Frame::Message(msg) => {
            if let Some(k) = s.dec.kind() {
                deliver(kinds, peer, k, msg);
            }
            Step::Continue
        }
    }
}

fn deliver(
    kinds: &mut super::state::HashMap<Kind, super::state::KindQueue>,
    peer: crate::identity::PeerId,
    kind: Kind,
    data: Bytes,
) {
    let Some(q) = kinds.get_mut(&kind) else {
        return;
    };
    if q.full() && q.cfg.overflow == Overflow::DropAndCount {
        q.drops += 1;
        return;
    }
    q.delivered += 1;
    q.msgs.push_back(MessageReceived { peer, kind, data });
    q.note_push();
}

/// Resumes streams paused by back-pressure on kinds that freed space.
pub(crate) fn resume_unblocked(st: &mut State) {
    let kinds = std::mem::take(&mut st.unblocked);
    for k in kinds {
        let Some(q) = st.kinds.get_mut(&k) else {
            continue;
        };
        let blocked = std::mem::take(&mut q.blocked);
        for (ch, id) in blocked {
            if let Some(s) = st
                .conns
                .get_mut(&ch)
                .and_then(|c| c.in_streams.get_mut(&id))
            {
                s.blocked = false;
            }
            process_in(st, ch, id);
        }
    }
}
