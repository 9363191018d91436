//! Implementations behind the public handles: dialing, message send,
//! opening streams, queue pops, shutdown. Each takes the state lock briefly
//! and wakes the driver when it changed a connection.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use bytes::{BufMut, Bytes};
use quinn_proto::Dir;

use super::handle::{ConnShared, Connection};
use super::state::{CloseReason, OutStream, Phase, Shared, State, close};
use super::stream::{RecvStream, SendStream};
use super::{Error, IncomingBi, MessageReceived};
use crate::identity::{PeerId, Role};
use crate::kind::{self, Kind};

/// Messages up to this size are copied behind their length prefix (one
/// allocation); larger ones are queued zero-copy after a separate prefix.
const COALESCE_MAX: usize = 4096;

pub(crate) fn live(ep: &Arc<Shared>, peer: &PeerId) -> Option<Connection> {
    let st = ep.lock();
    let l = st.manager.live(peer)?;
    let c = st.conns.get(&l.conn.key)?;
    (c.phase == Phase::Live).then(|| Connection {
        ep: ep.clone(),
        rec: c.shared.clone(),
    })
}

pub(crate) async fn connect(
    ep: &Arc<Shared>,
    addr: SocketAddr,
    peer: PeerId,
) -> Result<Connection, Error> {
    let timeout = ep.lock().config.dial_timeout;
    let r = match tokio::time::timeout(timeout, dial(ep, addr, peer)).await {
        Ok(r) => r,
        Err(_) => Err(Error::DialTimeout),
    };
    if let Ok(c) = &r {
        // A dialled address that proved the peer is a known address: sends
        // to the peer repair through it.
        let remote = c.rec.remote;
        ep.lock().repair.confirm(peer, remote);
    }
    r
}

/// Closes the connection a dial started when the dial ends (times out, or
/// is dropped because another address of the peer won) before it became
/// live, so abandoned handshakes do not linger until quinn's idle timeout.
struct Abandon<'a> {
    ep: &'a Shared,
    rec: Option<Arc<ConnShared>>,
    /// Close only before the QUIC handshake completed: set when another
    /// connection to the peer went live, because once ours is proving the
    /// peer may already hold it live and the manager's tie-break owns it.
    only_handshaking: bool,
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        let Some(rec) = self.rec.take() else {
            return;
        };
        let mut st = self.ep.lock();
        let pending = st.conns.get(&rec.ch).is_some_and(|c| {
            c.uid == rec.uid
                && match c.phase {
                    Phase::Handshaking => true,
                    Phase::Proving { .. } => !self.only_handshaking,
                    _ => false,
                }
        });
        if pending {
            super::conn::close_conn(
                &mut st,
                rec.ch,
                rec.uid,
                close::DIAL_ABANDONED,
                CloseReason::Local,
            );
            st.counters.dials_abandoned += 1;
            st.wake_driver();
        }
    }
}

async fn dial(ep: &Arc<Shared>, addr: SocketAddr, peer: PeerId) -> Result<Connection, Error> {
    let ours: (Arc<ConnShared>, bool) = {
        let mut st = ep.lock();
        if !st.open_for_work() {
            return Err(Error::EndpointClosed);
        }
        drop(st);
        if let Some(c) = live(ep, &peer) {
            return Ok(c);
        }
        st = ep.lock();
        // Join a dial already in flight to the same peer at the same
        // address (single flight); a dial to another address of the peer
        // is a dial of its own (happy eyeballs over the peer's addresses).
        let existing = st
            .conns
            .values()
            .find(|c| {
                c.expected == Some(peer) && c.shared.remote == addr && c.phase != Phase::Closing
            })
            .map(|c| c.shared.clone());
        match existing {
            Some(s) => (s, false),
            None => {
                let now = crate::io::now();
                let cfg = st.client_config.clone();
                let (ch, inner) = st
                    .endpoint
                    .connect(now, cfg, addr, crate::tls::SERVER_NAME)
                    .map_err(Error::Connect)?;
                let uid = st.next_uid;
                st.next_uid += 1;
                let rec = super::conn::new_shared(ch, uid, addr);
                st.conns.insert(
                    ch,
                    super::state::Conn::new(inner, uid, Role::Client, Some(peer), rec.clone()),
                );
                st.wake_driver();
                (rec, true)
            }
        }
    };
    let (ours, created) = ours;
    let mut abandon = Abandon {
        ep,
        rec: created.then(|| ours.clone()),
        only_handshaking: false,
    };
    let r = poll_fn(|cx| {
        let mut st = ep.lock();
        if let Some(l) = st.manager.live(&peer)
            && let Some(c) = st.conns.get(&l.conn.key)
            && c.phase == Phase::Live
        {
            return Poll::Ready(Ok(Connection {
                ep: ep.clone(),
                rec: c.shared.clone(),
            }));
        }
        let closed = ours.info().closed.clone();
        match closed {
            // Lost a tie-break: the winning connection is on its way.
            Some(CloseReason::Duplicate) | None => {}
            Some(CloseReason::IdentityMismatch { actual }) => {
                return Poll::Ready(Err(Error::PeerMismatch {
                    expected: peer,
                    actual,
                }));
            }
            Some(r) => return Poll::Ready(Err(Error::Closed(r))),
        }
        if !st.open_for_work() {
            return Poll::Ready(Err(Error::EndpointClosed));
        }
        push_waker(st.peer_waiters.entry(peer).or_default(), cx.waker());
        Poll::Pending
    })
    .await;
    if let Ok(c) = &r {
        if c.rec.uid == ours.uid || c.rec.remote == addr {
            // Ours went live, or the peer's own dial at this address won
            // the race: the tie-break settles that pair, nothing to abandon.
            abandon.rec = None;
        } else {
            // Another address of the peer answered first (happy eyeballs):
            // ours is redundant, closed if its handshake is still running.
            abandon.only_handshaking = true;
        }
    }
    r
}

