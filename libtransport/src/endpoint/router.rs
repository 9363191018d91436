//! The stream router: the one accept loop of each connection dispatches
//! streams by their `[kind, version]` header.
//!
//! Unidirectional streams carry length-prefixed messages into the kind's
//! bounded queue (drop-and-count or back-pressure); bidirectional streams
//! go to the kind's handler once their header is read. Unknown kinds, bad
//! versions, truncated headers or messages and oversize lengths reset the
//! stream with a code and a counter; the connection and its other streams
//! carry on. Runs inside the driver with the state locked, never blocks, and
//! never allocates by a length the peer declared.

use bytes::Bytes;
use quinn_proto::{ConnectionHandle, Dir, ReadError, StreamId, VarInt};
use tracing::debug;

use super::state::State;
use super::{IncomingBi, MessageReceived};
use crate::kind::{self, Kind, Overflow, StreamReject};

fn reject(st: &mut State, ch: ConnectionHandle, id: StreamId, r: StreamReject) {
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
}

/// Reads one router stream as far as possible: header, then (uni) messages
/// into the kind's queue, or (bi) hands the stream to the kind's handler.
pub(crate) fn process_in(st: &mut State, ch: ConnectionHandle, id: StreamId) {
    // Reading may release flow-control credit to transmit.
    if let Some(c) = st.conns.get_mut(&ch) {
        c.dirty = true;
    }
    loop {
        match step(st, ch, id) {
            Step::Continue => {}
            Step::Stop => return,
            Step::Reject(r) => return reject(st, ch, id, r),
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
    let State { conns, kinds, .. } = st;
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
    if let Some(k) = s.kind
        && s.prefix_len == 0
        && let Some(q) = kinds.get_mut(&k)
        && q.full()
        && q.cfg.overflow == Overflow::BackPressure
    {
        s.blocked = true;
        q.blocked.push((ch, id));
        return Step::Stop;
    }
    let max = if s.kind.is_none() {
        kind::HEADER_LEN - s.header_len
    } else if s.prefix_len < kind::LEN_PREFIX {
        kind::LEN_PREFIX - s.prefix_len
    } else {
        s.want
    };
    let chunk = if s.leftover.is_empty() {
        // In the message phase read a whole chunk and keep the rest for the
        // next messages (one quinn-proto read per received frame, not per
        // message); header bytes are read exactly, since the rest of a
        // bidirectional stream belongs to its handler.
        let unbounded = s.kind.is_some();
        let mut rs = c.inner.recv_stream(id);
        let Ok(mut chunks) = rs.read(true) else {
            return Step::Remove;
        };
        let res = chunks.next(if unbounded { usize::MAX } else { max });
        let _ = chunks.finalize();
        match res {
            Ok(Some(chunk)) => {
                let mut b = chunk.bytes;
                if b.len() > max {
                    s.leftover = b.split_off(max);
                }
                b
            }
            Ok(None) => {
                let mid = s.kind.is_none() || s.prefix_len > 0;
                return if mid {
                    Step::Reject(StreamReject::Truncated)
                } else {
                    Step::Remove
                };
            }
            Err(ReadError::Blocked) => return Step::Stop,
            Err(ReadError::Reset(_)) => return Step::Remove,
        }
    } else {
        let take = max.min(s.leftover.len());
        s.leftover.split_to(take)
    };
    if s.kind.is_none() {
        s.header[s.header_len..s.header_len + chunk.len()].copy_from_slice(&chunk);
        s.header_len += chunk.len();
        if s.header_len < kind::HEADER_LEN {
            return Step::Continue;
        }
        let k = match kind::check_header(s.header, |k| kinds.contains_key(&k)) {
            Ok(k) => k,
            Err(r) => return Step::Reject(r),
        };
        let Some(q) = kinds.get_mut(&k) else {
            return Step::Reject(StreamReject::UnknownKind);
        };
        s.kind = Some(k);
        s.max_message = q.cfg.max_message;
        if s.bi {
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
            return Step::Stop;
        }
        return Step::Continue;
    }
    let k = s.kind.unwrap_or(Kind(0));
    if s.prefix_len < kind::LEN_PREFIX {
        s.prefix[s.prefix_len..s.prefix_len + chunk.len()].copy_from_slice(&chunk);
        s.prefix_len += chunk.len();
        if s.prefix_len < kind::LEN_PREFIX {
            return Step::Continue;
        }
        match kind::check_len(s.prefix, s.max_message) {
            Ok(len) => s.want = len,
            Err(r) => return Step::Reject(r),
        }
        if s.want > 0 {
            return Step::Continue;
        }
        s.prefix_len = 0;
        deliver(kinds, peer, k, Bytes::new());
        return Step::Continue;
    }
    s.want -= chunk.len();
    let msg = if s.partial.is_empty() && s.want == 0 {
        chunk
    } else {
        if s.partial.is_empty() {
            // Reserve room for several small messages so `split` below leaves
            // capacity behind (one allocation per many spanning messages).
            // Never by the declared length alone: a peer could announce the
            // maximum and send one byte; larger messages grow as data arrives.
            s.partial
                .reserve((chunk.len() + s.want.min(16 * 1024)).max(16 * 1024));
        }
        s.partial.extend_from_slice(&chunk);
        if s.want > 0 {
            return Step::Continue;
        }
        s.partial.split().freeze()
    };
    s.prefix_len = 0;
    deliver(kinds, peer, k, msg);
    Step::Continue
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
