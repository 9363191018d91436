//! Draining: [`super::Endpoint::wait_idle`] and the graceful
//! [`super::Endpoint::close`].
//!
//! A message stream never ends on its own, so "the peer has every message"
//! cannot be read off it. A drain therefore *rotates* the message streams:
//! each live connection's streams get a FIN after their queued messages, and
//! the drain waits until quinn-proto reports every such stream `Finished` —
//! all its bytes and the FIN acknowledged by the peer. The peer's router
//! reads acknowledged data into the kind's queue before that
//! acknowledgement leaves (it runs in the same driver pass as the receive),
//! unless that queue is full and back-pressuring. Sends of a kind whose
//! stream is rotating wait until it is acknowledged and then open the next
//! stream, so messages of one kind on one connection stay in order.
//! Application streams finished (or dropped) before the drain are waited for
//! too. Every wait is bounded by `Config::drain_timeout`.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use quinn_proto::{ConnectionHandle, StreamId};

use super::Error;
use super::api::push_waker;
use super::state::{CloseReason, Phase, Shared, State, close};

/// One finished stream a drain waits for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    ch: ConnectionHandle,
    uid: u64,
    id: StreamId,
}

/// Puts a FIN behind the queued messages of every live connection's message
/// streams and returns every stream now waiting for its acknowledgement.
fn barrier(st: &mut State) -> Vec<Target> {
    let mut targets = Vec::new();
    for (&ch, c) in &mut st.conns {
        if c.phase != Phase::Live {
            continue;
        }
        for (&kind, out) in &mut c.out_kinds {
            if !out.finish_when_flushed {
                out.finish_when_flushed = true;
                c.finishing.insert(out.id, Some(kind));
            }
        }
        // The driver flushes (and so finishes) them on its next pass.
        c.out_dirty = true;
        c.dirty = true;
        targets.extend(c.finishing.keys().map(|&id| Target { ch, uid: c.uid, id }));
    }
    st.wake_driver();
    targets
}

/// Waits until every target is acknowledged, its connection ended, or
/// `Config::drain_timeout` passed. `Err` counts the streams not acknowledged.
async fn settle(ep: &Arc<Shared>, mut targets: Vec<Target>) -> Result<(), Error> {
    let bound = ep.lock().config.drain_timeout;
    let mut lost = 0usize;
    let wait = poll_fn(|cx| {
        let mut st = ep.lock();
        targets.retain(|t| {
            match st.conns.get(&t.ch).filter(|c| c.uid == t.uid) {
                Some(c) if c.finishing.contains_key(&t.id) => {
                    if c.phase == Phase::Closing {
                        // Closed before the peer acknowledged it.
                        lost += 1;
                        return false;
                    }
                    true
                }
                // Acknowledged (or stopped by the peer) on a connection that
                // is still known: done.
                Some(_) => false,
                // The connection ended and was removed before we looked
                // again; its streams were not seen acknowledged.
                None => {
                    lost += 1;
                    false
                }
            }
        });
        if targets.is_empty() {
            return Poll::Ready(());
        }
        push_waker(&mut st.idle_waiters, cx.waker());
        Poll::Pending
    });
    let timed_out = tokio::time::timeout(bound, wait).await.is_err();
    let unacknowledged = lost + if timed_out { targets.len() } else { 0 };
    if unacknowledged == 0 {
        return Ok(());
    }
    ep.lock().counters.drain_unacknowledged += unacknowledged as u64;
    Err(Error::Undelivered {
        streams: unacknowledged,
        timed_out,
    })
}

/// `Endpoint::wait_idle`.
pub(crate) async fn wait_idle(ep: &Arc<Shared>) -> Result<(), Error> {
    let targets = barrier(&mut ep.lock());
    settle(ep, targets).await
}

/// `Endpoint::close`: refuse new work, drain, close every connection, wait
/// for the driver to stop.
pub(crate) async fn close(ep: &Arc<Shared>) -> Result<(), Error> {
    let targets = {
        let mut st = ep.lock();
        if st.shutdown {
            None
        } else {
            st.closing = true;
            // Connections not yet live carry no application data.
            let early: Vec<_> = st
                .conns
                .iter()
                .filter(|(_, c)| c.phase != Phase::Live)
                .map(|(&ch, c)| (ch, c.uid))
                .collect();
            for (ch, uid) in early {
                super::conn::close_conn(&mut st, ch, uid, close::SHUTDOWN, CloseReason::Local);
            }
            Some(barrier(&mut st))
        }
    };
    let drained = match targets {
        Some(t) => settle(ep, t).await,
        None => Ok(()),
    };
    super::api::shutdown(ep);
    super::api::driver_stopped(ep).await;
    drained
}