pub(crate) async fn send_on(
    ep: &Arc<Shared>,
    rec: &ConnShared,
    kind: Kind,
    data: Bytes,
) -> Result<(), Error> {
    let mut data = Some(data);
    poll_fn(|cx| {
        let mut st = ep.lock();
        let limit = st.config.send_queue_bytes;
        let c = match live_conn(&mut st, rec) {
            Ok(c) => c,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if c.out_kinds
            .get(&kind)
            .is_some_and(|o| o.finish_when_flushed)
        {
            // A drain is rotating this kind's stream: the next stream opens
            // once the peer acknowledged it, so the kind stays in order.
            push_waker(&mut c.open_waiters, cx.waker());
            return Poll::Pending;
        }
        if !c.out_kinds.contains_key(&kind) {
            let Some(id) = c.inner.streams().open(Dir::Uni) else {
                push_waker(&mut c.open_waiters, cx.waker());
                return Poll::Pending;
            };
            let _ = c.inner.send_stream(id).set_priority(kind.priority());
            let mut out = OutStream::new(id);
            out.pending
                .push_back(Bytes::copy_from_slice(&kind::header(kind)));
            out.pending_bytes = kind::HEADER_LEN;
            c.out_kinds.insert(kind, out);
        }
        let Some(out) = c.out_kinds.get_mut(&kind) else {
            return Poll::Ready(Err(Error::StreamClosed));
        };
        if out.pending_bytes >= limit {
            push_waker(&mut out.waiters, cx.waker());
            return Poll::Pending;
        }
        let Some(payload) = data.take() else {
            return Poll::Ready(Err(Error::StreamClosed));
        };
        let Ok(len) = u32::try_from(payload.len()) else {
            return Poll::Ready(Err(Error::TooLong));
        };
        out.pending_bytes += kind::LEN_PREFIX + payload.len();
        if payload.len() <= COALESCE_MAX {
            // Small messages are appended to one buffer that the driver hands
            // to quinn-proto as a single chunk per pass: fewer, larger chunks
            // keep quinn-proto's send buffer cheap to walk.
            let need = kind::LEN_PREFIX + payload.len();
            if out.acc.capacity() - out.acc.len() < need {
                // Fresh 64 KiB blocks: `split` hands filled parts to quinn-proto
                // and keeps the rest, so appends never reallocate-and-copy.
                out.acc.reserve(need.max(64 * 1024));
            }
            out.acc.put_u32(len);
            out.acc.put_slice(&payload);
        } else {
            if !out.acc.is_empty() {
                let acc = out.acc.split().freeze();
                out.pending.push_back(acc);
            }
            out.pending
                .push_back(Bytes::copy_from_slice(&len.to_be_bytes()));
            out.pending.push_back(payload);
        }
        c.out_dirty = true;
        st.wake_driver();
        Poll::Ready(Ok(()))
    })
    .await
}

pub(crate) async fn open_bi_on(
    ep: &Arc<Shared>,
    rec: &ConnShared,
    kind: Kind,
) -> Result<(SendStream, RecvStream), Error> {
    let id = poll_fn(|cx| {
        let mut st = ep.lock();
        let c = match live_conn(&mut st, rec) {
            Ok(c) => c,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let Some(id) = c.inner.streams().open(Dir::Bi) else {
            push_waker(&mut c.open_waiters, cx.waker());
            return Poll::Pending;
        };
        let _ = c.inner.send_stream(id).set_priority(kind.priority());
        *c.app_bi_by_kind.entry(kind).or_default() += 1;
        Poll::Ready(Ok(id))
    })
    .await?;
    let mut send = SendStream::new(ep.clone(), rec.ch, rec.uid, id);
    send.write_all(&kind::header(kind)).await?;
    Ok((send, RecvStream::new(ep.clone(), rec.ch, rec.uid, id)))
}

pub(crate) async fn open_raw_uni(ep: &Arc<Shared>, rec: &ConnShared) -> Result<SendStream, Error> {
    let id = poll_fn(|cx| {
        let mut st = ep.lock();
        let c = match live_conn(&mut st, rec) {
            Ok(c) => c,
            Err(e) => return Poll::Ready(Err(e)),
        };
        match c.inner.streams().open(Dir::Uni) {
            Some(id) => Poll::Ready(Ok(id)),
            None => {
                push_waker(&mut c.open_waiters, cx.waker());
                Poll::Pending
            }
        }
    })
    .await?;
    Ok(SendStream::new(ep.clone(), rec.ch, rec.uid, id))
}

/// Wakers a list holds before [`push_waker`] flushes it.
const MAX_PARKED: usize = 128;

/// Adds a waker unless an equivalent one is already parked (a future polled
/// repeatedly must not grow the list).
///
/// A future dropped while parked leaves its waker behind: lists such as a
/// peer's waiters are only drained by a connection event, so every
/// finished receive-ACKed send from its own task used to add one for good
/// (and made this scan quadratic). At [`MAX_PARKED`] the list is woken
/// and emptied instead: every parker re-checks its condition when polled
/// and parks again, so a spurious wake costs one poll and the list stays
/// bounded.
pub(crate) fn push_waker(list: &mut Vec<std::task::Waker>, w: &std::task::Waker) {
    if list.iter().any(|x| x.will_wake(w)) {
        return;
    }
    if list.len() >= MAX_PARKED {
        for x in list.drain(..) {
            x.wake();
        }
    }
    list.push(w.clone());
}

/// The live connection behind `rec`, or why there is none. Refuses new
/// work once the endpoint is closing.
pub(crate) fn live_conn<'a>(
    st: &'a mut State,
    rec: &ConnShared,
) -> Result<&'a mut super::state::Conn, Error> {
    if !st.open_for_work() {
        return Err(Error::EndpointClosed);
    }
    match st.conns.get_mut(&rec.ch).filter(|c| c.uid == rec.uid) {
        Some(c) if c.phase == Phase::Live => {
            c.dirty = true;
            Ok(c)
        }
        Some(c) => Err(Error::Closed(
            c.close_reason.clone().unwrap_or(CloseReason::Local),
        )),
        None => Err(Error::Closed(
            rec.info().closed.clone().unwrap_or(CloseReason::Local),
        )),
    }
}

pub(crate) fn pop_msgs(
    st: &mut State,
    kind: Kind,
    out: &mut std::collections::VecDeque<MessageReceived>,
    max: usize,
) {
    let Some(q) = st.kinds.get_mut(&kind) else {
        return;
    };
    let n = q.msgs.len().min(max);
    out.extend(q.msgs.drain(..n));
    // Hysteresis: paused streams resume at half capacity, not at the first
    // free slot, so a full queue does not flap between pause and resume on
    // every message.
    if n > 0 && !q.blocked.is_empty() && q.depth() <= q.cfg.capacity / 2 {
        st.unblocked.push(kind);
        st.wake_driver();
    }
}

pub(crate) fn pop_bi(st: &mut State, kind: Kind) -> Option<IncomingBi> {
    st.kinds.get_mut(&kind)?.bis.pop_front()
}

pub(crate) fn shutdown(ep: &Shared) {
    let mut st = ep.lock();
    if st.shutdown {
        return;
    }
    st.shutdown = true;
    let all: Vec<_> = st.conns.iter().map(|(ch, c)| (*ch, c.uid)).collect();
    for (ch, uid) in all {
        super::conn::close_conn(&mut st, ch, uid, close::SHUTDOWN, CloseReason::Local);
    }
    st.wake_all_receivers();
    st.wake_driver();
}

/// Resolves once the driver task has stopped.
pub(crate) async fn driver_stopped(ep: &Shared) {
    poll_fn(|cx| {
        let mut st = ep.lock();
        if st.driver_done {
            return Poll::Ready(());
        }
        push_waker(&mut st.stop_waiters, cx.waker());
        Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};

    use super::{MAX_PARKED, push_waker};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Wakers of futures that never come back (distinct tasks that
    /// finished) do not grow a list past its bound; the flushed ones are
    /// woken, not lost, and a re-parked waker is not duplicated.
    #[test]
    fn parked_wakers_stay_bounded() {
        let woken = Arc::new(Count(AtomicUsize::new(0)));
        let mut list = Vec::new();
        for _ in 0..10 * MAX_PARKED {
            // A distinct Arc per waker: `will_wake` tells them apart.
            let w = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
            push_waker(&mut list, &w);
            assert!(list.len() <= MAX_PARKED);
        }
        let w = Waker::from(woken.clone());
        push_waker(&mut list, &w);
        push_waker(&mut list, &w);
        assert_eq!(list.iter().filter(|x| x.will_wake(&w)).count(), 1);
        for _ in 0..MAX_PARKED {
            let other = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
            push_waker(&mut list, &other);
        }
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "flushed, so woken");
    }
}
